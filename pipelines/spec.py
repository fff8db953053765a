"""The pipeline spec: one validated object, from YAML or from Python.

Every field has a description; every invalid value is reported as `section.field must be ...,
got VALUE` before any cluster or engine starts.

>>> spec = PipelineSpec(input={"paths": "data/*.parquet", "prompt_column": "text"},
...                     output={"path": "out/"})
>>> spec.sampling.max_tokens
256
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.formats.json_text import NotJSON, check_json_value, load_json
from spotbatch.errors import SpecError  # noqa: F401 (its home; importable from here as before)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


BATCH_KINDS = ("openai_batch", "anthropic_batch")


class InputSpec(_Section):
    paths: list[str] = Field(
        description="Parquet files, folders or glob patterns; local paths or s3:// URLs."
    )
    kind: Literal["parquet", "openai_batch", "anthropic_batch"] = Field(
        "parquet", description="openai_batch, anthropic_batch: paths are the provider's batch JSONL files "
        "(pipelines/formats/); every request field is honoured or refused by name, and they are read into "
        "Parquet in the output folder first.",
    )
    id_column: str = Field("id", description="Column that names each row; copied to the output.")
    prompt_column: str | None = Field(None, description="Column holding the prompt text.")
    template: str | None = Field(
        None, description="Prompt built from columns, Python format style: 'Summarize: {text}'."
    )
    system_prompt: str | None = Field(None, description="System message sent with every prompt (chat format).")
    max_tokens_column: str | None = Field(
        None, description="Column giving each row its own max_tokens (null: sampling.max_tokens), as "
        "provider batch files do.",
    )
    sampling_column: str | None = Field(
        None, description="Column giving each row its own sampling: a JSON object (or a struct) of any "
        "`sampling` fields, over the run's; invalid overrides make that row an error record.",
    )
    format: Literal["chat", "raw", "messages"] = Field(
        "chat", description="chat: apply the model's chat template; raw: send the text as it is; "
        "messages: the prompt column holds a JSON list of chat messages.",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options for the input file system (e.g. S3 endpoint)."
    )

    @field_validator("paths", mode="before")
    @classmethod
    def _one_path_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("paths")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must name at least one path")
        return value

    @model_validator(mode="before")
    @classmethod
    def _batch_file_columns(cls, data: Any) -> Any:
        """A provider batch file always has the same columns once read (pipelines/formats/)."""
        if isinstance(data, dict) and data.get("kind") in BATCH_KINDS:
            data = {"id_column": "custom_id", "prompt_column": "messages", "format": "messages",
                    "sampling_column": "sampling", **data}
        return data

    @model_validator(mode="after")
    def _one_prompt_source(self) -> InputSpec:
        if (self.prompt_column is None) == (self.template is None):
            raise ValueError("set exactly one of prompt_column or template")
        if self.template is not None:
            template_columns(self.template)  # raises on a malformed template
        return self

    def columns_read(self) -> list[str]:
        """Input columns the pipeline reads, id first."""
        if self.prompt_column is not None:
            prompt_cols = [self.prompt_column]
        else:
            prompt_cols = template_columns(self.template or "")
        extra = [c for c in (self.max_tokens_column, self.sampling_column) if c]
        return [self.id_column] + [c for c in prompt_cols + extra if c != self.id_column]


def template_columns(template: str) -> list[str]:
    """The column names a template refers to, in order of first use."""
    names: list[str] = []
    try:
        for _, field, _spec, _conv in string.Formatter().parse(template):
            if field is None:
                continue
            if field == "" or not field.isidentifier():
                raise ValueError(f"template fields must name a column, like {{text}}; got {{{field}}}")
            if field not in names:
                names.append(field)
    except ValueError as err:
        raise ValueError(f"template is not valid: {err}") from None
    if not names:
        raise ValueError("template must refer to at least one column, like {text}")
    return names


class CompileCacheSpec(_Section):
    path: str = Field(description="A folder (s3://, gs://, a shared file system) holding the engines' compile "
                      "caches (vLLM's and torch inductor's) for every node: a new node loads what another "
                      "compiled (pipelines/engine/compile_cache.py).")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options for the folder; "
                                            "never written down.")


class ModelSpec(_Section):
    name: str = Field(
        "smollm2-135m", description="A built-in name (smollm2-135m, tiny-random), a local folder, a hub repo id "
        "(org/name), or a folder's URL (s3://bucket/prefix/, gs://...). See the docs' Models guide "
        "(docs/guide/models.md).",
    )
    revision: str | None = Field(
        None, description="Hub repo ids: a branch, tag or commit (default main), pinned to a commit at planning."
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="URL folders: fsspec options (endpoint, credentials); never written down."
    )
    chat_template: str | None = Field(
        None, description="A Jinja chat template, or a file holding one, used instead of the tokenizer's own."
    )
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra variables for the chat template, e.g. {enable_thinking: false}."
    )
    dtype: str = Field("auto", description="Weights dtype passed to vLLM: auto, bfloat16, float16, float32.")
    max_model_len: int | None = Field(
        2048, gt=0, description="Context length; prompts longer than this become error records."
    )
    quantization: str | None = Field(None, description="vLLM quantization method (awq, gptq, fp8, ...).")
    enforce_eager: bool | None = Field(
        None, description="true: skip graph compilation (faster start, slower steps); false: compile. Unset: "
        "chosen per run by the decoding work ahead of each engine against the compile cost "
        "(pipelines/engine/compile_choice.py), and recorded in each engine actor's record.",
    )
    compile_seconds: float | None = Field(
        None, gt=0, description="What compiling costs an engine at start, if known (else what earlier runs "
        "measured, else 45 s on CPU, 60 s on GPU); weighs the choice when enforce_eager is unset.",
    )
    eager_tokens_per_second: float | None = Field(
        None, gt=0, description="An eager engine's output tokens/s, if known (else what earlier runs measured, "
        "else 100 on CPU, 2,000 on GPU); weighs the choice when enforce_eager is unset.",
    )
    compile_cache: CompileCacheSpec | None = Field(
        None, description="Where the fleet's nodes share what their engines compiled, e.g. a folder beside the "
        "model (s3://bucket/models/llama-ft-compiled/); a URL alone, or {path, storage_options}. Unset: each node "
        "keeps its own, on its disk.",
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Other vllm.LLM arguments, passed through unchanged."
    )

    @field_validator("compile_cache", mode="before")
    @classmethod
    def _compile_cache_url(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @field_validator("chat_template")
    @classmethod
    def _template_file_is_read(cls, value: str | None) -> str | None:
        """A template is Jinja; anything else names a file, read here, on the driver, so the
        template travels with the spec to every node and into the run's fingerprint."""
        if value is None or "{{" in value or "{%" in value:
            return value
        path = Path(value).expanduser()
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(
                f"is neither a Jinja template nor a readable file: {path} ({err.__class__.__name__})") from err
        if "{{" not in text and "{%" not in text:
            raise ValueError(f"the file {path} holds no Jinja template")
        return text


