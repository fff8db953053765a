"""Results in the formats other tools read, written unit by unit (memory stays per unit).

    openai-batch   the provider's batch output lines (pipelines/openai_batch.py), failed rows
                   in a separate errors file: `<to>` and `<to minus .jsonl>.errors.jsonl`
    chat-jsonl     training data for distillation: {"messages": [system, user, assistant]}
                   per answered row (finish_reason stop only, unless all=True)
    pairs-parquet  prompt/response pairs with token counts, one Parquet file

A destination that exists is refused: an export never overwrites anything.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from operators.prompts import chat_messages
from pipelines.openai_batch import output_line
from pipelines.store.output import OutputError, OutputStore
from pipelines.inputs import list_shards
from pipelines.new_file import new_file
from pipelines.plan import Plan, fingerprint_parts
from pipelines.redact import credentials_hint, describe, output_options, recorded_spec, redact_url
from pipelines.spec import PipelineSpec
from pipelines.unit_rows import ID, PROMPT, unit_rows

FORMATS = ("openai-batch", "chat-jsonl", "pairs-parquet")


def _rows(store: OutputStore, spec: PipelineSpec, plan: Plan) -> Iterator[tuple[dict[str, Any], list[dict] | None]]:
    """(result row, the chat messages it answered) for every row, unit by unit."""
    inp = spec.input
    for unit in plan.units:
        results = store.read_unit(unit.unit_id).to_pylist()
        source = unit_rows(unit.descriptor(), spec)  # the prompts as the run rendered them
        by_id = dict(zip(source.column(ID).to_pylist(), source.column(PROMPT).to_pylist()))
        for row in results:
            prompt = by_id.get(row[inp.id_column])
            if prompt is None:
                yield row, None
                continue
            yield row, chat_messages(prompt, inp.system_prompt, inp.format)


def export(output: str, fmt: str, to: str, include_truncated: bool = False,
           storage_options: dict[str, Any] | None = None, overrides: list[str] | None = None,
           partial: bool = False) -> dict[str, int]:
    """Write the export; returns counts of what went where. The output's own spec says where
    the prompts are; credentials come from `overrides` (`--set`) and the environment, never
    from the output. An unfinished run is refused unless `partial`."""
    if fmt not in FORMATS:
        raise OutputError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    overrides = overrides or []
    store = OutputStore(output, storage_options or output_options(overrides))
    manifest = store.require_manifest()
    spec, plan = recorded_spec(manifest["spec"], overrides), Plan.from_json(manifest)
    print(f"spotbatch: reading prompts as the output's own spec says: {describe(spec)}")
    missing = {u.unit_id for u in plan.units} - store.committed_units()
    if missing and not partial:
        raise OutputError(f"{redact_url(output)} is not finished ({len(missing)} of {len(plan.units)} units "
                          f"pending): run it to the end, or export what is there with --partial")
    plan.units = [u for u in plan.units if u.unit_id not in missing]
    # Prompts are read again from the input: never pair new prompts with old answers.
    with credentials_hint(manifest["spec"]):
        now = fingerprint_parts(spec, list_shards(spec.input))["input files"]
    if now != manifest["parts"]["input files"]:
        paths = ", ".join(redact_url(p) for p in spec.input.paths)
        raise OutputError(f"the input of {redact_url(output)} changed since its run ({paths}): an "
                          f"export would pair today's prompts with the answers to the old ones. Restore the "
                          f"input, or run the spec again with --new-run.")
    fs, path = url_to_fs(to)
    errors_path = (path[: -len(".jsonl")] if path.endswith(".jsonl") else path) + ".errors.jsonl"
    for p in (path, errors_path) if fmt == "openai-batch" else (path,):
        if fs.exists(p):
            raise OutputError(f"{fs.unstrip_protocol(p)} exists; an export never overwrites: choose a new name")
    try:
        return _write(store, spec, plan, fmt, fs, path, errors_path, include_truncated)
    except FileExistsError:
        raise OutputError(f"{fs.unstrip_protocol(path)} was created by another export while this one ran; "
                          f"an export never overwrites: choose a new name") from None


def _write(store: OutputStore, spec: PipelineSpec, plan: Plan, fmt: str, fs, path: str, errors_path: str,
           include_truncated: bool) -> dict[str, int]:
    counts = {"rows": 0, "written": 0, "errors": 0, "skipped": 0}
    id_col = spec.input.id_column
    if fmt == "pairs-parquet":
        writer = None
        with new_file(fs, path, text=False) as fh:
            for row, messages in _rows(store, spec, plan):
                counts["rows"] += 1
                if row["error"] is not None or messages is None:
                    counts["skipped"] += 1
                    continue
                record = {"id": str(row[id_col]), "prompt": json.dumps(messages), "response": row["output"],
                          "prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"],
                          "finish_reason": row["finish_reason"], "model": row["model"]}
                table = pa.Table.from_pylist([record])
                writer = writer or pq.ParquetWriter(fh, table.schema)
                writer.write_table(table)
                counts["written"] += 1
            if writer:
                writer.close()
        return counts
    created = int(time.time())
    with new_file(fs, path) as out, (new_file(fs, errors_path) if fmt == "openai-batch" else _Null()) as err:
        for row, messages in _rows(store, spec, plan):
            counts["rows"] += 1
            if fmt == "openai-batch":
                # the model that answered the row (a routed run has several; spec.model is then unused)
                line, failed = output_line(str(row[id_col]), row, row["model"], created)
                (err if failed else out).write(json.dumps(line) + "\n")
                counts["errors" if failed else "written"] += 1
                continue
            done = row["error"] is None and messages is not None
            if not done or (row["finish_reason"] != "stop" and not include_truncated):
                counts["skipped"] += 1  # a cut-off answer teaches a student to stop mid-sentence
                continue
            out.write(json.dumps({"messages": messages + [{"role": "assistant", "content": row["output"]}]}) + "\n")
            counts["written"] += 1
    return counts




class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, _: str) -> None:
        pass
