"""`spotbatch up` / `spotbatch down`: a local Ray that outlives one run, so each later run on
this machine connects to it (about 0.7 s) instead of starting a private Ray (5-6 s on a
2-core machine: Ray's API server and its raylet's agents start one after the other).

It is one `ray start --head --block` process group with its own temp dir and free ports, so
it never meets another Ray on the machine; its address, PID and temp dir are kept in
$SPOTBATCH_LOCAL_RAY (default ~/.cache/spotbatch/local-ray.json). `down` signals exactly
those processes (never `ray stop`, which stops every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

STARTED = "Ray runtime started"
# As a private local Ray's: Ray's default (30% of memory) can pass a container's /dev/shm.
OBJECT_STORE_BYTES = 512 * 1024**2


def state_path() -> Path:
    return Path(os.environ.get("SPOTBATCH_LOCAL_RAY") or Path.home() / ".cache" / "spotbatch" / "local-ray.json")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_port_args() -> list[str]:
    """`ray start` flags giving each port a node opens a free one: two Rays on one machine
    never meet (Ray's defaults are fixed numbers)."""
    names = ["node-manager-port", "object-manager-port", "dashboard-agent-grpc-port",
             "dashboard-agent-listen-port", "metrics-export-port", "runtime-env-agent-port"]
    return [f"--{n}={free_port()}" for n in names]


def _listening(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def running() -> dict | None:
    """The local Ray `up` started, if its process is alive and its GCS answers."""
    path = state_path()
    try:
        state = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    alive = _alive(state)
    if alive and _listening(state["address"]):
        return state
    if not alive:  # a stale record: the machine rebooted, or its processes were killed
        path.unlink(missing_ok=True)
        shutil.rmtree(state.get("temp_dir", ""), ignore_errors=True)
    return None


def _alive(state: dict) -> bool:
    """Its `ray start` process still runs (the same process, not a reused PID)."""
    try:
        return psutil.Process(state["pid"]).create_time() == state["pid_started"]
    except (psutil.NoSuchProcess, KeyError, TypeError):
        return False


def up(num_cpus: int | None = None, timeout: float = 120) -> tuple[dict, bool]:
    """Starts the local Ray unless one is running; returns its state and whether it is new."""
    state = running()
    if state:
        return state, False
    temp_dir = tempfile.mkdtemp(prefix="sb-ray-up-", dir="/tmp")  # short: Ray's socket paths
    port = free_port()
    log = Path(temp_dir) / "ray-start.log"
    ray_cli = Path(sys.executable).with_name("ray")  # this environment's: its workers import spotbatch
    ray_cli = str(ray_cli) if ray_cli.exists() else shutil.which("ray") or "ray"
    cmd = [ray_cli, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
           f"--temp-dir={temp_dir}", "--include-dashboard=false", f"--num-cpus={num_cpus or os.cpu_count()}",
           f"--object-store-memory={OBJECT_STORE_BYTES}", f"--ray-client-server-port={free_port()}",
           *node_port_args()]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # its own group: `down` signals exactly it
    deadline = time.monotonic() + timeout
    while STARTED not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_tree(proc.pid, grace=0)
            tail = log.read_text(errors="replace")[-2000:]
            shutil.rmtree(temp_dir, ignore_errors=True)
            raise RuntimeError(f"spotbatch up: Ray did not start (exit code {proc.poll()}):\n{tail}")
        time.sleep(0.1)
    state = {"address": f"127.0.0.1:{port}", "pid": proc.pid, "pid_started": psutil.Process(proc.pid).create_time(),
             "temp_dir": temp_dir, "num_cpus": num_cpus or os.cpu_count(), "started_at": time.time()}
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{os.getpid()}")
    staged.write_text(json.dumps(state))
    staged.replace(path)
    return state, True


def down(grace: float = 5.0) -> dict | None:
    """Stops the local Ray `up` started (its own processes only); returns what was stopped."""
    path = state_path()
    try:
        state = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    if _alive(state):
        stop_tree(state["pid"], grace)
    path.unlink(missing_ok=True)
    shutil.rmtree(state.get("temp_dir", ""), ignore_errors=True)
    return state


def signal_tree(pid: int, sig: int) -> list[psutil.Process]:
    """Signal the process group `pid` leads and every descendant (Ray starts its workers in
    sessions of their own, out of the group); returns the processes signalled."""
    try:
        tree = [psutil.Process(pid)]
        tree += tree[0].children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for proc in tree:
        try:
            proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    return tree


def stop_tree(pid: int, grace: float) -> None:
    """SIGTERM to the tree, then SIGKILL for what is left after `grace` seconds (gcs_server
    may ignore SIGTERM for a while)."""
    psutil.wait_procs(signal_tree(pid, signal.SIGTERM), timeout=grace)
    signal_tree(pid, signal.SIGKILL)
