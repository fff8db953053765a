"""An output or a response cache the input would read, or an input inside either, is refused by
name at planning, before anything is written (no engine: a deadline already passed stops the
runs that are not refused before any engine starts)."""

import os
import subprocess
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs

from tests.conftest import write_shards
from tests.helpers import ROOT, spotbatch_cmd, spotbatch_env, write_spec

STOP_AT_ONCE = ["--set", "compute.deadline=0s"]


def spotbatch_in(cwd, *args: str) -> subprocess.CompletedProcess:
    """`spotbatch` run from `cwd`, where a spec's relative paths start (this worktree's code)."""
    env = {**spotbatch_env(), "PYTHONPATH": str(ROOT)}
    return subprocess.run(spotbatch_cmd(*args), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def spec_file(tmp_path, input_paths, output, **sections):
    spec = {"input": {"paths": input_paths, "prompt_column": "text"}, "model": {"name": "tiny-random"},
            "output": {"path": output}, **sections}
    return str(write_spec(tmp_path / "spec.yaml", spec))


@pytest.fixture(autouse=True)
def logs_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOTBATCH_LOG_DIR", str(tmp_path / "logs"))


@pytest.mark.parametrize("input_paths, output, cache, named", [
    # relative paths and trailing slashes, as users write them
    ("in", "in/results", None, "output.path in/results is inside input.paths[0] in"),
    ("./in/", "in//results/", None, "output.path in//results/ is inside input.paths[0] ./in/"),
    ("in/*", "in/results", None, "output.path in/results is inside input.paths[0] in/*"),
    ("in", "in", None, "output.path in is inside input.paths[0] in"),
    ("in", "results", "in/cache", "cache.path in/cache is inside input.paths[0] in"),
    (["elsewhere", "in/shard-000.parquet"], "in", None, "input.paths[1] in/shard-000.parquet is inside output.path in"),
    ("results/in", "results", None, "input.paths[0] results/in is inside output.path results"),
    ("cache/in", "results", "cache", "input.paths[0] cache/in is inside cache.path cache"),
])
def test_paths_that_overlap_are_refused_by_name_before_anything_is_written(tmp_path, input_paths, output, cache,
                                                                             named):
    for folder in ("in", "elsewhere", "results/in", "cache/in"):
        write_shards(tmp_path / folder, [{"id": i, "text": f"t {i}"} for i in range(3)], shards=1)
    spec = spec_file(tmp_path, input_paths, output, **({"cache": {"path": cache}} if cache else {}))
    written = sorted(p for p in tmp_path.rglob("*"))
    proc = spotbatch_in(tmp_path, "run", spec, *STOP_AT_ONCE)
    assert proc.returncode == 2 and named in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert sorted(p for p in tmp_path.rglob("*")) == written  # nothing written, nothing moved


@pytest.mark.parametrize("input_paths, output", [
    ("in/*.parquet", "in/results"),  # the glob never reaches the output's files
    ("in/shard-000.parquet", "in/results"),  # one file beside the output
    ("in", "in/_results"),  # a hidden folder, which an input listing skips
    ("in", "input-results"),  # a name that only begins like the input's
])
def test_an_output_beside_the_input_that_the_input_never_reads_is_fine(tmp_path, input_paths, output):
    write_shards(tmp_path / "in", [{"id": i, "text": f"t {i}"} for i in range(3)], shards=1)
    proc = spotbatch_in(tmp_path, "run", spec_file(tmp_path, input_paths, output), *STOP_AT_ONCE)
    assert proc.returncode == 4 and "stopped: deadline" in proc.stdout, (proc.returncode, proc.stderr[-2000:])
    again = spotbatch_in(tmp_path, "run", spec_file(tmp_path, input_paths, output), *STOP_AT_ONCE)
    assert again.returncode == 4, again.stderr[-2000:]  # its own files are not read as input on a resume


def test_a_symlink_to_the_input_is_the_input(tmp_path):
    write_shards(tmp_path / "in", [{"id": 1, "text": "t"}], shards=1)
    os.symlink(tmp_path / "in", tmp_path / "link")
    proc = spotbatch_in(tmp_path, "run", spec_file(tmp_path, "link", str(tmp_path / "in" / "results")), *STOP_AT_ONCE)
    assert proc.returncode == 2 and "is inside input.paths[0] link" in proc.stderr, proc.stderr[-2000:]


def test_batch_files_in_a_folder_that_holds_the_output_are_refused(tmp_path):
    (tmp_path / "batches").mkdir()
    (tmp_path / "batches" / "b.jsonl").write_text(
        '{"custom_id": "r1", "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}\n')
    spec = write_spec(tmp_path / "spec.yaml", {"input": {"kind": "openai_batch", "paths": "batches"},
                                               "model": {"name": "tiny-random"},
                                               "output": {"path": "batches/out"}})
    proc = spotbatch_in(tmp_path, "run", str(spec), *STOP_AT_ONCE)
    assert proc.returncode == 2 and "output.path batches/out is inside input.paths[0] batches" in proc.stderr, \
        proc.stderr[-2000:]
    assert not (tmp_path / "batches" / "out").exists()


@pytest.mark.s3
def test_an_output_inside_the_input_on_s3_is_refused(tmp_path, s3_server):
    prefix = f"s3://spotbatch/{uuid.uuid4().hex[:8]}"
    with s3fs.S3FileSystem(**s3_server).open(f"{prefix}/in/part-0.parquet", "wb") as fh:
        pq.write_table(pa.table({"id": [1, 2], "text": ["a", "b"]}), fh)
    spec = write_spec(tmp_path / "spec.yaml", {
        "input": {"paths": f"{prefix}/in/", "prompt_column": "text", "storage_options": s3_server},
        "model": {"name": "tiny-random"},
        "output": {"path": f"{prefix}/in/results", "storage_options": s3_server}})
    proc = spotbatch_in(tmp_path, "run", str(spec), *STOP_AT_ONCE)
    assert proc.returncode == 2 and f"output.path {prefix}/in/results is inside input.paths[0] {prefix}/in/" \
        in proc.stderr, proc.stderr[-2000:]
    assert not s3fs.S3FileSystem(**s3_server).exists(f"{prefix}/in/results")
