"""`import spotbatch`, the public API: it costs nothing to import (no Ray, no vLLM, no torch, no
fsspec filesystem registered), its functions give what the CLI prints, and every error it raises
on purpose is a SpotbatchError whose class decides the CLI's exit code."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import spotbatch
from jobs.cli import main
from spotbatch import errors
from tests.helpers import ROOT
from tests.helpers import spotbatch as spotbatch_cli

HEAVY = ("ray", "vllm", "torch", "s3fs")


def imports_in_a_fresh_process(statement: str) -> dict:
    """What `statement` leaves imported, and whether it changed fsspec's registry of filesystems."""
    check = f"""
import json, sys
import fsspec
registry = sys.modules["fsspec.registry"]
before = (json.dumps(registry.known_implementations, sort_keys=True), sorted(registry._registry))
{statement}
after = (json.dumps(registry.known_implementations, sort_keys=True), sorted(registry._registry))
print(json.dumps({{"heavy": [m for m in {HEAVY!r} if m in sys.modules], "registry_changed": before != after}}))
"""
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_spotbatch_imports_no_engine_and_registers_no_filesystem():
    seen = imports_in_a_fresh_process("import spotbatch; print(spotbatch.__all__)")
    assert seen == {"heavy": [], "registry_changed": False}


def test_importing_the_internals_registers_no_filesystem():
    """A library must not change fsspec for the program that imports it; a run counts its S3
    requests by registering when it starts (tests/test_storage_requests.py)."""
    seen = imports_in_a_fresh_process("import cluster, pipelines, pipelines.run, pipelines.formats.export, jobs.cli")
    assert seen["registry_changed"] is False


def test_every_public_name_resolves_and_every_error_is_a_spotbatch_error():
    for name in spotbatch.__all__:
        assert getattr(spotbatch, name) is not None
        assert name in dir(spotbatch)
    classes = [getattr(errors, n) for n in dir(errors) if isinstance(getattr(errors, n), type)]
    assert all(issubclass(c, errors.SpotbatchError) for c in classes if c.__module__ == "spotbatch.errors")
    assert {c.__name__ for c in classes} <= set(spotbatch.__all__)
    assert spotbatch.Spec.from_yaml is not None and spotbatch.RunHandle.__name__ == "RunHandle"


def test_the_old_import_paths_name_the_same_classes():
    """Code that catches an error by its old path, or by its built-in base, still catches it."""
    from cluster.models import ModelChangedError, ModelNotFoundError
    from cluster.prices import PriceError
    from operators.feeder import EngineFailed
    from pipelines.planning.inputs import InputError
    from pipelines.spec import SpecError
    from pipelines.store.output import OutputError, StorageError

    assert (SpecError, InputError, OutputError, StorageError, PriceError, EngineFailed, ModelNotFoundError,
            ModelChangedError) == (errors.SpecError, errors.InputError, errors.OutputError, errors.StorageError,
                                   errors.PriceError, errors.EngineFailed, errors.ModelNotFoundError,
                                   errors.ModelChangedError)
    assert issubclass(errors.SpecError, ValueError) and issubclass(errors.StorageError, OSError)
    assert issubclass(errors.BatchFileError, errors.InputError) and issubclass(errors.EngineFailed, RuntimeError)


def test_a_spec_from_yaml_or_a_dict_and_its_errors(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"input": {"paths": "in/", "prompt_column": "text"}, "output": {"path": "o/"}}))
    spec = spotbatch.Spec.from_yaml(path, overrides=["sampling.max_tokens=7"], output=str(tmp_path / "elsewhere"))
    assert spec.sampling.max_tokens == 7 and spec.output.path == str(tmp_path / "elsewhere")
    with pytest.raises(spotbatch.SpecError, match="sampling.temprature is not a known field"):
        spotbatch.Spec.model_validate({"input": {"paths": "in/", "prompt_column": "text"}, "output": {"path": "o/"},
                                       "sampling": {"temprature": 0.5}})
    with pytest.raises(spotbatch.SpecError, match="spec file not found"):
        spotbatch.Spec.from_yaml(tmp_path / "nope.yaml")


