"""Running `spotbatch` as users do (a separate process), and waiting on a run's progress."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def spotbatch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "jobs.cli", *args]


def spotbatch_env() -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "disabled"}


def spotbatch(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(spotbatch_cmd(*args), cwd=ROOT, env=spotbatch_env(),
                          capture_output=True, text=True, timeout=timeout)


def start_spotbatch(*args: str, log: Path) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen(spotbatch_cmd(*args), cwd=ROOT, env=spotbatch_env(),
                                stdout=fh, stderr=subprocess.STDOUT)


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` (by its path there) and what it holds: to tell what changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def wait_until(condition: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen | None = None,
               log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-4000:] if log else ""
            raise AssertionError(f"spotbatch exited ({proc.returncode}) before {what}:\n{tail}")
        time.sleep(0.25)
    raise TimeoutError(f"timed out waiting for {what}")


def hub_cache(home: Path, model: Path, repo: str, commit: str, ref: str = "main") -> Path:
    """A hub cache laid out by hand as huggingface_hub lays it out, holding `model` as `repo`
    at `commit` (named by `ref`): what a warm cache on an air-gapped cluster looks like."""
    import shutil

    root = home / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    if not snapshot.exists():
        shutil.copytree(model, snapshot)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    return snapshot


def written_text(path: Path) -> bytes:
    """What a file holds, as a search for a secret must see it: its bytes, and for a Parquet
    file (whose strings are encoded and compressed) every value and its metadata as text too."""
    data = path.read_bytes()
    if data[:4] != b"PAR1":
        return data
    import json

    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return data + json.dumps([table.to_pylist(), str(table.schema.metadata)], default=str).encode()


def leaks(secrets: list[str], places: list[Path], texts: dict[str, bytes] | None = None) -> list[str]:
    """Where any of `secrets` is written: every file under each of `places` (a folder, walked
    whole, or a file) and each of `texts` (a console's output, say); [] when nowhere."""
    found = [(name, text) for name, text in (texts or {}).items()]
    for place in places:
        files = [place] if place.is_file() else [p for p in sorted(place.rglob("*")) if p.is_file()]
        found += [(str(p), written_text(p)) for p in files]
    return [f"{secret[:6]}... in {name}" for name, text in found for secret in secrets if secret.encode() in text]


def committed_ends(output: str, storage_options: dict | None = None) -> list[dict[str, Any]]:
    """The end records of the attempts that committed a unit of `output`."""
    from pipelines.store.output import OutputStore
    from pipelines.store.records import Records

    attempts = Records(OutputStore(output, storage_options)).attempts()
    return [t["end"] for tries in attempts.values() for t in tries.values()
            if t.get("end", {}).get("outcome") == "committed"]


def http_folder(folder: Path, request) -> str:
    """`folder`'s URL on python's http.server (a thread of this process, stopped when the test
    ends), which lists a folder as HTML links and ignores Range, sending a file whole."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    request.addfinalizer(server.server_close)
    request.addfinalizer(server.shutdown)
    return f"http://127.0.0.1:{server.server_port}/"
