"""The names the examples in spotbatch/'s docstrings use (pytest runs them as doctests, and
keeps engines for the tests marked `engine`): `spotbatch`; `spec`, a small spec over three
sample prompts on the tiny test model; `output`, its output folder, holding the run planned
from it, stopped by `compute.deadline: "0s"` before any engine started."""

from __future__ import annotations

import contextlib
import io

import pytest


@pytest.fixture(scope="session")
def spotbatch_example(tmp_path_factory) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    import spotbatch
    from cluster.models.builtin import prepare_model

    work = tmp_path_factory.mktemp("spotbatch-example")
    (work / "input").mkdir()
    pq.write_table(pa.table({"id": [1, 2, 3], "text": ["Say hi.", "Name a colour.", "Count to three."]}),
                   work / "input" / "part-0.parquet")
    spec = spotbatch.Spec.model_validate({
        "input": {"paths": str(work / "input"), "prompt_column": "text"},
        "model": {"name": str(prepare_model("tiny-random")), "max_model_len": 256},
        "output": {"path": str(work / "output")}})
    with contextlib.redirect_stdout(io.StringIO()):  # the run's own lines are not the examples'
        spotbatch.run(spec.model_copy(update={"compute": spec.compute.model_copy(update={"deadline": "0s"})}))
    return {"spotbatch": spotbatch, "spec": spec, "output": spec.output.path}


@pytest.fixture(autouse=True)
def _spotbatch_examples(request, doctest_namespace):
    if request.node.nodeid.startswith("spotbatch/"):
        doctest_namespace.update(request.getfixturevalue("spotbatch_example"))
