"""Training data out, for distillation: one example per answer, every choice of a row that
asked for several.

    chat-jsonl     {"messages": [system, user, assistant]} per finished answer
                   (finish_reason stop only, unless include_truncated)
    pairs-parquet  prompt/response pairs with token counts, one Parquet file
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def answers(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Each choice of a row: text, finish_reason, completion_tokens."""
    return row.get("choices") or [{"text": row["output"], "finish_reason": row["finish_reason"],
                                   "completion_tokens": row["completion_tokens"]}]


def examples(rows: Iterator[tuple[dict, list | None]],
             counts: dict[str, int]) -> Iterator[tuple[dict, list, dict[str, Any]]]:
    """(row, its messages, one answer) for every choice of every answered row; rows that are
    errors, or whose prompt is gone, are counted as skipped."""
    for row, messages in rows:
        counts["rows"] += 1
        if row["error"] is not None or messages is None:
            counts["skipped"] += 1
            continue
        for answer in answers(row):
            yield row, messages, answer


def write_chat_jsonl(out, rows: Iterator[tuple[dict, list | None]], include_truncated: bool,
                     counts: dict[str, int]) -> None:
    for _, messages, answer in examples(rows, counts):
        if answer["finish_reason"] != "stop" and not include_truncated:
            counts["skipped"] += 1  # a cut-off answer teaches a student to stop mid-sentence
            continue
        out.write(json.dumps({"messages": messages + [{"role": "assistant", "content": answer["text"]}]}) + "\n")
        counts["written"] += 1


def write_pairs_parquet(fh, rows: Iterator[tuple[dict, list | None]], id_column: str, counts: dict[str, int]) -> None:
    writer = None
    for row, messages, answer in examples(rows, counts):
        record = {"id": str(row[id_column]), "prompt": json.dumps(messages), "response": answer["text"],
                  "prompt_tokens": row["prompt_tokens"], "completion_tokens": answer["completion_tokens"],
                  "finish_reason": answer["finish_reason"], "model": row["model"]}
        table = pa.Table.from_pylist([record])
        writer = writer or pq.ParquetWriter(fh, table.schema)
        writer.write_table(table)
        counts["written"] += 1
    if writer:
        writer.close()
