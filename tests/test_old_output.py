"""An output written by an earlier spotbatch resumes with today's code.

tests/fixtures/old_output/ holds two outputs of one spec, written by the commit its fixture.json
names (tests/fixtures/make_old_output.py says how): `partial`, a run cancelled, compacted, then
killed, with units committed and pending; `finished`, the same spec run to its end. A copy of
each is resumed here with the same spec through the CLI, and read with `status`, `report` and
`compact`. Only the CLI and the outputs' Parquet files are used, never internal modules: the
test must hold while the code moves.

The outputs move (the copies sit in a temp folder), the input does not: a resume checks each
input file's absolute path and mtime, so the fixture's shards are put back at the path and
mtime the outputs were planned on (git keeps no mtimes). Nothing of the outputs is edited.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from tests.fixtures.make_old_output import cache_twins, engine_answers, prompts
from tests.helpers import files_under, spotbatch

pytestmark = pytest.mark.engine

FIXTURE = Path(__file__).parent / "fixtures" / "old_output"
LAYOUT = json.loads((FIXTURE / "fixture.json").read_text())
THEN = LAYOUT["as_read_then"]  # what `status --json` and `report --json` showed with the code that wrote them
INPUT = Path(LAYOUT["input_dir"])
SPEC = FIXTURE / "spec.yaml"


def place_input() -> None:
    """The fixture's shards at the path and mtime its outputs were planned on. A shard that is
    there already, the same, is left alone (another session may be reading it); one that is
    not is replaced in one step, staged under a name input listings skip."""
    INPUT.mkdir(parents=True, exist_ok=True)
    mtime = LAYOUT["input_mtime"]
    for shard in sorted((FIXTURE / "input").glob("*.parquet")):
        there = INPUT / shard.name
        data = shard.read_bytes()
        if there.exists() and there.stat().st_mtime == mtime and there.read_bytes() == data:
            continue
        staged = INPUT / f".{shard.name}.{uuid.uuid4().hex}"
        staged.write_bytes(data)
        os.utime(staged, (mtime, mtime))
        os.replace(staged, there)


def shown(command: str, output: Path) -> dict:
    done = spotbatch(command, str(output), "--json")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(done.stdout)


def same_status(now: dict, then: dict) -> None:
    """What status counted then it counts the same now (where the output is aside); a figure
    added since (reasoning_tokens) reads zero on an output written before it."""
    assert {k: v for k, v in now.items() if k in then and k != "output"} == \
        {k: v for k, v in then.items() if k != "output"}
    added = {k: v for k, v in now.items() if k not in then}
    assert not any(added.values()), added


def same_cost(now: dict, then: dict) -> None:
    for key in ("total_usd", "input_tokens", "output_tokens", "actors"):
        assert now[key] == pytest.approx(then[key]), key
    assert now["breakdown_usd"] == pytest.approx(then["breakdown_usd"])


def attempts_after_resume() -> int:
    """The old runs' attempts, as the code that wrote them counted them, and one for each unit
    they left pending."""
    then = THEN["partial"]["status"]
    return then["attempts"] + then["units_pending"]


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, ray_cluster, tiny_model):
    """A copy of the partial output, read before, then resumed with the fixture's spec (the
    one engine start of this module); yields (copy, the run, its seconds, status before)."""
    place_input()
    folder = tmp_path_factory.mktemp("old")
    copy = folder / "partial"
    shutil.copytree(FIXTURE / "partial", copy)
    before = shown("status", copy)
    with pytest.MonkeyPatch.context() as env:  # what the engines measured stays out of this machine's home
        env.setenv("SPOTBATCH_FACTS", str(folder / "engine-facts.json"))
        env.setenv("SPOTBATCH_LOCAL_RAY", str(folder / "local-ray.json"))
        started = time.monotonic()
        run = spotbatch("run", str(SPEC), "--output", str(copy), "--address", ray_cluster)
        seconds = time.monotonic() - started
    print(f"resumed the old output in {seconds:.1f} s:\n{run.stdout[-1500:]}")
    yield copy, run, seconds, before


def test_the_old_output_reads_as_it_did_when_it_was_written(resumed):
    _, _, _, before = resumed
    same_status(before, THEN["partial"]["status"])
    assert 0 < before["units_committed"] < before["units_total"], "the fixture holds no partial run"


def test_the_old_output_resumes_to_every_row_exactly_once(resumed):
    copy, run, _, _ = resumed
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    ids = ds.dataset(copy).to_table(columns=["id"]).column("id").to_pylist()
    rows = THEN["partial"]["status"]["rows_total"]
    assert sorted(ids) == list(range(rows))
    status = shown("status", copy)
    assert status["finished"] and status["units_committed"] == status["units_total"]
    assert status["rows_failed_by_class"] == {"context_too_long": 1}  # the one prompt longer than the model's context


def test_units_the_old_output_committed_are_not_generated_again(resumed):
    copy, run, _, before = resumed
    assert run.returncode == 0, run.stderr[-3000:]
    old_parts = {n: b for n, b in files_under(FIXTURE / "partial").items() if n.startswith("part-")}
    new_parts = {n: b for n, b in files_under(copy).items() if n.startswith("part-")}
    assert len(old_parts) == before["units_committed"]
    assert {n: new_parts.get(n) for n in old_parts} == old_parts  # byte for byte
    # every pending unit needs an attempt: one more each, and none at a committed unit
    assert shown("status", copy)["attempts"] == attempts_after_resume()


def test_the_old_run_cache_answers_the_resumed_run(resumed):
    """Rows whose prompt the old run answered with the engine are answered from its cache."""
    copy, run, _, _ = resumed
    assert run.returncode == 0, run.stderr[-3000:]
    twins = cache_twins(FIXTURE / "partial", FIXTURE / "input")
    assert twins, "the fixture holds no row its cache answers"
    answered = engine_answers(FIXTURE / "partial", FIXTURE / "input")
    asked = prompts(FIXTURE / "input")
    rows = {r["id"]: r for r in ds.dataset(copy).to_table(columns=["id", "output", "served_from"]).to_pylist()}
    assert {i: (rows[i]["served_from"], rows[i]["output"]) for i in twins} == {
        i: ("cache", answered[asked[i]]) for i in twins}


def test_status_and_report_count_the_old_runs(resumed):
    copy, run, _, _ = resumed
    assert run.returncode == 0, run.stderr[-3000:]
    then = THEN["partial"]["report"]
    cost = shown("report", copy)
    assert cost["status"]["attempts"] == attempts_after_resume()
    assert cost["actors"] == then["actors"] + 1  # the old runs' engines, and this one's
    assert cost["total_usd"] > then["total_usd"]
    assert cost["output_tokens"] > then["output_tokens"]
    text = spotbatch("report", str(copy))
    assert text.returncode == 0 and f"over {then['actors'] + 1} engine actor(s)" in text.stdout, text.stdout


def test_compact_folds_the_resumed_old_output_and_changes_nothing_it_shows(resumed, tmp_path):
    copy, run, _, _ = resumed
    assert run.returncode == 0, run.stderr[-3000:]
    compacted = tmp_path / "partial"
    shutil.copytree(copy, compacted)
    status, cost = shown("status", compacted), shown("report", compacted)
    done = spotbatch("compact", str(compacted))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert files_under(compacted) != files_under(copy), "compact folded nothing"
    same_status(shown("status", compacted), status)
    same_cost(shown("report", compacted), cost)


def test_a_finished_old_output_resumes_as_a_no_op_that_starts_no_engine(tmp_path, ray_cluster):
    place_input()
    copy = tmp_path / "finished"
    shutil.copytree(FIXTURE / "finished", copy)
    same_status(shown("status", copy), THEN["finished"]["status"])
    same_cost(shown("report", copy), THEN["finished"]["report"])
    started = time.monotonic()
    run = spotbatch("run", str(SPEC), "--output", str(copy), "--address", ray_cluster)
    seconds = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "nothing to do" in run.stdout, run.stdout
    assert files_under(copy) == files_under(FIXTURE / "finished")  # no run, actor or attempt record: no engine
    assert seconds < 30, seconds  # planning only; an engine takes longer than this to start
    same_status(shown("status", copy), THEN["finished"]["status"])
