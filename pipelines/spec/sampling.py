"""The `sampling` section, with OpenAI's names, and what of it decides an answer."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from pipelines.spec.base import _Section
from pipelines.spec.template_kwargs import check_template_kwargs
from pipelines.spec.tools import check_tool_choice, check_tools

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
    tools: list[dict[str, Any]] | None = Field(
        None, description="OpenAI's: the functions the model may call, [{type: function, function: {name, "
        "description, parameters (a JSON Schema)}}]; shown to the chat template. A call comes back in the "
        "result's `tool_calls` (JSON text: [{id, type, function: {name, arguments}}]).")
    tool_choice: str | dict[str, Any] | None = Field(
        None, description="OpenAI's: none (tools shown, no call parsed), auto (the default with tools; needs "
        "model.tool_parser), required (at least one call), or {type: function, function: {name}}; required "
        "and a named function are forced by structured output, so the arguments match the schema on any model.")
    parallel_tool_calls: bool | None = Field(
        None, description="OpenAI's: false allows one call at most (required: forced to one; auto: the first kept).")
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description="A row's own chat template variables over model.chat_template_kwargs, e.g. "
        "{enable_thinking: false}.")
    thinking_token_budget: int | None = Field(
        None, ge=0, description="vLLM's: most tokens a row's thinking may take before the engine ends it (writes "
        "the reasoning parser's end, e.g. </think>) and the answer follows; needs model.reasoning_parser. -1 or "
        "null: no budget. Anthropic's thinking {type: enabled, budget_tokens} is read into it.")

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

    @field_validator("thinking_token_budget", mode="before")
    @classmethod
    def _unlimited(cls, value: Any) -> Any:
        return None if value == -1 and type(value) is int else value  # vLLM's -1: no budget

    @field_validator("chat_template_kwargs")
    @classmethod
    def _template_variables(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_template_kwargs(value)

    @field_validator("tools")
    @classmethod
    def _function_tools(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        return check_tools(value)

    @model_validator(mode="after")
    def _consistent(self) -> SamplingSpec:
        check_tool_choice(self.tool_choice, self.tools)
        if self.tools and self.n > 1:
            raise ValueError("tools take n: 1 (a call is parsed from one choice)")
        if self.tools and (self.response_format is not None or self.structured is not None):
            raise ValueError("tools and response_format (or structured) cannot go together: a forced call is "
                             "itself structured output")
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
