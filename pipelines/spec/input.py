"""The `input` section: which files, which columns, how a row becomes a prompt."""

from __future__ import annotations

import string
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipelines.spec.base import BATCH_KINDS, _Section


class InputSpec(_Section):
    paths: list[str] = Field(
        description="Parquet files, folders or glob patterns; local paths or s3:// URLs."
    )
    kind: Literal["parquet", "openai_batch", "anthropic_batch"] = Field(
        "parquet", description="openai_batch, anthropic_batch: paths are the provider's batch JSONL files "
        "(pipelines/formats/); every request field is honoured or refused by name, and they are read into "
        "Parquet in the output folder first. OpenAI's hold one endpoint's requests: /v1/chat/completions, "
        "/v1/completions (raw prompts, no chat template) or /v1/responses.",
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
    adapter_column: str | None = Field(
        None, description="Column naming each row's LoRA adapter (one of model.adapters; null or the base "
        "model's name: the base model). An unknown name makes that row an error record.",
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
        extra = [c for c in (self.max_tokens_column, self.sampling_column, self.adapter_column) if c]
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