@pytest.fixture
def stopped_output(tmp_path, tiny_model):
    """An output holding a planned run of three rows, stopped by a deadline before any engine."""
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"id": [1, 2, 3], "text": ["a", "b", "c"]}), tmp_path / "in" / "part-0.parquet")
    spec = spotbatch.Spec.model_validate({
        "input": {"paths": str(tmp_path / "in"), "prompt_column": "text"},
        "model": {"name": str(tiny_model), "max_model_len": 256}, "compute": {"deadline": "0s"},
        "output": {"path": str(tmp_path / "out")}})
    summary = spotbatch.run(spec)
    assert summary.stopped == "deadline" and not summary.finished
    return spec.output.path


def test_status_and_report_are_what_the_cli_prints_as_json(stopped_output):
    status = spotbatch_cli("status", stopped_output, "--json")
    assert status.returncode == 0, status.stderr[-2000:]
    assert json.loads(status.stdout) == spotbatch.status(stopped_output)
    assert spotbatch.status(stopped_output)["rows_total"] == 3
    report = spotbatch_cli("report", stopped_output, "--json")
    assert report.returncode == 0, report.stderr[-2000:]
    assert json.loads(report.stdout) == json.loads(json.dumps(spotbatch.report(stopped_output)))
    assert spotbatch.cancel(stopped_output) == []  # no run works on it


def test_a_user_error_exits_2_by_its_class_with_its_message(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"input": {"paths": str(tmp_path / "missing"), "prompt_column": "text"},
                                    "model": {"name": "tiny-random"}, "output": {"path": str(tmp_path / "o")}}))
    assert main(["status", str(tmp_path)]) == errors.OutputError.exit_code == 2  # in process: status renices nothing
    assert "no spotbatch run at" in capsys.readouterr().err
    for path, cls, says in [(tmp_path / "nope.yaml", errors.SpecError, "spec file not found"),
                            (spec, errors.InputError, "missing")]:
        proc = spotbatch_cli("run", str(path))
        assert proc.returncode == cls.exit_code == 2, proc.stderr[-2000:]
        assert says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_a_batch_line_that_cannot_run_is_a_batch_file_error_naming_its_line(tmp_path):
    (tmp_path / "batch.jsonl").write_text('{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", '
                                          '"body": {"messages": [{"role": "user", "content": "hi"}]}}\nnot json\n')
    spec = spotbatch.Spec.model_validate({
        "input": {"paths": str(tmp_path / "batch.jsonl"), "kind": "openai_batch"},
        "model": {"name": "tiny-random"}, "output": {"path": str(tmp_path / "out")}})
    with pytest.raises(spotbatch.BatchFileError, match=r"batch.jsonl line 2: not JSON") as caught:
        spotbatch.run(spec)
    assert isinstance(caught.value, spotbatch.InputError) and caught.value.exit_code == 2


@pytest.mark.parametrize("cls", [errors.StorageError, errors.EngineFailed, errors.RunFailed, errors.PriceError,
                                 errors.ModelChangedError, errors.BatchFileError])
def test_the_cli_exit_code_follows_the_class(cls, tmp_path, capsys, monkeypatch):
    """Whatever a command raises of spotbatch's errors ends it with the class's code and its
    message, no traceback: a run that could not finish 1, a user's mistake 2."""
    import jobs.cli

    def fails(args):
        raise cls("what went wrong")

    monkeypatch.setattr(jobs.cli, "_status", fails)
    assert main(["status", str(tmp_path)]) == cls.exit_code == (2 if issubclass(cls, errors.UserError) else 1)
    assert capsys.readouterr().err == "spotbatch: error: what went wrong\n"


def test_an_engine_that_did_not_start_reaches_the_caller_as_engine_failed():
    """Ray keeps only the text of an error in an engine actor's constructor (ActorDiedError): the
    run raises it again as the class callers catch, with the engine's reason."""
    from pipelines.engine.failure import engine_start_failure

    ray_said = RuntimeError("The actor died because of an error raised in its creation task\nTraceback ...\n"
                            "spotbatch.errors.EngineFailed: the engine did not start: ValueError('max_model_len "
                            "100000000 is past the model's 8192')\nmore")
    failure = engine_start_failure(ray_said)
    assert isinstance(failure, spotbatch.EngineFailed) and isinstance(failure, spotbatch.RunFailed)
    assert str(failure).startswith("the engine did not start: ValueError('max_model_len 100000000")
    assert engine_start_failure(RuntimeError("a node was lost")) is None
