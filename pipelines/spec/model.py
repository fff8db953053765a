"""The `model` section (and each of `models`): which weights, and how vLLM loads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from pipelines.spec.adapters import AdapterSpec, check_adapter_names
from pipelines.spec.base import _Section
from pipelines.spec.template_kwargs import check_template_kwargs


class CompileCacheSpec(_Section):
    path: str = Field(description="A folder (s3://, gs://, a shared file system) holding the engines' compile "
                      "caches (vLLM's and torch inductor's) for every node: a new node loads what another "
                      "compiled (pipelines/engine/compile_cache.py).")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options for the folder; "
                                            "never written down.")


class ModelSpec(_Section):
    name: str = Field(
        "smollm2-135m", description="A built-in name (smollm2-135m, tiny-random; all-minilm-l6-v2 for "
        "`task: embed`), a local folder, a hub repo id "
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
    tool_parser: str | None = Field(
        None, description="vLLM's tool parser for the model's call format (hermes, llama3_json, mistral, ...): "
        "needed for tool_choice auto, whose calls are parsed out of free text.")
    reasoning_parser: str | None = Field(
        None, description="vLLM's reasoning parser (deepseek_r1, qwen3, ...): the thinking goes to the result's "
        "`reasoning`, the answer alone to `output`, and its tokens are counted apart (`reasoning_tokens`).")
    dtype: str = Field("auto", description="Weights dtype passed to vLLM: auto, bfloat16, float16, float32.")
    max_model_len: int | None = Field(
        2048, gt=0, description="Context length; prompts longer than this become error records. With "
        "`task: embed` the default is the model's own context."
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
    adapters: dict[str, AdapterSpec] = Field(
        default_factory=dict, description="LoRA adapters of this model by name: {name: source}, a source as a "
        "model's (a folder, a hub repo id with revision, a URL folder with storage_options). A row picks one by "
        "input.adapter_column, a batch line by body.model; the engine serves them all (docs/guide/models.md).")

    @field_validator("adapters")
    @classmethod
    def _adapter_names(cls, value: dict[str, AdapterSpec], info) -> dict[str, AdapterSpec]:
        check_adapter_names(value, info.data.get("name", ""))
        return value

    @field_validator("chat_template_kwargs")
    @classmethod
    def _template_variables(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_template_kwargs(value)

    @field_validator("tool_parser", "reasoning_parser")
    @classmethod
    def _vllms_parser(cls, value: str | None, info) -> str | None:
        from operators.output_parsing import unknown_parser

        why = value and unknown_parser(info.field_name.removesuffix("_parser"), value)
        if why:
            raise ValueError(why)
        return value

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
