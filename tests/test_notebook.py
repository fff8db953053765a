"""The quickstart notebook runs top to bottom in a real kernel (on the tiny model, for time),
where the engine stays warm between its two runs."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.engine

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_runs(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setenv("SPOTBATCH_NOTEBOOK_MODEL", "tiny-random")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "\n".join(o.get("text", "") for o in outputs)
    assert "finished 48 rows 0 errors" in text
    # each run's progress is one line redrawn in place, kept at its final state
    progress = [o["data"]["text/plain"] for o in outputs if o.get("data", {}).get("text/plain", "").startswith(
        "spotbatch progress:")]
    assert [p.split(" rows")[0] for p in progress] == ["spotbatch progress: 48/48"] * 2, progress
    # Ray's notices about widgets spotbatch does not use are not shown (cluster/widget_notices.py)
    assert "IProgress not found" not in text and "Missing packages" not in text
    # the second batch was served by the first one's engine, still loaded (a warm engine)
    assert "model load $0.000000 (a warm engine)" in text and "1 engine actor(s) released" in text
    assert "cost: $" in text and "vs a provider's batch API" in text
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the cost chart was not shown"