STRUCTURED_KINDS = ("choice", "regex", "grammar", "json")


class SamplingSpec(_Section):
    """How to sample: the whole run's (`sampling`), and any row's own (`input.sampling_column`,
    or a provider batch file's request body), with OpenAI's names and meanings."""

    max_tokens: int | None = Field(256, gt=0, lt=2**63, description="Most tokens generated per row (per choice); null: "
                                   "up to the model's context, as the providers do when it is not given.")
    temperature: float = Field(0.0, ge=0, le=2, description="0 is greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    seed: int | None = Field(0, ge=-2**63, lt=2**63, description="Sampling seed, per request, so reruns answer "
                             "alike (a 64-bit integer, as vLLM's server takes).")
    stop: list[str] = Field(default_factory=list, description="Strings that end generation (not in the output).")
    top_k: int | None = Field(None, ge=1, description="Sample from the k most likely tokens only (null: all).")
    min_p: float = Field(0.0, ge=0, le=1, description="Drop tokens less likely than min_p times the likeliest.")
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="OpenAI's: penalise tokens already present.")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="OpenAI's: penalise tokens by their count.")
    repetition_penalty: float = Field(1.0, gt=0, le=2, description="vLLM's: > 1 discourages repeats.")
    n: int = Field(1, ge=1, le=128, description="Choices per row; the result's `choices` holds them all.")
    logprobs: bool = Field(False, description="Return each generated token's log probability (`logprobs`).")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="With logprobs: this many likeliest "
                                     "alternatives per token.")
    response_format: dict[str, Any] | None = Field(
        None, description="OpenAI's: {type: json_object}, or {type: json_schema, json_schema: {name, schema, "
        "strict}}; the answer is constrained to it (vLLM structured outputs)."
    )
    structured: dict[str, Any] | None = Field(
        None, description="vLLM's structured outputs: {choice: [...]}, {regex: ...}, {grammar: ...} (EBNF) or "
        "{json: schema}."
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else [] if value is None else value

    @field_validator("response_format")
    @classmethod
    def _openai_response_format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        kind = value.get("type")
        if kind == "text":
            return None  # the default: free text
        if kind == "json_object":
            if set(value) != {"type"}:
                raise ValueError(f"type json_object takes no other field, got {sorted(set(value) - {'type'})}")
            return value
        if kind != "json_schema":
            raise ValueError(f"type must be text, json_object or json_schema, got {kind!r}")
        extra = sorted(set(value) - {"type", "json_schema"})
        schema = value.get("json_schema")
        if extra or not isinstance(schema, dict):
            raise ValueError(f"type json_schema needs a json_schema object{f', not {extra}' if extra else ''}")
        unknown = sorted(set(schema) - {"name", "schema", "strict", "description"})
        if unknown:
            raise ValueError(f"json_schema.{unknown[0]} is not a json_schema field (name, schema, strict, description)")
        if not isinstance(schema.get("name"), str) or not isinstance(schema.get("schema"), dict):
            raise ValueError("json_schema needs a name (string) and a schema (a JSON Schema object)")
        return value

    @field_validator("structured")
    @classmethod
    def _one_structure(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        if len(value) != 1 or next(iter(value)) not in STRUCTURED_KINDS:
            raise ValueError(f"takes exactly one of {', '.join(STRUCTURED_KINDS)}, got {sorted(value)}")
        (kind, rule), = value.items()
        ok = {"choice": isinstance(rule, list) and bool(rule) and all(isinstance(c, str) for c in rule),
              "json": isinstance(rule, dict)}.get(kind, isinstance(rule, str) and bool(rule))
        if not ok:
            wanted = {"choice": "a non-empty list of strings", "json": "a JSON Schema object"}.get(kind, "a string")
            raise ValueError(f"{kind} must be {wanted}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SamplingSpec:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true (as at OpenAI)")
        if self.response_format is not None and self.structured is not None:
            raise ValueError("set response_format or structured, not both")
        return self

    def identity(self) -> dict[str, Any]:
        return sampling_identity(self.model_dump(mode="json"))


FIRST_SAMPLING_FIELDS = ("max_tokens", "temperature", "top_p", "seed", "stop")
LATER_DEFAULTS = {k: f.get_default(call_default_factory=True) for k, f in SamplingSpec.model_fields.items()
                  if k not in FIRST_SAMPLING_FIELDS}


def sampling_identity(sampling: dict[str, Any]) -> dict[str, Any]:
    """What of a sampling decides an answer: every field, leaving out those added later while
    they hold their defaults, so outputs and caches made before them still match."""
    return {k: v for k, v in sampling.items() if k in FIRST_SAMPLING_FIELDS or v != LATER_DEFAULTS.get(k)}


class PreemptionNoticeSpec(_Section):
    kind: Literal["aws", "gce", "url"] = Field(description="aws: spot instance-action; gce: preempted flag; url: any.")
    url: str | None = Field(None, description="Endpoint to poll instead of the cloud's default; {node_id} is filled.")
    poll_seconds: float = Field(2.0, gt=0, description="How often each engine actor polls.")
    window_seconds: float = Field(120.0, gt=0, description="Time from notice to termination (AWS: 120, GCE: 30).")

    @model_validator(mode="after")
    def _url_kind_needs_a_url(self) -> PreemptionNoticeSpec:
        if self.kind == "url" and not self.url:
            raise ValueError("kind url needs a url")
        if self.kind == "url":
            from cluster.preemption import refuse_metadata_url

            refuse_metadata_url(self.url)
        return self


class ComputeSpec(_Section):
    actors: int | None = Field(1, gt=0, description="A fixed number of engine actors.")
    min_actors: int | None = Field(None, gt=0, description="Autoscaling lower bound (with max_actors).")
    max_actors: int | None = Field(None, gt=0, description="Autoscaling upper bound (with min_actors).")
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs Ray reserves for each engine actor.")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs per engine actor; 0 runs the engine on CPU.")
    engine_threads: int | None = Field(
        None, gt=0, description="CPU engines: threads the engine computes with (default: the node's cores)."
    )
    accelerator_type: str | None = Field(None, description="Ray accelerator type, e.g. A10G, L4, H100.")
    spot_resource: str | None = Field(
        None, description="Custom Ray resource that marks spot nodes; engine actors are pinned to them."
    )
    resources: dict[str, float] = Field(default_factory=dict, description="Other custom resources per actor.")
    tokens_per_unit: int = Field(
        100_000, gt=0, description="Estimated prompt tokens per work unit (the unit of commit and retry)."
    )
    units_in_flight: int | None = Field(
        None, gt=0, description="Work units an engine actor may hold at once. A held unit starts only when "
        "the engine's queue runs low, so the next unit is fed while the last one's tail decodes, and a "
        "lost node loses only started units. Default: enough units to fill the engine's running set "
        "(model.engine_kwargs.max_num_seqs, vLLM's 256 if unset) twice, at least 2; 2 with a budget "
        "(cost.max_cost_usd), which can only stop units not yet started.",
    )
    max_tokens_in_flight: int | None = Field(
        None, gt=0, description="Token budget per engine: the KV of the requests it runs at their worst "
        "(prompt and max_tokens, in whole KV blocks, a prompt prefix shared with another request counted "
        "once); default: what its KV cache holds, so the engine never has to preempt a request.",
    )
    request_timeout_seconds: float | None = Field(
        None, gt=0, description="A request not finished this long after its unit started is an error "
        "record of class timeout.",
    )
    wait_for_other_runs_seconds: float = Field(
        3600.0, ge=0, description="How long a run waits, at its end, for units that a live actor of another "
        "run on the same output is generating; units still held then stay pending for the next run.",
    )
    max_attempts: int = Field(
        4, gt=0, description="Attempts at a unit that may fail (engine died) or be lost (node preempted) "
        "before its rows are written as error records (engine_error, preempted_exhausted) instead.",
    )
    preemption_notice: PreemptionNoticeSpec | None = Field(
        None, description="Watch for spot termination notices and drain the node when one comes."
    )
    keep_warm_seconds: float | None = Field(
        None, ge=0, description="How long engine actors stay loaded after a run, for the next run in the same "
        "driver (a notebook, a Python process) with the same model, engine settings and resources; then they "
        "are released. Default: 300 in an interactive Python (a notebook, a REPL), 0 elsewhere (the CLI, "
        "`ray job submit`, nightly runs). spotbatch.release_engines() lets them go at once.",
    )
    deadline: str | None = Field(
        None, description="When the run must be done: a UTC time of day (\"06:00\", the next one after the run "
        "starts) or a duration from its start (\"3h\", \"90m\", \"1h30m\"). The run takes no unit that its "
        "measured unit time says would end past it, commits those in flight, and exits 4 (stopped: deadline); "
        "the same command resumes.",
    )

    @field_validator("deadline")
    @classmethod
    def _deadline(cls, value: str | None) -> str | None:
        from pipelines.stops.deadline import check_deadline

        return None if value is None else check_deadline(value)

    @model_validator(mode="after")
    def _fixed_or_range(self) -> ComputeSpec:
        if (self.min_actors is None) != (self.max_actors is None):
            raise ValueError("set both min_actors and max_actors, or neither")
        if self.min_actors is not None and self.max_actors is not None and self.min_actors > self.max_actors:
            raise ValueError(f"min_actors must be <= max_actors, got {self.min_actors} > {self.max_actors}")
        return self


class NodeGroupCost(_Section):
    instance_type: str = Field(description="Instance type of this group's nodes (a price catalog name).")
    market: str = Field("on_demand", description="on_demand, spot or reserved.")


class ReferencePrice(_Section):
    name: str = Field(description="What is compared, e.g. a provider's batch API for a model.")
    usd_per_1m_input_tokens: float = Field(ge=0, description="Its price per 1M input tokens.")
    usd_per_1m_output_tokens: float = Field(ge=0, description="Its price per 1M output tokens.")
    as_of: str = Field(description="The date of that price.")


class CostSpec(_Section):
    instance_type: str = Field(
        "cpu-2vcpu",
        description="Instance type of nodes that do not say (node label spotbatch.io/instance-type, "
        "or node_groups by the ray.io/node-group label).",
    )
    market: str = Field(
        "on_demand",
        description="Market of nodes that do not say (label ray.io/market-type); nodes that carry "
        "compute.spot_resource are spot.",
    )
    node_groups: dict[str, NodeGroupCost] = Field(
        default_factory=dict, description="Instance type and market per Ray node group."
    )
    prices: dict[str, dict[str, float | str]] = Field(
        default_factory=dict,
        description="Price overrides, $/hour: {instance_type: {spot: 0.31, spot_source: '...'}}.",
    )
    reference: ReferencePrice | None = Field(None, description="A price per 1M tokens to compare with.")
    max_cost_usd: float | None = Field(
        None, gt=0, description="Stop admitting units once spent plus projected cost would pass this."
    )

    @model_validator(mode="after")
    def _priced(self) -> CostSpec:
        from cluster.prices import PriceCatalog, PriceError

        try:
            catalog = PriceCatalog.load(overrides=self.prices)
            catalog.quote(self.instance_type, self.market)
            for group in self.node_groups.values():
                catalog.quote(group.instance_type, group.market)
        except PriceError as err:
            raise ValueError(str(err)) from None
        return self


class OutputSpec(_Section):
    path: str = Field(description="Folder for results, local or s3://.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options for the output file system."
    )


class CacheSpec(_Section):
    path: str | None = Field(
        None, description="Response cache shared across runs, local or s3://: identical requests "
        "(model, prompt, system prompt, sampling, seed) are answered from it at no engine cost.",
    )
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options for the cache.")
    dedup: bool = Field(True, description="Generate identical requests once within a run.")
    write: bool = Field(True, description="Add this run's answers to the cache (with path).")


class RouteSpec(_Section):
    column: str = Field(description="Input column whose value picks each row's model.")
    map: dict[str, str] = Field(
        default_factory=dict, description="Column value -> a model's name in `models`. A value with no "
        "entry that is itself a name in `models` picks that model.",
    )
    default: str | None = Field(
        None, description="Model for rows whose value picks none (null, or unknown). Without it, such "
        "rows are refused before the run starts, naming the values.",
    )


class PipelineSpec(_Section):
    """A batch: what to read, which model answers, how to sample, where results go (`spotbatch.Spec`).

    >>> spec = PipelineSpec.model_validate({"input": {"paths": "prompts/", "prompt_column": "text"},
    ...                                     "model": {"name": "smollm2-135m"}, "output": {"path": "out/"}})
    >>> spec.model.name, spec.sampling.max_tokens
    ('smollm2-135m', 256)
    """

    input: InputSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    models: dict[str, ModelSpec] = Field(
        default_factory=dict, description="Named models that `route` sends rows to (instead of `model`). "
        "A model's engine actors start when its rows' turn comes and are released when they are done; "
        "a model no row is routed to never starts.",
    )
    route: RouteSpec | None = Field(None, description="How rows are routed to `models`.")
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    compute: ComputeSpec = Field(default_factory=ComputeSpec)
    cost: CostSpec = Field(default_factory=CostSpec)
    cache: CacheSpec = Field(default_factory=CacheSpec)
    output: OutputSpec

    # From plain data (YAML's, or a dict in Python) an invalid spec is a SpecError naming every
    # problem (spotbatch/errors.py). Not from keywords, PipelineSpec(input=...): an __init__ of our
    # own would be called inside pydantic's validation, and its error wrapped again.
    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> PipelineSpec:
        """A spec from plain data (a dict, as YAML reads), or a SpecError listing every problem.

        >>> PipelineSpec.model_validate({"input": {"paths": "in/", "prompt_column": "text"},
        ...                              "output": {"path": "out/"}, "sampling": {"max_tokens": -3, "tempreature": 1}})
        Traceback (most recent call last):
        spotbatch.errors.SpecError: invalid spec:
          sampling.max_tokens must be > 0, got -3
          sampling.tempreature is not a known field
        """
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as err:
            raise spec_error(err) from None

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None,
                  output: str | None = None) -> PipelineSpec:
        r"""A spec read from a YAML file as `spotbatch run` reads it: `overrides` are `--set`'s
        dotted.key=value texts, `output` replaces output.path; a SpecError names what is wrong.

        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "spec.yaml"
        >>> _ = path.write_text("input: {paths: data/, prompt_column: text}\noutput: {path: out/}\n")
        >>> PipelineSpec.from_yaml(path, overrides=["sampling.max_tokens=64"]).sampling.max_tokens
        64
        >>> PipelineSpec.from_yaml(path, overrides=["sampling.max_tokens=0"])
        Traceback (most recent call last):
        spotbatch.errors.SpecError: invalid spec:
          sampling.max_tokens must be > 0, got 0
        """
        return load_spec(path, overrides=overrides, output=output)

    @model_validator(mode="before")
    @classmethod
    def _batch_requests_name_their_model(cls, data: Any) -> Any:
        """With `models`, a provider batch file's requests pick theirs by the model they name."""
        if isinstance(data, dict) and data.get("models") and data.get("route") is None \
                and isinstance(data.get("input"), dict) and data["input"].get("kind") in BATCH_KINDS:
            data = {**data, "route": {"column": "model"}}
        return data

    @model_validator(mode="after")
    def _routes_name_models(self) -> PipelineSpec:
        if bool(self.models) != (self.route is not None):
            raise ValueError("models and route go together: route rows to named models, or use model alone")
        if self.route is None:
            return self
        for name in self.models:
            if not name or not all(c.isalnum() or c in "_.-" for c in name):
                raise ValueError(f"model names may hold letters, digits, _ . and -; got {name!r}")
        unknown = sorted({m for m in [*self.route.map.values(), self.route.default] if m and m not in self.models})
        if unknown:
            raise ValueError(f"route names models that models does not define: {', '.join(unknown)}; "
                             f"defined: {', '.join(self.models)}")
        return self

    @property
    def routed(self) -> bool:
        return self.route is not None

    def for_model(self, name: str) -> PipelineSpec:
        """This spec with `model` set to one of the routed models, as its engine actors see it."""
        return self.model_copy(update={"model": self.models[name]})


