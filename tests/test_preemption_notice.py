"""Reading the clouds' termination notices, against a local metadata server."""

import http.server
import json
import threading
import time

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


@pytest.fixture
def awkward_server():
    """A notice endpoint that answers slowly (a byte a second), with a huge body, or with
    credentials where a notice should be."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            if self.path == "/slow":
                for _ in range(30):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(1)
            elif self.path == "/huge":
                self.wfile.write(b"y" * 10_000_000)
            elif self.path == "/credentials":
                self.wfile.write(json.dumps({"Code": "Success", "AccessKeyId": "ASIAEXAMPLE",
                                             "SecretAccessKey": "wJalrXUtnFEMI-secret", "Token": "tok"}).encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_a_slow_endpoint_cannot_hold_the_poll_past_its_deadline(awkward_server):
    started = time.monotonic()
    assert check_notice("url", f"{awkward_server}/slow", "n1", timeout=1.0) is None
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("path", ["/huge", "/credentials"])
def test_a_notice_keeps_what_it_says_never_the_body(awkward_server, path):
    notice = check_notice("url", f"{awkward_server}{path}", "n1", timeout=5.0)
    assert notice is not None and notice.detail == "notice"
    assert "secret" not in repr(notice) and "ASIA" not in repr(notice) and len(repr(notice)) < 100


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/iam/security-credentials/role",
                                 "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts",
                                 "http://[fe80::1]/x", "http://[fd00:ec2::254]/latest/"])
def test_a_url_notice_may_not_point_at_instance_metadata(url):
    from pipelines.spec import SpecError, validate_spec

    with pytest.raises(SpecError, match="instance metadata"):
        validate_spec({"input": {"paths": "in", "prompt_column": "t"}, "output": {"path": "out"},
                       "compute": {"preemption_notice": {"kind": "url", "url": url}}})
    assert check_notice("url", url, "n1", timeout=0.2) is None  # refused without a request
