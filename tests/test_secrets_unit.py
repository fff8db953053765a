"""No secret is written down, without an engine: a model URL with a password in it (fsspec logs
in with it; a real FTP server on loopback) and a vLLM argument not known to be a setting
(`hf_token`) in a planned run, whose units are committed through the unit protocol with a
stand-in for the engine; then the engine facts, exports and a --retry-failed. Every file under
the output, the exports and the engine-facts file, and the console, are searched for the
secrets (Parquet values included). The same with a real engine: tests/test_secrets.py."""

import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from operators.engine_args import hide_in_engine_logs
from operators.generate import empty_results
from pipelines.engine import facts as engine_facts
from pipelines.planning.inputs import InputError
from pipelines.retry import retry_failed
from pipelines.run import prepare
from pipelines.spec import PipelineSpec
from pipelines.store.output import OutputStore
from pipelines.stream.unit_rows import unit_rows
from pipelines.unit.protocol import UnitContext, UnitProtocol
from spotbatch import export
from tests.conftest import FTP_PASSWORD
from tests.helpers import leaks

TOKEN = "hf_spotbatchLeakTestToken0123456789"
LOADER_KEY = "tensorizer-S3-Secret-Key-abcdef"
SECRETS = [FTP_PASSWORD, TOKEN, LOADER_KEY]


def engine_kwargs() -> dict:
    return {"hf_token": TOKEN, "model_loader_extra_config": {"s3_secret_access_key": LOADER_KEY},
            "max_num_seqs": 8, "gpu_memory_utilization": 0.5}


def echo(batch, cached=None):
    """The engine's stand-in: answers each prompt with itself; a row that failed to render stays an error."""
    prompts, errors = batch.prompts, batch.errors
    cols = empty_results(errors)
    for i, prompt in enumerate(prompts):
        if errors[i] is None:
            cols.update({c: cols[c][:i] + [v] + cols[c][i + 1:] for c, v in
                         (("output", prompt), ("prompt_tokens", 2), ("completion_tokens", 3),
                          ("finish_reason", "stop"), ("served_from", "engine"))})
    return cols


def model_on_ftp(ftp_server) -> str:
    root, url = ftp_server
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text('{"max_position_embeddings": 2048}')
    return f"{url}/model/"


def write_input(tmp_path) -> str:
    folder = tmp_path / "in"
    folder.mkdir()
    texts = [f"say {i}" for i in range(5)] + [None]  # the last row fails: --retry-failed has a row to run
    pq.write_table(pa.table({"id": list(range(6)), "text": texts, "tier": ["a", "b"] * 3}), folder / "part-0.parquet")
    return str(folder)


def run_without_engine(spec: PipelineSpec) -> OutputStore:
    """Plan the run (its manifest written) and commit every unit through the unit protocol."""
    store, plan = prepare(spec)
    for unit in plan.units:
        mine = spec.for_model(unit.model) if unit.model else spec  # a routed unit's engines see their model
        UnitProtocol(UnitContext(mine, fingerprint=plan.fingerprint, run_id="run-1", actor_id="actor-1",
                                 node_id="node-1"), echo, store=store).run(unit.unit_id,
                                                                            unit_rows(unit.descriptor(), spec))
    return store


def test_a_model_url_password_and_engine_secrets_are_written_nowhere(tmp_path, ftp_server, cli_console, capsys):
    model = model_on_ftp(ftp_server)
    out = tmp_path / "out"
    spec = PipelineSpec(input={"paths": write_input(tmp_path), "prompt_column": "text"},
                        model={"name": model, "engine_kwargs": engine_kwargs()}, output={"path": str(out)})
    store = run_without_engine(spec)
    assert store.committed_units() and len(store.committed_units()) == len(store.read_manifest()["units"])
    # What the run's engine actors recorded, as engine_facts reads it after a run.
    actors = {"actor-1": {"run_id": "run-1", "compile": {"enforce_eager": True, "engine_start_seconds": 2.0},
                          "engine": {"completion_tokens": 600, "busy_seconds": 6.0}}}
    engine_facts.remember_run(spec, actors, "run-1")
    assert engine_facts.lookup(spec.model, 0.0)["eager_tokens_per_second"] == 100.0  # kept, and found again
    exports = []
    for fmt, name in (("openai-batch", "batch.jsonl"), ("chat-jsonl", "train.jsonl"),
                      ("pairs-parquet", "pairs.parquet")):
        export(str(out), fmt, str(tmp_path / name))
        exports.append(tmp_path / name)
    with pytest.raises(InputError) as refused:  # the output keeps neither: they are given again
        retry_failed(str(out))
    # Given the URL (printed as what will run) but another token: the model's identity differs.
    with pytest.raises(InputError) as rotated:
        retry_failed(str(out), overrides=[f"model.name={model}", "model.engine_kwargs.hf_token=hf_rotated"])
    console = capsys.readouterr()
    assert not leaks(SECRETS, [out, *exports, engine_facts.facts_path()],
                     {"console": (console.out + console.err + str(refused.value) + str(rotated.value)).encode()})
    assert "model.name" in str(refused.value) and "model.engine_kwargs.hf_token" in str(refused.value)
    assert "what differs from it: model" in str(rotated.value)
    answered_by = {m for p in out.glob("*.parquet") for m in pq.read_table(p).column("model").to_pylist()}
    assert answered_by == {"ftp://<redacted>@" + model.split("@", 1)[1]}  # the results name the model, no password
    manifest = (out / "_spotbatch" / "manifest.json").read_text()
    assert '"max_num_seqs": 8' in manifest and '"hf_token": "<redacted>"' in manifest  # settings stay


def test_routed_models_secrets_are_written_nowhere(tmp_path, ftp_server):
    out = tmp_path / "out"
    spec = PipelineSpec(input={"paths": write_input(tmp_path), "prompt_column": "text"},
                        models={"a": {"name": model_on_ftp(ftp_server), "engine_kwargs": engine_kwargs()},
                                "b": {"name": "tiny-random", "engine_kwargs": {"hf_token": TOKEN}}},
                        route={"column": "tier"}, output={"path": str(out)})
    run_without_engine(spec)
    export(str(out), "openai-batch", str(tmp_path / "batch.jsonl"))
    models = {m for p in out.glob("*.parquet") for m in pq.read_table(p).column("model").to_pylist()}
    assert len(models) == 2 and "tiny-random" in models
    assert not leaks(SECRETS, [out, tmp_path / "batch.jsonl", tmp_path / "batch.errors.jsonl"])


def test_vllm_log_lines_hide_every_argument_not_known_to_be_a_setting():
    """vLLM logs the arguments it was given ("non-default args: {...}"), hiding only those it
    knows to be secret; the engine adapter hides the values of every one not known to be a setting."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(handler.format(record))
    logger = logging.getLogger("vllm.entrypoints.llm")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    factory = logging.getLogRecordFactory()
    try:
        hide_in_engine_logs(engine_kwargs())
        logger.info("non-default args: %s", {"model": "/m", **engine_kwargs()})
    finally:
        logging.setLogRecordFactory(factory)
        logger.removeHandler(handler)
    assert len(lines) == 1 and "'max_num_seqs': 8" in lines[0] and "<redacted>" in lines[0]
    assert not leaks(SECRETS, [], {"log": lines[0].encode()})
