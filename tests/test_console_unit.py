"""The console's routing, without an engine: lines Ray forwards from the actors go to the file
(spotbatch's own and engine faults are shown too), Ray Data's driver lines go to the file, and
Ray's forwarding is given back as it was."""

import logging
import os
import time

from cluster import console as console_module
from cluster.console import Console


def test_worker_lines_are_filed_and_only_faults_and_our_own_are_shown(tmp_path, monkeypatch, cli_console, capsys):
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    monkeypatch.setenv("SPOTBATCH_LOG_DIR", str(tmp_path))
    before = list(dispatcher.handlers)
    with Console("r1", verbose=False) as console:
        console.capture_workers()
        dispatcher.emit({"pid": 7, "actor_name": "MapWorker", "is_err": True, "lines": [
            "INFO 11-29 [core.py:133] Initializing a V1 LLM engine with model='/models/spotbatch/x'",
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
            "spotbatch: unit 00001-u: storage_error while committing the unit (try 1 of 3)",
        ]})
        logging.getLogger("ray.data._internal.execution.streaming_executor").info("Execution plan of Dataset")
    shown = capsys.readouterr()
    assert f"Ray's and vLLM's logs: {console.path}" in shown.out
    assert "Initializing a V1 LLM engine" not in shown.out + shown.err  # a path with "spotbatch" in it is not ours
    assert "Execution plan" not in shown.out + shown.err
    assert "spotbatch: an engine actor says: torch.OutOfMemoryError: CUDA out of memory" in shown.err
    assert "spotbatch: unit 00001-u: storage_error" in shown.err
    filed = console.path.read_text()
    assert "(MapWorker pid=7) INFO 11-29 [core.py:133] Initializing a V1 LLM engine" in filed
    assert "OutOfMemoryError" in filed and "Execution plan of Dataset" in filed
    assert dispatcher.handlers == before


def test_verbose_leaves_everything_where_ray_prints_it(tmp_path, monkeypatch, cli_console, capsys):
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    monkeypatch.setenv("SPOTBATCH_LOG_DIR", str(tmp_path))
    before = list(dispatcher.handlers)
    with Console("r2", verbose=True) as console:
        console.capture_workers()
        assert dispatcher.handlers == before
    assert console.path is None and not list(tmp_path.iterdir())
    assert "logs:" not in capsys.readouterr().out


def test_old_logs_and_those_past_the_newest_few_are_pruned_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOTBATCH_LOG_DIR", str(tmp_path))
    monkeypatch.setattr(console_module, "KEEP_LOGS", 3)
    now = time.time()
    ages = {"20261001T020000Z-aa.log": 40, "20261120T020000Z-bb.log": 9, "20261121T020000Z-cc.log": 8,
            "20261122T020000Z-dd.log": 7, "20261123T020000Z-ee.log": 6, "notes.log": 90, "20261001T020000Z-x.txt": 90}
    for name, days in ages.items():
        (tmp_path / name).write_text(name)
        os.utime(tmp_path / name, (now - days * 86400, now - days * 86400))
    with Console("r3", verbose=False) as console:
        pass
    left = sorted(p.name for p in tmp_path.iterdir())
    # the new run's, the two newest before it, and what spotbatch did not name
    assert left == sorted(["20261122T020000Z-dd.log", "20261123T020000Z-ee.log", console.path.name,
                           "notes.log", "20261001T020000Z-x.txt"])
