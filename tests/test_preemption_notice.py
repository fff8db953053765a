"""Reading the clouds' termination notices, against a local metadata server."""

import http.server
import json
import threading

import pytest

from cluster.preemption import check_notice
from tests.ray_nodes import free_port


@pytest.fixture
def metadata():
    """A metadata server whose answers the test sets: path -> (status, body)."""
    answers: dict[str, tuple[int, str]] = {}
    seen: list[tuple[str, str, dict]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
            status, body = answers.get(self.path, (404, ""))
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body.encode())

        do_GET = do_PUT = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", answers, seen
    server.shutdown()


def test_aws_spot_instance_action_with_an_imdsv2_token(metadata):
    base, answers, seen = metadata
    url = f"{base}/latest/meta-data/spot/instance-action"
    answers["/latest/api/token"] = (200, "tok")
    assert check_notice("aws", url, "n1") is None  # 404: no interruption scheduled
    answers["/latest/meta-data/spot/instance-action"] = (200, json.dumps(
        {"action": "terminate", "time": "2026-11-21T02:14:00Z"}))
    notice = check_notice("aws", url, "n1")
    assert notice.source == "aws" and notice.detail == "terminate at 2026-11-21T02:14:00Z"
    assert seen[-1][2].get("x-aws-ec2-metadata-token") == "tok"


def test_gce_preempted_flag(metadata):
    base, answers, seen = metadata
    url = f"{base}/computeMetadata/v1/instance/preempted"
    answers["/computeMetadata/v1/instance/preempted"] = (200, "FALSE")
    assert check_notice("gce", url, "n1") is None
    answers["/computeMetadata/v1/instance/preempted"] = (200, "TRUE")
    assert check_notice("gce", url, "n1").detail == "preempted"
    assert seen[-1][2].get("metadata-flavor") == "Google"


def test_url_kind_fills_the_node_id(metadata):
    base, answers, _ = metadata
    answers["/notice/abc"] = (200, "terminate")
    assert check_notice("url", f"{base}/notice/{{node_id}}", "abc").detail == "terminate"
    assert check_notice("url", f"{base}/notice/{{node_id}}", "xyz") is None


def test_an_unreachable_endpoint_is_no_notice():
    assert check_notice("url", f"http://127.0.0.1:{free_port()}/notice", "n1", timeout=0.5) is None
