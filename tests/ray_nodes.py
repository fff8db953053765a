"""Real Ray nodes for tests: each a `ray start --block` process group of its own.

Each node gets free ports and the cluster one short temp dir; a node is stopped (or killed,
like a preempted spot node) by signalling its own processes, never with Ray's own command that
stops every Ray process on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from cluster.local_ray import free_port, node_port_args, signal_tree, stop_tree

RAY = str(Path(sys.executable).with_name("ray"))


class Node:
    def __init__(self, proc: subprocess.Popen, log: Path):
        self.proc = proc
        self.log = log

    def wait_started(self, timeout: float = 90) -> None:
        """Until `ray start` says the node is up; fails with its log if it exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Ray runtime started" in self.log.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"Ray node exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"Ray node did not start:\n{self.log.read_text()[-3000:]}")

    def processes(self) -> list[psutil.Process]:
        """The node's processes: `ray start` and everything below it."""
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal every process of this node: its process group (raylet, GCS on a head) and
        every descendant, since Ray starts workers in sessions of their own."""
        signal_tree(self.proc.pid, sig)

    def stop(self, grace: float = 5.0) -> None:
        stop_tree(self.proc.pid, grace)
        self.proc.wait(10)


class LocalCluster:
    """A head node plus any number of worker nodes, all on this machine."""

    def __init__(self, head_cpus: int = 4, object_store_mb: int = 256, dashboard: bool = False):
        self.temp_dir = tempfile.mkdtemp(prefix="sb-ray-", dir="/tmp")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.object_store_mb = object_store_mb
        # As from an activated venv: a job's `python` entrypoint must be this environment's.
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PATH": path}
        self.nodes: list[Node] = []
        self.dashboard_url = None
        head_args = ["--head", f"--port={self.port}", f"--ray-client-server-port={free_port()}",
                     f"--temp-dir={self.temp_dir}"]
        if dashboard:  # needed for `ray job submit`
            dashboard_port = free_port()
            self.dashboard_url = f"http://127.0.0.1:{dashboard_port}"
            head_args += ["--include-dashboard=true", "--dashboard-host=127.0.0.1",
                          f"--dashboard-port={dashboard_port}"]
        else:
            head_args.append("--include-dashboard=false")
        self.head = self._start(head_args, cpus=head_cpus, resources={})

    def _start(self, args: list[str], cpus: int, resources: dict[str, float]) -> Node:
        log = Path(self.temp_dir) / f"node-{len(self.nodes)}.log"
        cmd = [RAY, "start", "--block", f"--num-cpus={cpus}",
               f"--object-store-memory={self.object_store_mb * 1024**2}", "--disable-usage-stats",
               f"--resources={json.dumps(resources)}", *node_port_args(), *args]
        with open(log, "w") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        node = Node(proc, log)
        self.nodes.append(node)
        node.wait_started()
        return node

    def add_node(self, cpus: int = 1, resources: dict[str, float] | None = None) -> Node:
        return self._start([f"--address={self.address}"], cpus=cpus, resources=resources or {})

    def shutdown(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
