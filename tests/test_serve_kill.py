"""A `spotbatch serve` process killed with SIGKILL mid-batch, and started again on the same
store: the batch completes, and every custom_id is in the output or error file exactly once
(the server keeps no state of its own; the run resumes)."""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from tests.helpers import ROOT
from tests.serving import answered_ids, chat_line, client, jsonl, wait_for

pytestmark = pytest.mark.engine
KEY = "sk-serve-kill-test-0123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp_path, address: str, port: int, log_name: str) -> subprocess.Popen:
    env = {**os.environ, "SPOTBATCH_API_KEY": KEY, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    log = open(tmp_path / log_name, "w")
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "serve", "--config", str(tmp_path / "serve.yaml"),
                             "--store", str(tmp_path / "store"), "--port", str(port), "--address", address],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, (tmp_path / log_name).read_text()[-3000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/files", headers={"Authorization": f"Bearer {KEY}"}).is_success:
                return proc
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.3)


def test_a_server_killed_mid_batch_and_started_again_completes_it_exactly_once(tmp_path, ray_cluster, smollm2):
    data = yaml.safe_load((ROOT / "examples" / "serve.yaml").read_text())
    data["models"]["gpt-4o-mini"]["model"]["enforce_eager"] = True
    data["models"]["gpt-4o-mini"]["compute"]["tokens_per_unit"] = 300
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(data))
    port = free_port()
    first = start_server(tmp_path, ray_cluster, port, "first.log")
    try:
        c = client(f"http://127.0.0.1:{port}/v1", KEY)
        lines = [chat_line(f"k{i}", content=f"Tell a story about {i}.", max_completion_tokens=24)
                 for i in range(40)]
        up = c.files.create(file=("batch.jsonl", jsonl(lines)), purpose="batch")
        batch = c.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h")
        while not (batch := c.batches.retrieve(batch.id)).request_counts.completed:
            assert batch.status in ("validating", "in_progress"), batch
            time.sleep(0.2)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    assert batch.request_counts.completed < 40, "the batch ended before the server could be killed"
    second = start_server(tmp_path, ray_cluster, port, "second.log")
    try:
        batch = wait_for(c, batch.id, 300)
        answered = answered_ids(c, batch)
    finally:
        second.terminate()
        second.wait(60)
    assert batch.status == "completed", batch.errors
    assert sorted(answered) == sorted(line["custom_id"] for line in lines)  # each once
    assert batch.request_counts.completed + batch.request_counts.failed == 40
