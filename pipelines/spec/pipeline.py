"""The whole spec (PipelineSpec), and reading it as `spotbatch run` does: YAML, `--set`
overrides, `--output`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from pipelines.spec.base import BATCH_KINDS, _Section
from pipelines.spec.compute import ComputeSpec
from pipelines.spec.cost import CostSpec
from pipelines.spec.embed import DEFAULT_EMBED_MODEL, EmbedSpec, embed_refusals
from pipelines.spec.input import InputSpec
from pipelines.spec.model import ModelSpec
from pipelines.spec.output import CacheSpec, OutputSpec, RouteSpec
from pipelines.spec.problems import spec_error
from pipelines.spec.sampling import SamplingSpec
from pipelines.spec.tools import auto_refusal, strict_refusal
from spotbatch.errors import SpecError


class PipelineSpec(_Section):
    """A batch: what to read, which model answers, how to sample, where results go (`spotbatch.Spec`).

    >>> spec = PipelineSpec.model_validate({"input": {"paths": "prompts/", "prompt_column": "text"},
    ...                                     "model": {"name": "smollm2-135m"}, "output": {"path": "out/"}})
    >>> spec.model.name, spec.sampling.max_tokens
    ('smollm2-135m', 256)
    """

    task: Literal["generate", "embed"] = Field(
        "generate", description="generate: text for each row (`output`); embed: a vector for each row "
        "(`embedding`, from an embedding model such as the built-in all-minilm-l6-v2), with `embed`'s options.",
    )
    input: InputSpec
    """What to read: the files, and the columns a prompt is made of."""
    model: ModelSpec = Field(default_factory=ModelSpec)
    """The model that answers (without `route`)."""
    models: dict[str, ModelSpec] = Field(
        default_factory=dict, description="Named models that `route` sends rows to (instead of `model`). "
        "A model's engine actors start when its rows' turn comes and are released when they are done; "
        "a model no row is routed to never starts.",
    )
    route: RouteSpec | None = Field(None, description="How rows are routed to `models`.")
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    """How every row is sampled, unless the row says otherwise."""
    embed: EmbedSpec = Field(default_factory=EmbedSpec)
    """With `task: embed`: the vectors' options."""
    compute: ComputeSpec = Field(default_factory=ComputeSpec)
    """The engine actors and what each holds."""
    cost: CostSpec = Field(default_factory=CostSpec)
    """What the nodes cost, and a budget."""
    cache: CacheSpec = Field(default_factory=CacheSpec)
    """Answers shared within a run and across runs."""
    output: OutputSpec
    """Where results, records and the ledger go."""

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

    @model_validator(mode="before")
    @classmethod
    def _embedding_models_keep_their_context(cls, data: Any) -> Any:
        """With `task: embed`, a model's max_model_len left out is its own context (an embedding
        model's is often short: 256 or 512 tokens), not generation's default; and a spec that
        names no model gets the built-in embedding model."""
        if not isinstance(data, dict) or data.get("task") != "embed":
            return data
        models = {name: m for name, m in (data.get("models") or {}).items()}
        for name, m in [("", data.get("model") or {"name": DEFAULT_EMBED_MODEL}), *models.items()]:
            m = {"name": m} if isinstance(m, str) else dict(m)
            m.setdefault("max_model_len", None)
            if name:
                models[name] = m
            else:
                data = {**data, "model": m}
        return {**data, "models": models} if models else data

    @model_validator(mode="after")
    def _task_fields(self) -> PipelineSpec:
        """Every field written is honoured by the task, or refused by name."""
        problems = embed_refusals(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _parsers_fit_sampling(self) -> PipelineSpec:
        """Tools the spec gives run with every model's parser, or are refused before any engine starts."""
        for where, model in [("model", self.model)] if not self.routed else [
                (f"models.{name}", m) for name, m in self.models.items()]:
            sampling = self.sampling.model_dump()
            why = auto_refusal(sampling, model.tool_parser) or strict_refusal(sampling, model.tool_parser)
            if why:
                raise ValueError(f"sampling.tools with {where}: {why}")
            if model.reasoning_parser and self.sampling.n > 1:
                raise ValueError(f"{where}.reasoning_parser takes sampling.n: 1 (each result row keeps one "
                                 f"choice's reasoning)")
            if self.sampling.thinking_token_budget is not None and not model.reasoning_parser:
                raise ValueError(f"sampling.thinking_token_budget needs {where}.reasoning_parser (vLLM ends a "
                                 f"thinking it knows by its parser's markers)")
        return self

    @model_validator(mode="after")
    def _adapters_fit(self) -> PipelineSpec:
        """Adapters are served by the run's one generation engine; a column naming them needs them."""
        if self.input.adapter_column and not self.model.adapters and self.input.kind == "parquet":
            raise ValueError(f"input.adapter_column {self.input.adapter_column!r} names adapters, but "
                             f"model.adapters defines none")
        for name, m in self.models.items():  # routed models' engines are given no adapter: refused by name
            if m.adapters:
                raise ValueError(f"models.{name}.adapters: adapters are for a run's single model; with models "
                                 f"and route, run each adapter's rows as a run of their own")
        if not self.model.adapters:
            return self
        if self.routed:
            raise ValueError("model.adapters is for a run's single model; with models and route, run each "
                             "adapter's rows as a run of their own")
        if self.task == "embed":
            raise ValueError("model.adapters is set, but task embed serves no LoRA adapter: remove it")
        return self

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


def validate_spec(data: dict[str, Any]) -> PipelineSpec:
    """A PipelineSpec from plain data, or a SpecError listing every problem."""
    return PipelineSpec.model_validate(data)


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
