"""The console's routing, without an engine: lines Ray forwards from the actors go to the file
(spotbatch's own and engine faults are shown too), Ray Data's driver lines go to the file, and
Ray's forwarding is given back as it was."""

import logging

from cluster.console import Console


def test_worker_lines_are_filed_and_only_faults_and_our_own_are_shown(tmp_path, monkeypatch, capsys):
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


def test_verbose_leaves_everything_where_ray_prints_it(tmp_path, monkeypatch, capsys):
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    monkeypatch.setenv("SPOTBATCH_LOG_DIR", str(tmp_path))
    before = list(dispatcher.handlers)
    with Console("r2", verbose=True) as console:
        console.capture_workers()
        assert dispatcher.handlers == before
    assert console.path is None and not list(tmp_path.iterdir())
    assert "logs:" not in capsys.readouterr().out
