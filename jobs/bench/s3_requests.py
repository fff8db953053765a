"""S3 on loopback for tests and benchmarks: a moto_server with a bucket `spotbatch`, and a
counting proxy in front of an S3 endpoint, which counts what a piece of code really asks of S3
by request class as S3 prices them (LIST, GET, PUT, HEAD, DELETE), on the wire, so s3fs's own
extra requests (a HEAD before a read, a retry) count too.

    with moto_server() as endpoint, S3RequestCounter(endpoint) as counter:
        ... use counter.endpoint as the S3 endpoint ...
        counter.take()  # {"PUT": 12, "GET": 30, "LIST": 4, ...}
"""

from __future__ import annotations

import http.client
import http.server
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

BUCKET = "spotbatch"


@contextmanager
def moto_server() -> Iterator[str]:
    """A real S3 endpoint on loopback (moto_server, a test dependency), with the bucket BUCKET,
    stopped by PID; yields its URL."""
    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("moto_server did not start")
            time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
        boto3.client("s3", endpoint_url=endpoint, **creds).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def storage_options(endpoint: str) -> dict:
    """fsspec (s3fs) options for the loopback endpoint."""
    return {"key": "testing", "secret": "testing",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


def request_class(method: str, path: str) -> str:
    """LIST for a listing (a GET of a bucket, with list-type or prefix), else the method.

    >>> request_class("GET", "/bucket?list-type=2&prefix=out/")
    'LIST'
    >>> request_class("GET", "/bucket/out/part-1.parquet")
    'GET'
    >>> request_class("POST", "/bucket/key?uploads")
    'PUT'
    """
    url = urlsplit(path)
    query = parse_qs(url.query, keep_blank_values=True)
    if method == "GET" and ("list-type" in query or "prefix" in query or url.path.strip("/").count("/") == 0):
        return "LIST"
    if method == "POST":  # multipart upload steps, and multi-object delete, are priced as PUTs
        return "PUT"
    return method


class S3RequestCounter:
    def __init__(self, endpoint: str):
        target = urlsplit(endpoint)
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        counter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with counter._lock:
                    counter.counts[request_class(self.command, self.path)] += 1
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                reply = conn.getresponse()
                data = reply.read()
                self.send_response(reply.status, reply.reason)
                for k, v in reply.getheaders():
                    if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                # A HEAD has no body, and its Content-Length is the object's size: pass it on
                length = reply.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> S3RequestCounter:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def take(self) -> dict[str, int]:
        """The counts so far, and start again from zero."""
        with self._lock:
            counts, self.counts = dict(self.counts), Counter()
        return counts
