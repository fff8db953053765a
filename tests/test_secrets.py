"""No credential is ever written down: a run with input, model, output and cache on S3,
credentials in every `storage_options`, then status, report, export and --retry-failed with credentials
from the environment. Every object under the output and the cache, the export and the console
and the log files of Ray's and vLLM's lines are read back: the key and the secret appear nowhere
(real engine, loopback S3)."""

import os
import subprocess
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs

from tests.helpers import ROOT, spotbatch_cmd, write_spec

pytestmark = [pytest.mark.engine, pytest.mark.s3]

KEY, SECRET = "AKIASPOTBATCHLEAKTEST", "spotbatch-Secret-Value-0123456789abcdef"


def test_no_credential_is_written_anywhere(tmp_path, s3_server, ray_cluster, tiny_model):
    endpoint = s3_server["client_kwargs"]["endpoint_url"]
    creds = {"key": KEY, "secret": SECRET, "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    fs = s3fs.S3FileSystem(**creds)
    prefix = f"s3://spotbatch/{uuid.uuid4().hex[:8]}"
    with fs.open(f"{prefix}/in/part-0.parquet", "wb") as fh:
        pq.write_table(pa.table({"id": list(range(12)), "text": [f"say {i}" for i in range(12)]}), fh)
    fs.put(str(tiny_model), f"{prefix}/model", recursive=True)  # a fine-tuned checkpoint where the team keeps them
    spec = write_spec(tmp_path / "spec.yaml", {
        "input": {"paths": f"{prefix}/in/", "prompt_column": "text", "storage_options": creds},
        "model": {"name": f"{prefix}/model/", "storage_options": creds, "max_model_len": 256, "enforce_eager": True,
                  "compile_cache": {"path": f"{prefix}/compiled/", "storage_options": creds}},
        "compute": {"actors": 2, "tokens_per_unit": 8},  # two engine actors on one node start at once: one downloads
        "sampling": {"max_tokens": 4},
        "cache": {"path": f"{prefix}/cache", "storage_options": creds},
        "output": {"path": f"{prefix}/out", "storage_options": creds},
    })
    console = []

    def spotbatch(*args, env=None):
        proc = subprocess.run(spotbatch_cmd(*args), cwd=ROOT, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "RAY_AUTH_MODE": "disabled",
                                   "SPOTBATCH_LOG_DIR": str(tmp_path / "logs"), **(env or {})})
        console.append(proc.stdout + proc.stderr)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc

    spotbatch("run", str(spec), "--address", ray_cluster)
    from pipelines.store.output import OutputStore
    from pipelines.store.records import Records

    fetched = [a["model_source"] for a in Records(OutputStore(f"{prefix}/out", creds)).actors().values()]
    assert sorted(f["downloaded"] for f in fetched) == [False, True], fetched
    # Later commands get the credentials from the environment, as a teammate's shell has them.
    env = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ENDPOINT_URL": endpoint,
           "AWS_DEFAULT_REGION": "us-east-1"}
    out = f"{prefix}/out"
    spotbatch("status", out, env=env)
    spotbatch("report", out, "--json", env=env)
    export = tmp_path / "train.jsonl"
    spotbatch("export", out, "--format", "chat-jsonl", "--to", str(export), "--include-truncated", env=env)
    assert len(export.read_text().splitlines()) == 12
    spotbatch("run", "--retry-failed", out, "--address", ray_cluster, env=env)

    written = {path: fs.cat_file(path) for path in fs.find(prefix) if not path.endswith("/in/part-0.parquet")}
    assert any("manifest.json" in p for p in written) and any("/cache/" in p for p in written)
    written["export"] = export.read_bytes()
    written["console"] = "\n".join(console).encode()
    logs = {f"log file {p.name}": p.read_bytes() for p in (tmp_path / "logs").iterdir()}  # Ray's and vLLM's lines
    assert logs, "the run named no log file"
    written.update(logs)
    for secret in (KEY, SECRET):
        leaked = [path for path, data in written.items() if secret.encode() in data]
        assert not leaked, f"{secret[:6]}... written in {leaked}"
    manifest = fs.cat_file(f"{prefix}/out/_spotbatch/manifest.json").decode()
    assert '"key": "<redacted>"' in manifest and endpoint in manifest  # the keys stay; safe values too
