"""Provider batch files at planning (no engine): a refusal leaves the output as it was and names
the JSONL file and line, and the Parquet read from them is never half replaced."""

import json
import os
import time

import pyarrow.dataset as ds
import pytest

from pipelines.formats import batch_files
from pipelines.formats.batch_files import INPUT_DIR, SOURCE, resolve_input
from pipelines.run import prepare
from pipelines.spec import PipelineSpec
from pipelines.store.output import OutputStore
from pipelines.store.records import Records
from tests.conftest import write_shards
from tests.helpers import files_under, spotbatch, write_spec


def line(custom_id: str, text: str = "hi") -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}})


def batch_spec(tmp_path, paths) -> PipelineSpec:
    return PipelineSpec(input={"kind": "openai_batch", "paths": paths}, model={"name": "tiny-random"},
                        output={"path": str(tmp_path / "out")})


def test_a_custom_id_used_twice_is_named_by_file_and_line_and_nothing_is_written(tmp_path):
    (tmp_path / "a.jsonl").write_text(line("r1") + "\n" + line("r2") + "\n")
    (tmp_path / "b.jsonl").write_text(line("r3") + "\n\n" + line("r1", "again") + "\n")
    spec = write_spec(tmp_path / "spec.yaml", batch_spec(tmp_path, str(tmp_path / "*.jsonl")).model_dump(mode="json"))
    proc = spotbatch("run", str(spec))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "b.jsonl line 3: custom_id 'r1' is used already, at " in proc.stderr, proc.stderr
    assert "a.jsonl line 1;" in proc.stderr and ".parquet" not in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_new_run_with_changed_batch_files_leaves_the_working_runs_input_alone(tmp_path):
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(line(f"r{i}") + "\n" for i in range(4)))
    store, plan = prepare(resolve_input(batch_spec(tmp_path, str(batch))))
    records = Records(store)
    records.run_record("run-old", {"started_at": time.time(), "pid": 4242, "host": "node-a"})
    records.actor_started("actor-1", {"run_id": "run-old", "started_at": time.time(), "loaded_at": time.time()})
    records.actor_beat("actor-1", {"time": time.time()})
    before = files_under(tmp_path / "out" / "_spotbatch")

    batch.write_text("".join(line(f"r{i}") + "\n" for i in range(6)))  # the files change under it
    spec = write_spec(tmp_path / "spec.yaml", batch_spec(tmp_path, str(batch)).model_dump(mode="json"))
    proc = spotbatch("run", str(spec), "--new-run")
    assert proc.returncode == 2 and "--new-run refused: run run-old" in proc.stderr, proc.stderr[-2000:]
    assert files_under(tmp_path / "out" / "_spotbatch") == before  # its input, its source, its records

    # Once it stopped, --new-run reads the files again and moves the old run aside.
    records.actor_beat("actor-1", {"time": time.time() - 60})
    _, new_plan = prepare(resolve_input(batch_spec(tmp_path, str(batch)), new_run=True), new_run=True)
    assert new_plan.input_rows == 6 and store.find("_spotbatch/superseded")


def test_batch_files_for_an_output_holding_a_parquet_run_are_refused_before_they_are_read_into_it(tmp_path):
    write_shards(tmp_path / "in", [{"id": i, "text": f"t {i}"} for i in range(3)], shards=1)
    prepare(PipelineSpec(input={"paths": str(tmp_path / "in"), "prompt_column": "text"}, model={"name": "tiny-random"},
                         output={"path": str(tmp_path / "out")}))
    before = files_under(tmp_path / "out")
    (tmp_path / "batch.jsonl").write_text(line("r1") + "\n")
    spec = write_spec(tmp_path / "spec.yaml",
                      batch_spec(tmp_path, str(tmp_path / "batch.jsonl")).model_dump(mode="json"))
    proc = spotbatch("run", str(spec))
    assert proc.returncode == 2 and "its run was planned on no batch files" in proc.stderr, proc.stderr[-2000:]
    assert files_under(tmp_path / "out") == before


def test_a_conversion_that_fails_midway_leaves_the_one_before_whole(tmp_path, monkeypatch):
    batch = tmp_path / "batch.jsonl"
    first = "".join(line(f"r{i}") + "\n" for i in range(3))
    batch.write_text(first)
    stamp = os.stat(batch).st_mtime_ns
    resolve_input(batch_spec(tmp_path, str(batch)))  # read once; planning stopped before a run began

    monkeypatch.setattr(batch_files, "ROWS_PER_SHARD", 2)
    put = OutputStore.put

    def full_disk(self, name, data):
        if name.endswith("part-00001.parquet"):
            raise OSError(28, "No space left on device")
        put(self, name, data)

    monkeypatch.setattr(OutputStore, "put", full_disk)
    batch.write_text("".join(line(f"x{i}") + "\n" for i in range(5)))
    with pytest.raises(OSError, match="No space left"):
        resolve_input(batch_spec(tmp_path, str(batch)))
    monkeypatch.setattr(OutputStore, "put", put)

    # The first files back as they were (a checkout that keeps times, say): their rows, whole.
    batch.write_text(first)
    os.utime(batch, ns=(stamp, stamp))
    spec = resolve_input(batch_spec(tmp_path, str(batch)))
    rows = ds.dataset(spec.input.paths[0].removeprefix("file://")).to_table().column("custom_id").to_pylist()
    assert rows == ["r0", "r1", "r2"]
    store = OutputStore(str(tmp_path / "out"))
    named = json.loads(store.read(SOURCE)).get("folder", INPUT_DIR)
    assert all(n.startswith(named) for n in store.find(INPUT_DIR))  # the failed conversion's files went too
