"""How a run hears it must stop (no engine): `spotbatch cancel` from another process, the
deadline, and an interrupt, each through the run's stop record (pipelines/stops/stopping.py)."""

import os
import signal
import threading
import time

import pytest

import pipelines.stops.stopping as stopping
from pipelines.stops.control import RunControl
from pipelines.stops.stopping import CANCELLED, DEADLINE, StopWatch, cancel
from pipelines.store.output import OutputError, OutputStore
from pipelines.store.records import Records


@pytest.fixture
def output(tmp_path, monkeypatch):
    monkeypatch.setattr(stopping, "POLL_SECONDS", 0.05)
    store = OutputStore(str(tmp_path / "out"))
    store.create_manifest({"fingerprint": "f", "units": []})
    return store


def test_cancel_asks_only_runs_that_have_not_ended(output):
    records = Records(output)
    records.run_record("ended", {"started_at": 1.0, "ended_at": 2.0, "stopped": None})
    records.run_record("working", {"started_at": 3.0, "ended_at": None, "stopped": None})
    assert cancel(output.url) == ["working"]
    assert records.stop_requested("working") == CANCELLED and records.stop_requested("ended") is None


def test_cancel_of_a_folder_with_no_run_is_refused_by_name(tmp_path):
    with pytest.raises(OutputError, match="no spotbatch run"):
        cancel(str(tmp_path / "nothing"))


def wait_for(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_the_driver_hears_a_cancel_from_another_process_once(output):
    records = Records(output)
    records.run_record("r1", {"started_at": time.time(), "ended_at": None})
    heard = []
    watch = StopWatch(records, "r1", on_stop=heard.append)
    with watch.watching():
        time.sleep(0.2)
        assert heard == []  # nothing asked yet
        cancel(output.url)  # as `spotbatch cancel` does, from anywhere
        assert wait_for(lambda: heard == [CANCELLED])
        time.sleep(0.2)
    assert heard == [CANCELLED] and watch.reason == CANCELLED


def test_a_cancel_that_lands_between_two_polls_is_heard_when_the_run_ends(output, monkeypatch):
    monkeypatch.setattr(stopping, "POLL_SECONDS", 3600.0)  # no poll in time: only the last look sees it
    records = Records(output)
    heard = []
    with StopWatch(records, "r4", on_stop=heard.append, deadline=lambda: True).watching():
        records.request_stop("r4", CANCELLED)  # the actors heard it and took no unit: the run ends at once
    assert heard == [CANCELLED]  # and not "deadline": a finished run's last look checks no deadline


def test_a_deadline_writes_the_stop_the_actors_read(output):
    records = Records(output)
    heard = []
    passed = threading.Event()
    watch = StopWatch(records, "r2", on_stop=heard.append, deadline=passed.is_set)
    with watch.watching():
        time.sleep(0.2)
        assert records.stop_requested("r2") is None
        passed.set()
        assert wait_for(lambda: records.stop_requested("r2") == DEADLINE)
    assert heard == [DEADLINE]


def test_the_first_interrupt_cancels_and_the_second_abandons(output):
    records = Records(output)
    heard = []
    watch = StopWatch(records, "r3", on_stop=heard.append)
    with pytest.raises(KeyboardInterrupt):
        with watch.watching():
            os.kill(os.getpid(), signal.SIGINT)
            assert wait_for(lambda: records.stop_requested("r3") == CANCELLED)
            assert heard == [CANCELLED]
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the signal is delivered here
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_two_interrupts_handled_back_to_back_abandon(output):
    """While the main thread waits inside a call (on Ray), both interrupts' handlers run one
    after the other when it returns, before the first one's stop has run on its thread: the
    second still abandons, it is not a second cancel."""
    watch = StopWatch(Records(output), "r4", on_stop=lambda reason: None)
    with watch.watching():
        with pytest.raises(KeyboardInterrupt), watch._lock:  # the first one's stop has not run yet
            watch._interrupted(signal.SIGINT, None)
            watch._interrupted(signal.SIGINT, None)


def test_the_cancel_command_names_the_runs_it_asked(output, capsys):
    from jobs.cli import main

    Records(output).run_record("working", {"started_at": 3.0, "ended_at": None})
    assert main(["cancel", output.url]) == 0
    said = capsys.readouterr().out
    assert "asked 1 run(s) working on" in said and "working" in said and "exits 4" in said
    assert Records(output).stop_requested("working") == CANCELLED


@pytest.mark.parametrize("asked", ["before the run watches", "while it watches", "after it ended"])
def test_a_stop_asked_in_process_reaches_the_run_whenever_it_is_asked(output, asked):
    records = Records(output)
    records.run_record("r1", {"started_at": time.time()})
    heard = []
    request = RunControl()
    watch = StopWatch(records, "r1", on_stop=heard.append)
    if asked == "before the run watches":
        request.stop()
    with watch.watching():
        request.attach(watch)
        if asked == "while it watches":
            request.stop()
    request.detach()
    if asked == "after it ended":
        request.stop()
        assert heard == [] and records.stop_requested("r1") is None  # an ended run is left as it ended
    else:
        assert heard == [CANCELLED] and records.stop_requested("r1") == CANCELLED
