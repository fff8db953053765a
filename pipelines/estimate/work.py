"""The work a spec holds, measured before a run: rows, units, prompt tokens counted with the
model's own tokenizer and chat template (operators/tokens.py, as the engine counts them), rows
the dedup would answer, and the output tokens to expect.

The plan is made as `run` makes it (pipelines/planning/units.py), in memory: nothing is written to the
output, and no engine or Ray starts. An input of more than `sample_rows` rows is sampled in
slices spread evenly over it; the prompt tokens are then the rows times the mean of the rows
read, with the 95% error of that mean (slices as clusters: rows next to each other are alike).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from operators.tokens import PromptForm, prompt_token_ids, template_kwargs, text_token_ids
from pipelines.cache.response_cache import request_key
from pipelines.engine import facts as engine_facts
from pipelines.planning.inputs import list_shards
from pipelines.planning.units import SINGLE_MODEL, Unit, make_plan
from pipelines.spec import PipelineSpec, sampling_identity
from pipelines.stream.unit_rows import ERROR, MAX_TOKENS, PROMPT, SAMPLING, unit_rows

SAMPLE_ROWS = 20_000  # an input this size or smaller is read whole: its counts are exact
SLICE_ROWS = 50  # rows read together when sampling
ASSUMED_OUTPUT_RATIO = 0.5  # without a measured ratio: answers use half their max_tokens (an assumption)
Z95 = 1.96


@dataclass
class Work:
    rows: int  # the input's
    units: int  # the plan's
    units_done: int  # committed already in the output (a resume runs the rest)
    rows_pending: int
    rows_read: int  # rows whose prompts were rendered and tokenized
    exact: bool  # every pending row was read
    prompt_tokens: int  # of the pending rows (estimated from the rows read when not exact)
    prompt_tokens_error: int  # 95% error of that from sampling (0 when exact)
    rows_refused: int  # rows read that become error records (no prompt, a bad row limit)
    duplicate_rows: int  # rows read the dedup would answer (cache.dedup)
    engine_prompt_tokens: int  # prompt tokens of the requests the engine gets (duplicates once)
    allowed_output_tokens: int  # the most the pending rows may generate (Unit.decode_tokens)
    output_ratio: float  # of that, the share expected
    output_ratio_source: str
    output_tokens: int  # expected from the engine
    # (prompt tokens, max_tokens, n) of each row read that the engine would get, in order: the
    # rows the estimate simulates an engine's batching on (pipelines/estimate/batching.py)
    row_shapes: list[tuple[int, int, int]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "row_shapes"}


def measure_work(spec: PipelineSpec, sample_rows: int = SAMPLE_ROWS) -> Work:
    """The work of `spec`'s pending units: all, or where the output holds this run already,
    those it has not committed (read only: nothing is written)."""
    shards = list_shards(spec.input)
    sources = model_sources(spec)
    plan = make_plan(spec, shards, sources)
    committed = _committed(spec, plan.fingerprint)
    pending = [u for u in plan.units if u.unit_id not in committed]
    rows_pending = sum(u.rows for u in pending)
    read = _read(spec, sample_slices(pending, sample_rows), sources)
    exact = read["rows"] == rows_pending
    per_row, error = _mean_and_error(read["slices"], rows_pending)
    prompt_tokens = read["tokens"] if exact else round(per_row * rows_pending)
    # The dedup's share is known for the rows read; scaled to the rest it is a guess, so a
    # sampled estimate leaves the rest's duplicates out (more engine work, never less).
    engine_prompt = read["engine_tokens"] if exact else prompt_tokens - read["tokens"] + read["engine_tokens"]
    allowed = sum(u.decode_tokens or 0 for u in pending)
    ratio, ratio_source = _output_ratio(spec)
    engine_share = 1 - read["duplicates"] / max(1, read["rows"])
    return Work(
        rows=plan.input_rows, units=len(plan.units), units_done=len(plan.units) - len(pending),
        rows_pending=rows_pending, rows_read=read["rows"], exact=exact, prompt_tokens=prompt_tokens,
        prompt_tokens_error=0 if exact else round(error), rows_refused=read["refused"],
        duplicate_rows=read["duplicates"], engine_prompt_tokens=engine_prompt, allowed_output_tokens=allowed,
        output_ratio=ratio, output_ratio_source=ratio_source,
        output_tokens=round(allowed * ratio * (engine_share if exact else 1.0)), row_shapes=read["shapes"])


def with_measured_ratio(work: Work, spec: PipelineSpec) -> Work:
    """The same work with the output ratio the engine facts hold now (after a calibration run)."""
    ratio, source = _output_ratio(spec)
    scaled = work.output_tokens * ratio / work.output_ratio if work.output_ratio else work.allowed_output_tokens * ratio
    return replace(work, output_ratio=ratio, output_ratio_source=source, output_tokens=round(scaled))


def _committed(spec: PipelineSpec, planned: str) -> set[str]:
    """The units the output has committed of this same run; an output holding another run's is
    refused, as `run` refuses it (OutputError)."""
    from pipelines.store.output import OutputError, OutputStore

    store = OutputStore(spec.output.path, spec.output.storage_options)
    manifest = store.read_manifest()
    if manifest is None:
        return set()
    if manifest["fingerprint"] != planned:
        raise OutputError(f"output path {store.url} holds another run's results: `run` would refuse it. Estimate "
                          f"with a new output path, or run with --new-run to move its results aside")
    return store.committed_units()


def model_sources(spec: PipelineSpec) -> dict[str, dict]:
    """Every model the spec names, found and pinned, as `run` finds them (cluster/models)."""
    from pipelines.planning.plan_run import identify_models

    return identify_models(spec)


def sample_slices(units: list[Unit], sample_rows: int, slice_rows: int = SLICE_ROWS) -> list[Unit]:
    """The units whole, or when they hold more than `sample_rows` rows, slices of `slice_rows`
    rows at even steps over them (the first at a half step, so no end is favoured)."""
    total = sum(u.rows for u in units)
    if total <= sample_rows:
        return units
    count = max(2, sample_rows // slice_rows)
    step = total / count
    slices, offset, i = [], 0, 0
    for unit in units:
        while i < count and (i + 0.5) * step < offset + unit.rows:
            at = unit.start + int((i + 0.5) * step - offset)
            at = min(at, max(unit.start, unit.stop - slice_rows))
            slices.append(replace(unit, start=at, stop=min(unit.stop, at + slice_rows),
                                  count=None if unit.count is None else min(unit.count, slice_rows)))
            i += 1
        offset += unit.rows
    return slices


def _read(spec: PipelineSpec, units: list[Unit], sources: dict[str, dict]) -> dict[str, Any]:
    """Render and tokenize the rows of `units`, as the read stage and the engine would."""
    from pipelines.engine.decode_work import context_tokens

    tokenizers: dict[str | None, Any] = {}
    contexts: dict[str | None, int] = {}  # each model's context, the room a row's output has
    seen: set[str] = set()
    found = {"rows": 0, "tokens": 0, "engine_tokens": 0, "refused": 0, "duplicates": 0, "slices": [], "shapes": []}
    for unit in units:
        model_spec = spec.for_model(unit.model).model if unit.model else spec.model
        if unit.model not in tokenizers:
            tokenizers[unit.model] = load_tokenizer(model_spec, sources[unit.model or SINGLE_MODEL])
            contexts[unit.model] = context_tokens(model_spec)
        rows = unit_rows(unit.descriptor(), spec)
        tokens = 0
        for prompt, _error, own_max, own in zip(*(rows.column(c).to_pylist() for c in (PROMPT, ERROR, MAX_TOKENS,
                                                                                         SAMPLING))):
            if prompt is None:
                found["refused"] += 1
                continue
            n = _token_count(spec, model_spec, tokenizers[unit.model], prompt, own)
            if n is None:  # an embedding longer than the context: an error record
                found["refused"] += 1
                continue
            tokens += n
            key = _dedup_key(spec, unit.model, prompt, own_max, own)
            if key is not None and key in seen:
                found["duplicates"] += 1
                continue
            if key is not None:
                seen.add(key)
            found["engine_tokens"] += n
            found["shapes"].append(_shape(spec, contexts[unit.model], n, own_max, own))
        found["rows"] += rows.num_rows
        found["tokens"] += tokens
        found["slices"].append((rows.num_rows, tokens))
    return found


def _token_count(spec: PipelineSpec, model_spec, tokenizer: Any, prompt: str, own: str | None) -> int | None:
    """A row's prompt tokens as its engine counts them: a generation's in its chat form, with its
    tools and template variables (the run's, or the row's own sampling); an embedding's text with
    the model's special tokens (operators/embed.py), None when longer than the context and not cut
    (the run makes it an error record)."""
    if spec.task != "embed":
        sampling = json.loads(own) if own else spec.sampling.model_dump(mode="json")
        form = PromptForm(spec.input.system_prompt, spec.input.format)
        return len(prompt_token_ids(tokenizer, prompt, form, model_spec.chat_template,
                                    template_kwargs(model_spec.chat_template_kwargs, sampling)))
    from pipelines.engine.decode_work import context_tokens

    context = context_tokens(model_spec)
    cut = spec.embed.truncate_prompt_tokens
    n = len(text_token_ids(tokenizer, prompt, None if cut is None else context if cut == -1 else min(cut, context)))
    return None if n > context else n


def _shape(spec: PipelineSpec, context: int, prompt_tokens: int, own_max: int | None,
           own: str | None) -> tuple[int, int, int]:
    """(prompt tokens, max_tokens, n) of a row as the engine gets it (operators/generate.py): its
    own max_tokens, else its sampling's (its own or the run's), else up to the context; never more
    than the room its prompt leaves (pipelines/engine/decode_work.py); and its sampling's choices."""
    sampling = json.loads(own) if own else spec.sampling.model_dump(mode="json")
    room = max(1, context - prompt_tokens)
    return prompt_tokens, min(own_max or sampling.get("max_tokens") or room, room), sampling.get("n") or 1


