"""No credential is ever written down: a run with input, model, output and cache on S3,
credentials in every `storage_options`, then status, report, export and --retry-failed (of a row
that failed) with credentials from the environment. Every object under the output and the cache,
the export and the console and the log files of Ray's and vLLM's lines are read back: the key and
the secret appear nowhere (real engine, loopback S3). The same for a model URL with a password in
it (loopback FTP) and a vLLM argument not known to be a setting (`hf_token`), with the engine
facts file too. Without an engine: tests/test_secrets_unit.py."""

import json
import os
import shutil
import subprocess
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs

from pipelines.engine import facts as engine_facts
from tests.conftest import FTP_PASSWORD
from tests.helpers import ROOT, leaks, spotbatch_cmd, write_spec

pytestmark = pytest.mark.engine

KEY, SECRET = "AKIASPOTBATCHLEAKTEST", "spotbatch-Secret-Value-0123456789abcdef"
TOKEN = "hf_spotbatchLeakTestToken0123456789"
TOO_LONG = "word " * 2000  # longer than the context: an error record, which --retry-failed runs again


@pytest.mark.s3
def test_no_credential_is_written_anywhere(tmp_path, s3_server, ray_cluster, tiny_model):
    endpoint = s3_server["client_kwargs"]["endpoint_url"]
    creds = {"key": KEY, "secret": SECRET, "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    fs = s3fs.S3FileSystem(**creds)
    prefix = f"s3://spotbatch/{uuid.uuid4().hex[:8]}"
    with fs.open(f"{prefix}/in/part-0.parquet", "wb") as fh:
        pq.write_table(pa.table({"id": list(range(13)), "text": [f"say {i}" for i in range(12)] + [TOO_LONG]}), fh)
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
    # The retry's engines run on the cluster's workers, which do not have this shell's
    # environment: the credentials go where the spec keeps them, given again with --set.
    given = json.dumps(creds)
    sets = [arg for field in ("input", "model", "model.compile_cache", "cache", "output")
            for arg in ("--set", f"{field}.storage_options={given}")]
    retried = spotbatch("run", "--retry-failed", out, "--address", ray_cluster, *sets, env=env)
    assert "1 rows in 1 of" in retried.stdout and "0 completed, 1 failed" in retried.stdout, retried.stdout

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


def test_a_model_url_password_and_an_engine_token_are_written_nowhere(tmp_path, ftp_server, ray_cluster, tiny_model):
    root, url = ftp_server
    shutil.copytree(tiny_model, root / "model")  # a checkpoint on the team's FTP server
    model = f"{url}/model/"
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": list(range(9)), "text": [f"say {i}" for i in range(8)] + [TOO_LONG]}),
                   tmp_path / "in" / "part-0.parquet")
    out, logs = tmp_path / "out", tmp_path / "logs"
    spec = write_spec(tmp_path / "spec.yaml", {
        "input": {"paths": str(tmp_path / "in"), "prompt_column": "text"},
        "model": {"name": model, "max_model_len": 256, "enforce_eager": True,
                  "engine_kwargs": {"hf_token": TOKEN, "max_num_seqs": 16}},  # vLLM takes the token, and logs it
        "sampling": {"max_tokens": 4},
        "output": {"path": str(out)},
    })
    console = []

    def spotbatch(*args, code=0):
        proc = subprocess.run(spotbatch_cmd(*args), cwd=ROOT, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "RAY_AUTH_MODE": "disabled", "SPOTBATCH_LOG_DIR": str(logs)})
        console.append(proc.stdout + proc.stderr)
        assert proc.returncode == code, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc

    spotbatch("run", str(spec), "--address", ray_cluster)
    spotbatch("status", str(out))
    spotbatch("report", str(out), "--json")
    spotbatch("export", str(out), "--format", "openai-batch", "--to", str(tmp_path / "batch.jsonl"))
    refused = spotbatch("run", "--retry-failed", str(out), "--address", ray_cluster, code=2)
    assert "model.name" in refused.stderr and "model.engine_kwargs.hf_token" in refused.stderr
    retried = spotbatch("run", "--retry-failed", str(out), "--address", ray_cluster,
                        "--set", f"model.name={model}", "--set", f"model.engine_kwargs.hf_token={TOKEN}")
    assert "1 rows in 1 of" in retried.stdout and "0 completed, 1 failed" in retried.stdout, retried.stdout

    assert any(logs.iterdir()), "the runs named no log file"
    assert engine_facts.facts_path().exists()  # what the engines measured, kept beside no output
    found = leaks([FTP_PASSWORD, TOKEN], [out, tmp_path / "batch.jsonl", tmp_path / "batch.errors.jsonl", logs,
                                          engine_facts.facts_path()], {"console": "\n".join(console).encode()})
    assert not found, found
    answered_by = {m for p in out.glob("*.parquet") for m in pq.read_table(p).column("model").to_pylist()}
    assert answered_by == {"ftp://<redacted>@" + model.split("@", 1)[1]}
