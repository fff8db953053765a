"""A run's S3 requests, counted in each process where s3fs makes them (cluster/storage_requests.py)
and priced in its ledger beside the engines' dollars: the count is what the wire sees (a counting
proxy in front of loopback S3), and the ledger adds each driver's and each actor's latest count."""

import pytest

from cluster import storage_requests
from pipelines.store.ledger import storage_cost


def as_the_wire_classes_them(counts: dict) -> dict:
    """The proxy sees HTTP methods: a COPY is a PUT, a multipart step a POST (priced as a PUT)."""
    out: dict = {}
    for kind, n in counts.items():
        kind = {"COPY": "PUT", "POST": "PUT"}.get(kind, kind)
        out[kind] = out.get(kind, 0) + n
    return out


@pytest.mark.s3
def test_every_s3_request_is_counted_as_the_wire_sees_it(s3_server):
    import fsspec

    from jobs.bench.s3_requests import S3RequestCounter

    storage_requests.count_s3_requests()  # as a run's driver and engine actors do (importing does not)
    with S3RequestCounter(s3_server["client_kwargs"]["endpoint_url"]) as wire:
        options = {**s3_server, "client_kwargs": {**s3_server["client_kwargs"], "endpoint_url": wire.endpoint},
                   "skip_instance_cache": True}
        fs, _ = fsspec.core.url_to_fs("s3://spotbatch/requests/", **options)
        assert type(fs).__name__ == "CountingS3FileSystem"
        wire.take()
        before = storage_requests.snapshot()
        fs.pipe_file("spotbatch/requests/a.json", b"{}")
        fs.cat_file("spotbatch/requests/a.json")
        fs.ls("spotbatch/requests/")
        fs.invalidate_cache()
        fs.info("spotbatch/requests/a.json")
        fs.copy("spotbatch/requests/a.json", "spotbatch/requests/b.json")
        fs.rm_file("spotbatch/requests/a.json")
        with fs.open("spotbatch/requests/b.json", "rb") as fh:
            fh.read()
        with fs.open("spotbatch/requests/c.bin", "wb") as fh:  # a file's writes go another way in s3fs
            fh.write(b"x" * 1000)
        counted = storage_requests.since(before)
        seen = wire.take()
    assert counted["PUT"] == 2 and counted["COPY"] == 1 and counted["DELETE"] == 1 and counted["LIST"] >= 1
    assert as_the_wire_classes_them(counted) == seen


def test_the_ledger_adds_each_drivers_count_and_each_actors_latest():
    runs = {"r1": {"storage_requests": {"LIST": 3, "GET": 2}}, "r2": {}}
    actors = {"a1": {"storage_requests": {"PUT": 10, "GET": 5}},  # its latest beat
              "a2": {}}  # released warm: no beat count, only its attempts' ends
    attempts = {"u1": {"t1": {"start": {"actor_id": "a1"}, "end": {"storage_requests": {"PUT": 4, "GET": 2}}}},
                "u2": {"t2": {"start": {"actor_id": "a2"}, "end": {"storage_requests": {"PUT": 3}}},
                       "t3": {"start": {"actor_id": "a2"}, "end": {"storage_requests": {"PUT": 6, "HEAD": 1}}},
                       "t4": {"start": {"actor_id": "a2"}}}}  # still open
    cost = storage_cost(runs, actors, attempts)
    assert cost["requests"] == {"GET": 7, "HEAD": 1, "LIST": 3, "PUT": 16}
    # S3 list prices: PUT and LIST $0.005, GET and HEAD $0.0004 per 1,000
    assert cost["usd"] == pytest.approx((16 + 3) * 0.005 / 1000 + (7 + 1) * 0.0004 / 1000)
    assert cost["as_of"] and "S3" in cost["source"]


@pytest.mark.engine
@pytest.mark.s3
def test_a_runs_ledger_prices_the_s3_requests_it_made(tmp_path, s3_server, tiny_model):
    """A run with its input and output on S3, through the counting proxy: its ledger's count is
    the wire's, and `report` shows it beside the engines' dollars."""
    import os
    import subprocess
    import uuid

    import pyarrow as pa
    import pyarrow.parquet as pq
    import s3fs

    from jobs.bench.s3_requests import S3RequestCounter
    from pipelines.store.ledger import compute_ledger
    from pipelines.store.output import OutputStore
    from tests.helpers import ROOT, spotbatch_cmd, write_spec

    with S3RequestCounter(s3_server["client_kwargs"]["endpoint_url"]) as wire:
        options = {**s3_server, "client_kwargs": {**s3_server["client_kwargs"], "endpoint_url": wire.endpoint}}
        fs = s3fs.S3FileSystem(**options)
        prefix = f"s3://spotbatch/{uuid.uuid4().hex[:8]}"
        with fs.open(f"{prefix}/in/part-0.parquet", "wb") as fh:
            pq.write_table(pa.table({"id": list(range(12)), "text": [f"say {i}" for i in range(12)]}), fh)
        spec = write_spec(tmp_path / "spec.yaml", {
            "input": {"paths": f"{prefix}/in/", "prompt_column": "text", "storage_options": options},
            "model": {"name": str(tiny_model), "max_model_len": 256, "enforce_eager": True},
            "compute": {"actors": 1, "tokens_per_unit": 8}, "sampling": {"max_tokens": 4},
            "output": {"path": f"{prefix}/out", "storage_options": options}})
        wire.take()
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "SPOTBATCH_LOG_DIR": str(tmp_path / "logs")}
        proc = subprocess.run(spotbatch_cmd("run", str(spec)), cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        seen = wire.take()
        storage = compute_ledger(OutputStore(f"{prefix}/out", options)).summary.storage
        report = subprocess.run(spotbatch_cmd("report", f"{prefix}/out"), cwd=ROOT, capture_output=True, text=True,
                                env={**env, "AWS_ACCESS_KEY_ID": options["key"], "AWS_DEFAULT_REGION": "us-east-1",
                                     "AWS_SECRET_ACCESS_KEY": options["secret"], "AWS_ENDPOINT_URL": wire.endpoint})
    counted = as_the_wire_classes_them(storage["requests"])
    print(f"counted {counted}, on the wire {seen}")
    for kind in ("GET", "HEAD", "LIST"):  # a multi-object DELETE is a POST on the wire: PUTs are compared in all
        assert 0 < counted[kind] <= seen[kind]
    # Missed: only what a process did after it last wrote its count (the actor's last beat or
    # attempt end, the driver's last run record write).
    assert 0 <= sum(seen.values()) - sum(counted.values()) <= 4, (counted, seen)
    assert storage["usd"] > 0 and "storage: " in report.stdout and "S3 requests" in report.stdout, report.stderr[-2000:]
