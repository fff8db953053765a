"""The `spotbatch` command as users call it: exit codes, messages, the summary."""

import json
from pathlib import Path

import pyarrow.dataset as ds
import pytest
import yaml

from jobs.cli import main
from pipelines.spec import load_spec
from tests.conftest import write_shards
from tests.helpers import ROOT, spotbatch


def write_spec(tmp_path: Path, model: str = "tiny-random", **input_kw) -> Path:
    spec = {
        "input": {"paths": str(tmp_path / "in"), "prompt_column": "text", **input_kw},
        "model": {"name": model, "max_model_len": 512, "enforce_eager": True},
        "sampling": {"max_tokens": 8},
        "output": {"path": str(tmp_path / "out")},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_example_spec_is_valid():
    spec = load_spec(ROOT / "examples" / "summaries.yaml")
    assert spec.input.columns_read() == ["doc_id", "title", "body"]


@pytest.mark.parametrize("path", sorted((ROOT / "examples").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_example_spec_loads(path):
    if path.name == "serve.yaml":  # not a spec: `spotbatch serve`'s config (server/config.py)
        from server.config import load_config

        assert load_config(path).models
        return
    load_spec(path)


def test_routing_example_sends_hard_rows_to_the_large_model():
    from pipelines.planning.routing import models_of

    spec = load_spec(ROOT / "examples" / "routing.yaml")
    assert models_of(["hard", "easy", None, "x"], spec.route, spec.models) == ["large", "small", "small", "small"]


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (lambda t: None, ["run", "{t}/missing.yaml"], "spec file not found"),
        (lambda t: (t / "in").mkdir(), ["run", "{t}/spec.yaml"], "no Parquet files under"),
        (lambda t: None, ["run", "{t}/spec.yaml"], "input path does not exist"),
        (lambda t: write_shards(t / "in", [{"id": 1, "text": "a"}], 1), ["run", "{t}/spec.yaml", "--set",
         "sampling.max_tokens=-3"], "sampling.max_tokens must be > 0, got -3"),
        (lambda t: write_shards(t / "in", [{"id": 1, "body": "a"}], 1), ["run", "{t}/spec.yaml"],
         "has no column 'text'; its columns are: id, body"),
        (lambda t: write_shards(t / "in", [{"id": 1, "text": "a"}], 1), ["run", "{t}/spec.yaml", "--set",
         "model.name=/nowhere/model"], "model '/nowhere/model': no folder at /nowhere/model"),
        (lambda t: write_shards(t / "in", [{"id": 1, "text": "a"}], 1), ["run", "{t}/spec.yaml", "--set",
         "model.name=tiny-randm"], "Did you mean 'tiny-random'?"),
        (lambda t: write_shards(t / "in", [{"id": 1, "text": "a"}], 1), ["run", "{t}/spec.yaml", "--set",
         "model.name=smollm2-135m", "--set", "model.revision=v1"], "model.revision is for hub repo ids only"),
    ],
)
def test_user_errors_exit_2_with_a_message_no_traceback_and_no_output(tmp_path, setup, args, message):
    # As users run it, in a process of its own: `spotbatch run` renices the process it runs in.
    write_spec(tmp_path)
    setup(tmp_path)
    proc = spotbatch(*[a.format(t=tmp_path) for a in args])
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()  # found before anything was written


def test_output_holding_someone_elses_files_is_refused_and_untouched(tmp_path):
    write_shards(tmp_path / "in", [{"id": 1, "text": "a"}], 1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.parquet").write_bytes(b"precious")
    proc = spotbatch("run", str(write_spec(tmp_path)))
    assert proc.returncode == 2
    assert "already holds files that are not a spotbatch run" in proc.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["report.parquet"]
    assert (tmp_path / "out" / "report.parquet").read_bytes() == b"precious"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under a folder, with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")
            if p.is_file()}


def test_models_prepare_is_idempotent(tiny_model):
    before = (tiny_model / "config.json").stat().st_mtime_ns
    result = spotbatch("models", "prepare", "tiny-random")
    assert result.returncode == 0 and str(tiny_model) in result.stdout
    assert (tiny_model / "config.json").stat().st_mtime_ns == before


@pytest.mark.engine
def test_run_then_rerun_then_changed_spec(tmp_path, ray_cluster, tiny_model):
    rows = [{"id": i, "text": f"prompt number {i}"} for i in range(24)]
    write_shards(tmp_path / "in", rows, shards=3)
    spec = write_spec(tmp_path)
    first = spotbatch("run", str(spec), "--address", ray_cluster)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "finished: 24 rows in 3 of 3 units: 24 completed, 0 failed" in first.stdout
    assert "completion tokens/s" in first.stdout
    # no terminal: progress comes as log lines, with rate, ETA and dollars
    progress = [line for line in first.stdout.splitlines() if line.startswith("spotbatch progress:")]
    assert progress and all(w in progress[0] for w in ("rows", "tokens/s", "ETA", "spent"))
    assert "cost: $" in first.stdout and "per 1M tokens" in first.stdout
    assert sorted(ds.dataset(str(tmp_path / "out")).to_table().column("id").to_pylist()) == list(range(24))

    again = spotbatch("run", str(spec), "--address", ray_cluster)
    assert again.returncode == 0 and "nothing to do: all 3 units" in again.stdout

    status = spotbatch("status", str(tmp_path / "out"), "--json")
    assert status.returncode == 0
    figures = json.loads(status.stdout)
    assert figures["units_total"] == figures["units_committed"] == 3 and figures["finished"] is True
    assert figures["rows_done"] == 24 and figures["rows_failed"] == 0

    change = ["--set", "sampling.temperature=0.5", "--set", "input.system_prompt=Be brief."]
    before = snapshot(tmp_path / "out")
    changed = spotbatch("run", str(spec), "--address", ray_cluster, *change)
    assert changed.returncode == 2
    assert snapshot(tmp_path / "out") == before  # refused before anything was written
    assert "what differs from it: system prompt, sampling" in changed.stderr
    assert "--new-run" in changed.stderr

    old_parts = sorted(p.name for p in (tmp_path / "out").glob("part-*.parquet"))
    renewed = spotbatch("run", str(spec), "--address", ray_cluster, "--new-run", *change)
    assert renewed.returncode == 0, renewed.stderr[-3000:]
    assert "moved to" in renewed.stdout
    table = ds.dataset(str(tmp_path / "out")).to_table()
    assert sorted(table.column("id").to_pylist()) == list(range(24))  # the new run only
    assert len(set(table.column("spec_fingerprint").to_pylist())) == 1
    kept = list((tmp_path / "out" / "_spotbatch" / "superseded").glob("*/part-*.parquet"))
    assert sorted(p.name for p in kept) == old_parts  # the old results, moved, not lost

    # An export reads the prompts again: after the input changed it would pair new prompts
    # with old answers, so it is refused and writes nothing.
    write_shards(tmp_path / "in", [{**r, "text": r["text"] + " (edited)"} for r in rows], shards=3)
    export = spotbatch("export", str(tmp_path / "out"), "--format", "chat-jsonl", "--to", str(tmp_path / "t.jsonl"))
    assert export.returncode == 2 and "changed since its run" in export.stderr, export.stderr[-2000:]
    assert not (tmp_path / "t.jsonl").exists()


def test_status_of_a_folder_without_a_run(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2  # in process: status renices nothing
    assert "no spotbatch run at" in capsys.readouterr().err


@pytest.mark.engine
def test_an_engine_that_cannot_start_fails_the_run_quickly_with_its_reason(tmp_path, tiny_model):
    """No hang and no endless actor restarts: the run exits 1 and says why the engine failed."""
    import time

    write_shards(tmp_path / "in", [{"id": i, "text": f"hi {i}"} for i in range(5)], shards=1)
    spec = yaml.safe_load(write_spec(tmp_path).read_text())
    spec["model"]["engine_kwargs"] = {"max_model_len": 10**8}  # more than the model's positions
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    started = time.monotonic()
    proc = spotbatch("run", str(path), timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "spotbatch: error: the engine did not start" in proc.stderr and "max_model_len" in proc.stderr
    assert time.monotonic() - started < 240
    assert not list((tmp_path / "out").glob("part-*.parquet"))
