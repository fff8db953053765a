"""How a run is planned, top to bottom, before any engine starts.

`plan_run` does, in this order: keep the paths apart, find and pin the models, resolve the input
(a provider's batch files become Parquet), then `prepare`: open the output, list and pin the
input's shards, fingerprint the work, plan the units (or read the plan the output holds) and
write the manifest, refusing an output that holds another run. Everything that can be found
wrong without an engine is found here.
"""

from __future__ import annotations

import logging

from cluster.models import ModelSource, describe_change, identify
from cluster.models.adapters import identify_adapters
from pipelines.planning.embed_check import check_embed, check_request_dimensions
from pipelines.planning.inputs import Shard, check_unique_ids, list_shards
from pipelines.planning.overlap import check_apart
from pipelines.planning.start_over import start_over
from pipelines.planning.units import SINGLE_MODEL, Plan, fingerprint, fingerprint_parts, make_plan
from pipelines.redact import redact_spec, redact_url
from pipelines.spec import PipelineSpec, SpecError
from pipelines.store.output import OutputError, OutputStore

log = logging.getLogger("spotbatch.run")


def plan_run(spec: PipelineSpec, new_run: bool = False) -> tuple[PipelineSpec, OutputStore, Plan]:
    """The run's spec (its input resolved), its output and its plan. No engine is touched."""
    from pipelines.formats.batch_files import resolve_input

    check_apart(spec)  # an output or a cache inside the input (or the reverse), refused by name
    sources = identify_models(spec)
    check_embed(spec, sources)  # embed.dimensions on a model that cannot cut its vectors
    resolved = resolve_input(spec, new_run)
    if (resolved.model, resolved.models) != (spec.model, spec.models):  # an embeddings file's models
        sources = identify_models(resolved)
        check_embed(resolved, sources)
    check_request_dimensions(spec, resolved, sources)  # a batch file's request asking for dimensions the model lacks
    spec = resolved
    store, plan = prepare(spec, new_run=new_run, sources=sources)
    return spec, store, plan


def prepare(spec: PipelineSpec, new_run: bool = False,
            sources: dict[str, dict] | None = None) -> tuple[OutputStore, Plan]:
    """Validate input and output, and load or create the run's plan. No engine is touched.

    An output that holds a run of a different spec (or of other weights under the same model
    name) is refused, naming what changed. With `new_run` the run the output holds, changed or
    not, is moved aside (never deleted, never while its actors work: pipelines/planning/start_over.py)
    and a new run begins."""
    sources = identify_models(spec) if sources is None else sources
    store = OutputStore(spec.output.path, spec.output.storage_options)
    store.check_is_ours()
    shards = list_shards(spec.input)  # each file's version pinned
    parts = fingerprint_parts(spec, shards, sources)
    manifest = manifest_to_keep(store, spec, shards, new_run)
    if manifest is None:
        manifest = write_manifest(store, spec, make_plan(spec, shards, sources))
        refuse_another_run(store, manifest, parts, sources)
    else:
        refuse_another_run(store, manifest, parts, sources)
        store.check_exclusive_create()
        store.pin_fingerprint(manifest["fingerprint"])
    plan = Plan.from_json(manifest)
    plan.models = sources  # the same pins (the fingerprint says so), found afresh
    return store, plan


def manifest_to_keep(store: OutputStore, spec: PipelineSpec, shards: list[Shard], new_run: bool) -> dict | None:
    """The manifest of the run the output holds, to resume; None when a new plan is to be
    written (an empty output, or `new_run`, which moves the held run aside first)."""
    if store.finish_supersede():  # a --new-run that was interrupted: its move is finished first
        log.info("finished moving an earlier run's results aside (an interrupted --new-run)")
    manifest = store.read_manifest()
    if manifest is None or new_run:
        check_unique_ids(spec.input, shards)  # before a new plan is written, or an old run moved aside
    if new_run:
        moved = start_over(store)
        if moved is not None:
            log.info("the earlier run's results were moved to %s", moved)
        return None
    return manifest


def write_manifest(store: OutputStore, spec: PipelineSpec, plan: Plan) -> dict:
    """The new plan written down, once (exclusive create)."""
    store.check_exclusive_create()  # exactly-once rests on it: checked before the first write that counts
    # The spec as it is written down keeps no secret (pipelines/redact.py).
    return store.create_manifest({**plan.to_json(), "spec": redact_spec(spec.model_dump(mode="json"))})


def refuse_another_run(store: OutputStore, manifest: dict, parts: dict[str, str], sources: dict[str, dict]) -> None:
    """An output whose manifest is of other work (another spec, input or weights) is refused,
    naming what differs."""
    if manifest["fingerprint"] == fingerprint(parts):
        return
    # a part only some runs have (adapters, embed) counts when either side has it
    changed = [k for k in [*parts, *(k for k in manifest["parts"] if k not in parts)]
               if manifest["parts"].get(k) != parts.get(k)]
    weights = [describe_change(old, ModelSource.from_json(sources[name]))
               for name, old in manifest.get("models", {}).items()
               if name in sources and old.get("pin") != sources[name]["pin"]]
    raise OutputError(
        f"output path {store.url} holds another run's results; what differs from it: "
        f"{', '.join(changed)}{''.join(f'. {w}' for w in weights)}. Use a new output path, or --new-run "
        f"to move its results aside and start over."
    )


def identify_models(spec: PipelineSpec) -> dict[str, dict]:
    """Every model the spec names, found and pinned (cluster/models): a typo, a repo not in an
    offline cache or a URL with no model stops the run here, before anything is written."""
    named = spec.models.items() if spec.routed else [(SINGLE_MODEL, spec.model)]
    for name, model in named:
        check_compile_cache(model, f"models.{name}" if name else "model")
    sources = {name: identify(model, redact_url(model.name), field=f"models.{name}" if name else "model").to_json()
               for name, model in named}
    return {**sources, **identify_adapters(spec.model)}  # the adapters' pins, beside their model's


def check_compile_cache(model, field: str) -> None:
    """A shared compile cache an engine may use must be readable now, not found unreadable on
    every node after the run has started (where it would only be reported)."""
    from pipelines.engine.compile_cache import SharedCompileCache
    from pipelines.redact import redact_message

    cache = model.compile_cache
    if cache is None or model.enforce_eager is True:  # eager engines never compile
        return
    try:
        SharedCompileCache(cache.path, cache.storage_options).check()
    except Exception as err:
        raise SpecError(f"{field}.compile_cache.path: cannot list {redact_url(cache.path)}: "
                        f"{err.__class__.__name__}: {redact_message(str(err), cache.storage_options)[:300]}") from None
