"""`spotbatch estimate --calibrate N` on a real engine: a sample of the rows runs first, apart
from the output, and the estimate then uses this model's measured speed and output length,
which the run that follows confirms."""

import json

import pytest

from jobs.cli import main
from tests.conftest import write_shards
from tests.helpers import spotbatch, write_spec

pytestmark = pytest.mark.engine

ROWS = 60  # the calibration sample (24 rows: 8 slices of 3) still spans every i % 7


def test_a_calibrated_estimate_measures_a_sample_apart_from_the_output_and_the_run_confirms_it(
        tmp_path, ray_cluster, smollm2, capsys):
    write_shards(tmp_path / "in", [{"id": i, "text": f"Count from {i} to {i + 3 * (i % 7)}."} for i in range(ROWS)],
                 shards=2)
    spec = write_spec(tmp_path / "spec.yaml", {
        "input": {"paths": str(tmp_path / "in"), "prompt_column": "text"},
        "model": {"name": "smollm2-135m"},
        "sampling": {"max_tokens": 48, "temperature": 0.0},
        "output": {"path": str(tmp_path / "out")},
    })
    assert main(["estimate", str(spec), "--json"]) == 0
    guessed = json.loads(capsys.readouterr().out)
    assert guessed["calibration"] is None and guessed["work"]["output_ratio_source"].startswith("assumption")

    # In a process of its own, as users run it: its driver lowers its own priority, as a run's does.
    proc = spotbatch("estimate", str(spec), "--json", "--calibrate", "24", "--address", ray_cluster)
    assert proc.returncode == 0, proc.stderr[-3000:]
    est = json.loads(proc.stdout)  # the sample run's lines went to stderr
    assert not (tmp_path / "out").exists()  # the sample ran apart from the output
    assert est["calibration"]["rows"] == 24 and est["calibration"]["output_tokens"] > 0
    assert est["work"]["output_ratio_source"].startswith("measured")
    here = next(o for o in est["options"] if (o["instance_type"], o["market"]) == ("cpu-2vcpu", "on_demand"))
    assert here["measured"] and here["speed_source"].startswith("measured")
    # The engine's time is a simulation with the step model the sample's engine measured, and
    # the sample's run overhead is in it (pipelines/estimate/options.py).
    assert here["seconds_from"].startswith("step model measured on cpu-2vcpu by run "), here["seconds_from"]
    assert "of a run's overhead" in here["seconds_from"]
    # Its $ prices what the ledger prices, an engine actor from its start: not Ray's start and the
    # actor's placement before it, which are in the time (pipelines/estimate/overhead.py).
    assert "$ prices" in here["seconds_from"] and here["priced_seconds"] < here["seconds"], here
    (tmp_path / "estimate.json").write_text(json.dumps(est))

    proc = spotbatch("run", str(spec), "--address", ray_cluster)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main(["report", str(tmp_path / "out"), "--json", "--estimate", str(tmp_path / "estimate.json")]) == 0
    check = json.loads(capsys.readouterr().out)["estimate"]
    assert check["input_tokens"]["error"] == 0  # counted exactly, as the engine counts them
    # The sample's output length holds for the whole input (greedy answers, prompts alike).
    assert abs(check["output_tokens"]["error"]) <= 0.25, check
