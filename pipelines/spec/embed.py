"""The `embed` section and what `task: embed` refuses: a vector per row instead of text.

An embedding is decided by the model, the text (its tokens) and these options; sampling means
nothing to it, so a sampling field written with `task: embed` is refused by name, never
silently dropped. The text is read as it is (no chat template: `input.format` chat and raw
mean the same), or with `format: messages` each row holds JSON: a text or a list of token ids.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from pipelines.spec.base import _Section

TASKS = ("generate", "embed")
DEFAULT_EMBED_MODEL = "all-minilm-l6-v2"  # built in (cluster/models): what `task: embed` runs without a model
# Input fields only generation reads: with `task: embed` they would change nothing.
# (`sampling_column` holds a row's own embed options then: an embeddings batch file's `dimensions`.)
GENERATION_INPUT_FIELDS = {
    "system_prompt": "an embedding has no system message",
    "max_tokens_column": "an embedding generates no tokens",
}


class EmbedSpec(_Section):
    """With `task: embed`: how each row's text becomes its vector."""

    dimensions: int | None = Field(
        None, gt=0, description="Keep the first N numbers of each vector (Matryoshka truncation), then "
        "normalize; only for a model trained for it (its config.json says `is_matryoshka` or "
        "`matryoshka_dimensions`), refused by name before any engine starts otherwise. Default: all of them.")
    normalize: bool | None = Field(
        None, description="Scale each vector to length 1 (true) or leave it as the model pools it (false). "
        "Default: the model's own setting (sentence-transformers' Normalize module).")
    truncate_prompt_tokens: int | None = Field(
        None, description="A text longer than this many tokens is cut to them (-1: to the model's context) "
        "instead of becoming an error record. Default: a text longer than the model's context is an error "
        "record (`context_too_long`).")

    @field_validator("truncate_prompt_tokens")
    @classmethod
    def _positive_or_context(cls, value: int | None) -> int | None:
        if value is not None and value < 1 and value != -1:
            raise ValueError(f"must be a number of tokens >= 1, or -1 for the model's context; got {value}")
        return value

    def identity(self) -> dict[str, Any]:
        """What decides a vector besides the model and the text."""
        return self.model_dump(mode="json")


def embed_refusals(spec: Any) -> list[str]:
    """With `task: embed`, the fields written that only generation reads, each named; with
    `task: generate`, the `embed` options written. A field at its default is not refused: a
    spec written back out (model_dump) holds every field."""
    if spec.task != "embed":
        return [f"embed.{name} is set, but task is generate: set task: embed to make embeddings"
                for name, value in spec.embed.model_dump().items() if value is not None]
    defaults = type(spec.sampling)().model_dump()
    problems = [f"sampling.{name} is set, but task embed samples nothing: remove it"
                for name, value in spec.sampling.model_dump().items() if value != defaults[name]]
    problems += [f"input.{name} is set, but {why} (task embed): remove it"
                 for name, why in GENERATION_INPUT_FIELDS.items() if getattr(spec.input, name) is not None]
    named = [("model", spec.model), *((f"models.{n}", m) for n, m in spec.models.items())]
    problems += [f"{where}.{name} is set, but the text is embedded as it is, with no chat template "
                 f"(task embed): remove it, or put what it adds in input.template"
                 for where, model in named for name in ("chat_template", "chat_template_kwargs")
                 if getattr(model, name)]
    return problems


def embedding_models(spec: Any, data: dict[str, Any]) -> None:
    """As a `task: embed` spec has them (pipelines/spec/pipeline.py): no model named is the
    built-in embedding model, and a max_model_len left out is each model's own context."""
    if "model" not in spec.model_fields_set:
        data["model"] = {**data["model"], "name": DEFAULT_EMBED_MODEL}
    if "max_model_len" not in spec.model.model_fields_set:
        data["model"]["max_model_len"] = None
    for name, model in spec.models.items():
        if "max_model_len" not in model.model_fields_set:
            data["models"][name]["max_model_len"] = None