_RULES = {
    "greater_than": "must be > {gt:g}",
    "greater_than_equal": "must be >= {ge:g}",
    "less_than": "must be < {lt:g}",
    "less_than_equal": "must be <= {le:g}",
}


def _describe(error: dict) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "spec"
    kind = error["type"]
    if kind == "missing":
        return f"{where} is required"
    if kind == "extra_forbidden":
        return f"{where} is not a known field"
    if kind in _RULES:
        return f"{where} {_RULES[kind].format(**error['ctx'])}, got {error['input']!r}"
    if kind == "value_error":
        return f"{where}: {error['ctx']['error']}"
    return f"{where}: {error['msg']}, got {error['input']!r}"


def row_sampling(base: SamplingSpec, override: Any) -> tuple[dict[str, Any] | None, str | None]:
    """A row's own sampling (every field: the run's, with the row's overrides), or why the
    overrides cannot be used. An override is a JSON object (text) or a struct; null: none.

    >>> row_sampling(SamplingSpec(), '{"temperature": 0.5, "n": 2}')[0]["n"]
    2
    >>> row_sampling(SamplingSpec(), '{"temprature": 0.5}')[1]
    'temprature is not a known field'
    >>> row_sampling(SamplingSpec(), {"top_p": 3.0, "seed": None})[1]
    'top_p must be <= 1, got 3.0'
    """
    if override is None:
        return None, None
    try:
        if isinstance(override, str):
            override = load_json(override)
            if not isinstance(override, dict):
                return None, f"must be a JSON object of sampling fields, got {type(override).__name__}"
        elif isinstance(override, dict):  # a struct column: a null field is one the row does not set
            check_json_value(override)
            override = {k: v for k, v in override.items() if v is not None}
        else:
            return None, f"must be a JSON object or a struct of sampling fields, got {type(override).__name__}"
    except json.JSONDecodeError as err:
        return None, f"is not JSON ({err.msg})"
    except NotJSON as err:
        return None, str(err)
    if not override:
        return None, None
    try:
        # Strict: "64" or 64.5 for an integer is refused, as the providers refuse it, not guessed at.
        merged = SamplingSpec.model_validate({**base.model_dump(), **override}, strict=True)
    except ValidationError as err:
        return None, "; ".join(_describe(e) for e in err.errors())
    return merged.model_dump(mode="json"), None


def validate_spec(data: dict[str, Any]) -> PipelineSpec:
    """A PipelineSpec from plain data, or a SpecError listing every problem."""
    return PipelineSpec.model_validate(data)


def spec_error(err: ValidationError) -> SpecError:
    """pydantic's error as a SpecError, a line per problem."""
    return SpecError("invalid spec:\n  " + "\n  ".join(_describe(e) for e in err.errors()))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of `data` with `dotted.key=value` overrides; values are parsed as YAML."""
    result = yaml.safe_load(yaml.safe_dump(data))  # deep copy; never mutate the caller's dict
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--set takes dotted.key=value, got {item!r}")
        node = result
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SpecError(f"--set {key}: {part} is not a section")
        node[leaf] = yaml.safe_load(raw)
    return result


def load_spec(path: str | Path, overrides: list[str] | None = None, output: str | None = None) -> PipelineSpec:
    """Read a YAML spec, apply --set overrides and --output, validate."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise SpecError(f"spec file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise SpecError(f"spec file {path} must hold a mapping, got {type(data).__name__}")
    data = apply_overrides(data, overrides or [])
    if output is not None:
        data.setdefault("output", {})["path"] = output
    return validate_spec(data)
