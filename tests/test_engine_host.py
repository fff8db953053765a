"""A warm engine actor's call: its units are read while a new engine loads its model (the
batching logic only; tests/test_warm_engines.py runs the real engine)."""

import time
import types

import pyarrow as pa
import pytest

from pipelines.engine import host as engine_host
from pipelines.engine.host import EngineHost


def host_with(monkeypatch, read, load_seconds=0.3):
    host = EngineHost()
    events = []

    def serve(context):
        events.append("load started")
        time.sleep(load_seconds)
        host.engine = types.SimpleNamespace(serve=lambda rows, bound: rows, bound=None)
        events.append("load ended")

    def read_units(batch, spec_data, run_id):
        events.append("read started")
        return read(events)

    monkeypatch.setattr(host, "_serve", serve)
    monkeypatch.setattr(engine_host, "read_units", read_units)
    return host, events


def test_a_units_rows_are_read_while_its_engine_loads(monkeypatch):
    def read(events):
        time.sleep(0.1)
        events.append("read ended")
        return pa.table({"id": ["a"]})

    host, events = host_with(monkeypatch, read)
    assert host.run_units({"read_spec_data": {}, "run_id": "r"}, [{}]).column("id").to_pylist() == ["a"]
    # at once: the load began before the read ended, and the read ended before the load did
    assert events.index("load started") < events.index("read ended") < events.index("load ended"), events


def test_a_read_that_fails_fails_the_call_with_its_own_error(monkeypatch):
    def read(events):
        raise OSError("input shard gone")

    host, _ = host_with(monkeypatch, read, load_seconds=0.0)
    with pytest.raises(OSError, match="input shard gone"):
        host.run_units({"read_spec_data": {}, "run_id": "r"}, [{}])
    assert host.last_work_end is not None  # the call is counted as done
