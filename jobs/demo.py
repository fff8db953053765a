"""`spotbatch demo`: sample prompts as Parquet shards, run on a local Ray, show answers."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from jobs.summary import format_summary
from pipelines.run import run
from pipelines.spec import PipelineSpec

COUNTRIES = ["France", "Japan", "Brazil", "Kenya", "Canada", "Italy", "India", "Egypt", "Peru", "Norway"]
TOPICS = ["the ocean", "bread", "trains", "the moon", "bees", "rain", "chess", "maps", "tea", "bridges"]
TASKS = [
    "What is the capital of {country}?",
    "Write one short sentence about {topic}.",
    "Name one famous food from {country}.",
    "Give a one-line fun fact about {topic}.",
]


def sample_prompts(rows: int) -> list[dict]:
    out = []
    for i in range(rows):
        task = TASKS[i % len(TASKS)]
        text = task.format(country=COUNTRIES[i % len(COUNTRIES)], topic=TOPICS[(i // 4) % len(TOPICS)])
        out.append({"id": f"q{i:05d}", "question": text})
    return out


def write_shards(rows: list[dict], folder: Path, shards: int = 4) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(shards):
        part = rows[s::shards]
        path = folder / f"prompts-{s:03d}.parquet"
        pq.write_table(pa.Table.from_pylist(part), path)
        paths.append(str(path))
    return paths


def demo(output: str | None, model: str = "smollm2-135m", rows: int = 240, address: str | None = None) -> int:
    work = Path(tempfile.mkdtemp(prefix="spotbatch-demo-"))
    write_shards(sample_prompts(rows), work / "input")
    out = output or str(work / "output")
    spec = PipelineSpec(
        input={
            "paths": [str(work / "input")],
            "id_column": "id",
            "template": "{question}",
            "system_prompt": "You are a concise assistant. Answer in one sentence.",
        },
        model={"name": model, "max_model_len": 1024, "enforce_eager": True},
        sampling={"max_tokens": 48, "temperature": 0.0},
        output={"path": out},
    )
    print(f"demo: {rows} prompts in 4 shards under {work / 'input'}; model {model}")
    summary = run(spec, address=address)
    table = ds.dataset(out).to_table().sort_by("id")
    questions = {r["id"]: r["question"] for r in sample_prompts(rows)}
    for row in table.slice(0, 4).to_pylist():
        print(f"\nQ: {questions[row['id']]}\nA: {(row['output'] or row['error']).strip()}")
    print()
    print(format_summary(summary))
    return 0 if summary.finished else 1
