"""A run's console shows spotbatch's own lines only; Ray's and vLLM's go to the file it names
(or to the console with --verbose), and a Ray the caller keeps gets its log printing back."""

import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.run import run
from pipelines.spec import PipelineSpec
from pipelines.store.output import OutputStore
from pipelines.store.records import Records
from tests.helpers import spotbatch, write_spec

pytestmark = pytest.mark.engine

# What Ray's and vLLM's lines look like: a worker prefix, a log level, Ray's C++ and Python sources.
FOREIGN = re.compile(r"pid=\d+\)|\b(INFO|WARNING|DEBUG)\b|core_worker|streaming_executor|vllm|safetensors|"
                     r"autoscaler|Started a local Ray")


def job(tmp_path, name: str) -> dict:
    if not (tmp_path / "in.parquet").exists():
        pq.write_table(pa.table({"id": list(range(12)), "text": [f"prompt {i}" for i in range(12)]}),
                       tmp_path / "in.parquet")
    return {"input": {"paths": str(tmp_path / "in.parquet"), "prompt_column": "text"},
            "model": {"name": "tiny-random", "max_model_len": 256},  # eager or not: chosen by the work (12 rows)
            "sampling": {"max_tokens": 8},
            "output": {"path": str(tmp_path / name)}}


def test_a_plain_run_prints_no_ray_or_vllm_line_and_names_the_file_that_has_them(tmp_path, ray_cluster,
                                                                                tiny_model, monkeypatch):
    monkeypatch.setenv("SPOTBATCH_LOG_DIR", str(tmp_path / "logs"))
    spec = write_spec(tmp_path / "quiet.yaml", job(tmp_path, "quiet"))
    quiet = spotbatch("run", str(spec), "--address", ray_cluster)
    assert quiet.returncode == 0, quiet.stdout[-2000:] + quiet.stderr[-3000:]
    console = (quiet.stdout + quiet.stderr).splitlines()
    assert not [line for line in console if FOREIGN.search(line)], console
    assert any(line.startswith("finished: 12 rows") for line in console), console
    assert any(line.startswith("start-up: ") and "model load" in line for line in console), console
    (named,) = re.findall(r"Ray's and vLLM's logs: (\S+)", quiet.stdout)
    (log,) = (tmp_path / "logs").iterdir()
    assert named == str(log)
    assert re.search(r"pid=\d+\) .*vLLM|LLM engine", log.read_text()), log.read_text()[-2000:]  # the engine's lines
    (actor,) = Records(OutputStore(str(tmp_path / "quiet"))).actors().values()
    assert actor["compile"]["enforce_eager"] and actor["compile"]["reason"].startswith("eager: about")

    spec = write_spec(tmp_path / "verbose.yaml", job(tmp_path, "verbose"))
    verbose = spotbatch("run", str(spec), "--address", ray_cluster, "--verbose")
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert [line for line in (verbose.stdout + verbose.stderr).splitlines() if FOREIGN.search(line)]
    assert "Ray's and vLLM's logs:" not in verbose.stdout


def test_a_run_in_a_kept_ray_gives_its_log_printing_back(tmp_path, ray_cluster, tiny_model, monkeypatch):
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    monkeypatch.setenv("SPOTBATCH_LOG_DIR", str(tmp_path / "logs"))
    before = list(dispatcher.handlers)
    summary = run(PipelineSpec.model_validate(job(tmp_path, "kept")), interactive=False)  # this process's Ray
    assert summary.finished
    assert dispatcher.handlers == before
    assert "LLM engine" in next((tmp_path / "logs").iterdir()).read_text()
