"""Spot preemption notices: poll the cloud's termination notice, and drain the node.

AWS announces a spot interruption two minutes ahead at instance metadata
`spot/instance-action` (404 until then); GCE sets `instance/preempted` to TRUE about 30 s
ahead. `url` kinds poll any endpoint that answers 200 with a notice and 404 without one
(used by the tests, and for schedulers that relay notices).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

AWS_URL = "http://169.254.169.254/latest/meta-data/spot/instance-action"
GCE_URL = "http://metadata.google.internal/computeMetadata/v1/instance/preempted"


@dataclass(frozen=True)
class Notice:
    source: str
    detail: str


def _get(url: str, headers: dict[str, str], timeout: float) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, ""


def _aws_token(url: str, timeout: float) -> dict[str, str]:
    """IMDSv2 session token header from the same metadata host; empty (IMDSv1) where none is issued."""
    token_url = url.split("/latest/", 1)[0] + "/latest/api/token"
    request = urllib.request.Request(token_url, method="PUT",
                                     headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return {"X-aws-ec2-metadata-token": response.read().decode()}
    except (urllib.error.URLError, OSError):
        return {}


def check_notice(kind: str, url: str | None, node_id: str, timeout: float = 1.0) -> Notice | None:
    """A notice if the node is about to be taken, else None. Never raises for an unreachable
    endpoint: no answer is no notice."""
    try:
        if kind == "aws":
            url = url or AWS_URL
            status, body = _get(url, _aws_token(url, timeout), timeout)
            if status == 200 and body:
                action = json.loads(body)
                return Notice("aws", f"{action.get('action')} at {action.get('time')}")
            return None
        if kind == "gce":
            status, body = _get(url or GCE_URL, {"Metadata-Flavor": "Google"}, timeout)
            return Notice("gce", "preempted") if status == 200 and body.strip().upper() == "TRUE" else None
        status, body = _get((url or "").replace("{node_id}", node_id), {}, timeout)
        return Notice("url", body.strip() or "notice") if status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def drain_this_node(reason: str, deadline_seconds: float) -> bool:
    """Ask Ray to place no new work on this node (it is going away); True if accepted."""
    import ray
    from ray.core.generated import autoscaler_pb2

    ctx = ray.get_runtime_context()
    client = ray._raylet.GcsClient(address=ctx.gcs_address)
    deadline_ms = int((time.time() + deadline_seconds) * 1000)
    accepted, _ = client.drain_node(ctx.get_node_id(), autoscaler_pb2.DrainNodeReason.Value(
        "DRAIN_NODE_REASON_PREEMPTION"), reason, deadline_ms)
    return bool(accepted)
