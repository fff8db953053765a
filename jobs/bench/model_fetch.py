"""What getting a model onto a node costs: pinning a local folder (cold, then from the hash
cache) and fetching a URL folder from S3 (first actor on a node, then every later one).

`python -m jobs.bench.model_fetch [--model smollm2-135m]` copies the built-in model into a temp
folder, starts a loopback S3 server (moto_server, by PID), and prints each figure; the last
line is the JSON. The S3 here is loopback, so the download figure is this machine's disk and
moto's speed, not a region's: on a cloud node the network decides it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace


def _moto() -> tuple[subprocess.Popen, dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("moto_server did not start")
        time.sleep(0.1)
    return proc, {"key": "bench", "secret": "bench",
                  "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"}}


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, round(time.perf_counter() - start, 3)


def main() -> None:
    from cluster.models import identify, resolve

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m", help="a built-in model to copy (default smollm2-135m)")
    args = p.parse_args()
    figures: dict = {"model": args.model}
    with tempfile.TemporaryDirectory(prefix="sb-bench-fetch-") as tmp:
        os.environ["SPOTBATCH_MODELS"] = f"{tmp}/node-cache"  # a fresh node
        folder = Path(tmp) / "model"
        shutil.copytree(_builtin(args.model), folder)
        figures["bytes"] = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        local = SimpleNamespace(name=str(folder), revision=None, storage_options={})
        _, figures["local_pin_cold_s"] = _timed(lambda: identify(local))
        _, figures["local_pin_warm_s"] = _timed(lambda: identify(local))
        proc, options = _moto()
        try:
            import boto3
            import s3fs

            boto3.client("s3", endpoint_url=options["client_kwargs"]["endpoint_url"], aws_access_key_id="bench",
                         aws_secret_access_key="bench", region_name="us-east-1").create_bucket(Bucket="bench")
            s3fs.S3FileSystem(**options).put(str(folder), "s3://bench/model", recursive=True)
            url = SimpleNamespace(name="s3://bench/model", revision=None, storage_options=options)
            source, figures["url_pin_s"] = _timed(lambda: identify(url))
            _, figures["url_first_fetch_s"] = _timed(lambda: resolve(url, source))
            _, figures["url_later_fetch_s"] = _timed(lambda: resolve(url, source))
        finally:
            proc.terminate()
            proc.wait(10)
    mb = figures["bytes"] / 1e6
    print(f"{args.model}: {mb:.0f} MB")
    print(f"local folder pinned: {figures['local_pin_cold_s']} s cold, "
          f"{figures['local_pin_warm_s']} s from the hash cache")
    print(f"s3 folder: listed in {figures['url_pin_s']} s, first fetch {figures['url_first_fetch_s']} s "
          f"({mb / max(figures['url_first_fetch_s'], 1e-9):.0f} MB/s), later actors {figures['url_later_fetch_s']} s")
    print(json.dumps(figures))


def _builtin(name: str) -> Path:
    from cluster.models.builtin import prepare_model
    from cluster.models.node_cache import models_dir

    saved = os.environ.pop("SPOTBATCH_MODELS")
    try:
        return prepare_model(name, models_dir())
    finally:
        os.environ["SPOTBATCH_MODELS"] = saved


if __name__ == "__main__":
    main()