def _dedup_key(spec: PipelineSpec, model: str | None, prompt: str, own_max: int | None, own: str | None) -> str | None:
    """The key the run's dedup names a request by (pipelines/unit/requests.py UnitRequests.keys);
    None when the dedup is off or the request is never shared."""
    if not spec.cache.dedup:
        return None
    if spec.task == "embed":
        return request_key(model or "", prompt, None, spec.input.format, {"task": "embed", **spec.embed.identity()})
    sampling = json.loads(own) if own else spec.sampling.model_dump(mode="json")
    return request_key(model or "", prompt, spec.input.system_prompt, spec.input.format,
                       sampling_identity({**sampling, "max_tokens": own_max or sampling["max_tokens"]}))


def load_tokenizer(model, source: dict) -> Any:
    """The model's own tokenizer, from the folder its engines load (model.engine_kwargs may
    name another, as vLLM's `tokenizer`)."""
    from transformers import AutoTokenizer

    from cluster.models.source import ModelSource
    from cluster.models.tokenizer_files import tokenizer_folder

    folder = tokenizer_folder(model, ModelSource.from_json(source))  # never the weights
    return AutoTokenizer.from_pretrained(str(model.engine_kwargs.get("tokenizer") or folder))


def _mean_and_error(slices: list[tuple[int, int]], rows: int) -> tuple[float, float]:
    """Prompt tokens per row over the slices read, and the 95% error of `rows` times it (a
    ratio estimator over the slices as clusters, with the finite-population correction)."""
    read = sum(n for n, _ in slices)
    if not read:
        return 0.0, 0.0
    mean = sum(t for _, t in slices) / read
    k = len(slices)
    if k < 2 or read >= rows:
        return mean, 0.0
    spread = sum((t - mean * n) ** 2 for n, t in slices) / (k - 1)
    se_mean = math.sqrt(spread / k) / (read / k) * math.sqrt(1 - read / rows)
    return mean, Z95 * se_mean * rows


def _output_ratio(spec: PipelineSpec) -> tuple[float, str]:
    """The share of max_tokens this model's earlier runs used (engine facts), else the assumption."""
    if spec.task == "embed":
        return 0.0, "none: an embedding makes no output tokens"
    kept = engine_facts.lookup(spec.model, spec.compute.gpus_per_actor).get("output_ratio")
    if kept and not spec.routed:
        return kept["ratio"], (f"measured: run {kept['run_id']} generated {kept['generated_tokens']:,} of "
                               f"{kept['allowed_tokens']:,} tokens allowed")
    return ASSUMED_OUTPUT_RATIO, (f"assumption: answers use {ASSUMED_OUTPUT_RATIO:.0%} of their max_tokens "
                                  f"(no run of this model has measured it on this machine)")
