"""Spot preemption notices: poll the cloud's termination notice, and drain the node.

AWS announces a spot interruption two minutes ahead at instance metadata
`spot/instance-action` (404 until then); GCE sets `instance/preempted` to TRUE about 30 s
ahead. `url` kinds poll any endpoint that answers 200 with a notice and 404 without one
(used by the tests, and for schedulers that relay notices).
"""

from __future__ import annotations

import ipaddress
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

AWS_URL = "http://169.254.169.254/latest/meta-data/spot/instance-action"
GCE_URL = "http://metadata.google.internal/computeMetadata/v1/instance/preempted"


@dataclass(frozen=True)
class Notice:
    source: str
    detail: str


MAX_BODY = 4096  # a notice is a few bytes; a body beyond this is cut, never kept
_SAFE_WORD = re.compile(r"[A-Za-z0-9:._+-]{1,40}")
# Addresses of instance metadata (credentials live there): reached only through the built-in
# `aws` and `gce` kinds, which read one known path; a `url` notice may not point at them.
_METADATA_HOSTS = {"metadata.google.internal", "metadata", "instance-data", "100.100.100.200"}


def _get(url: str, headers: dict[str, str], timeout: float) -> tuple[int, str]:
    """One GET with one total deadline (a server that answers slowly cannot hold the poller
    past it) and at most MAX_BODY bytes read; (0, "") when the deadline passed."""
    result: list[tuple[int, str]] = []

    def fetch() -> None:
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                result.append((response.status, response.read(MAX_BODY).decode(errors="replace")))
        except urllib.error.HTTPError as err:
            result.append((err.code, ""))
        except (urllib.error.URLError, OSError, ValueError):
            result.append((0, ""))

    worker = threading.Thread(target=fetch, daemon=True)
    worker.start()
    worker.join(timeout)
    return result[0] if result else (0, "")


def _said(text: Any) -> str:
    """A value a notice gives (an action, a time), kept only if it looks like one."""
    text = str(text).strip()
    return text if _SAFE_WORD.fullmatch(text) else "?"


def notice_detail(body: str) -> str:
    """What a notice says, never the body itself: a JSON notice's action and time, or a
    one-word body. Anything else is just "notice" (a body could hold anything, credentials too).

    >>> notice_detail('{"action": "terminate", "time": "2026-11-21T02:14:00Z"}')
    'terminate at 2026-11-21T02:14:00Z'
    >>> notice_detail('{"AccessKeyId": "ASIA...", "SecretAccessKey": "wJalr..."}')
    'notice'
    """
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, dict) and "action" in data:
        return f"{_said(data['action'])} at {_said(data.get('time', '?'))}"
    word = body.strip()
    return word if _SAFE_WORD.fullmatch(word) and not word[0].isdigit() else "notice"


def refuse_metadata_url(url: str) -> None:
    """A `url` notice endpoint may not be a link-local or metadata address; ValueError if it is."""
    host = (urllib.parse.urlsplit(url.replace("{node_id}", "x")).hostname or "").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if host in _METADATA_HOSTS or (address is not None and (address.is_link_local or address == _IMDS_V6)):
        raise ValueError(f"a url notice may not poll {host} (instance metadata, where credentials live); "
                         f"use kind aws or gce for the clouds' own notices")


_IMDS_V6 = ipaddress.ip_address("fd00:ec2::254")


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
            return Notice("aws", notice_detail(body)) if status == 200 and body else None
        if kind == "gce":
            status, body = _get(url or GCE_URL, {"Metadata-Flavor": "Google"}, timeout)
            return Notice("gce", "preempted") if status == 200 and body.strip().upper() == "TRUE" else None
        refuse_metadata_url(url or "")
        status, body = _get((url or "").replace("{node_id}", node_id), {}, timeout)
        return Notice("url", notice_detail(body)) if status == 200 else None
    except (urllib.error.URLError, OSError, ValueError):
        return None  # (a metadata url is refused earlier, by the spec)


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
