"""vLLM's arguments (`model.engine_kwargs`) that are settings, not credentials: the engine
adapter's half of "no secret is ever written down" (pipelines/redact.py is the other).

An allow-list, never a deny-list: `hf_token`, `model_loader_extra_config` (which holds a
tensorizer's S3 keys) and any argument a later vLLM adds are treated as secrets until named
here. vLLM logs the arguments it was given ("non-default args: ...") and hides only the ones it
knows; `hide_in_engine_logs` hides every value of the others in its log lines.

>>> secret_values({"max_num_seqs": 64, "hf_token": "hf_abcdef", "model_loader_extra_config": {"s3_secret": "wJalr"}})
['hf_abcdef', 'wJalr']
"""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "<redacted>"  # what stands where a secret was
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]+@")


def redact_url(value: str) -> str:
    """A URL (a model's, an output's) with its userinfo, a credential, replaced. Here, at the
    bottom of the imports, so cluster/ and pipelines/ both use this one.

    >>> redact_url("s3://AKIA:wJalr@bucket/model/")
    's3://<redacted>@bucket/model/'
    """
    return _USERINFO.sub(rf"\1{REDACTED}@", value)


# vLLM 0.32's EngineArgs and LLM names whose values say how the engine loads and runs.
SAFE_ENGINE_ARGS = frozenset({
    # the model and its loading
    "runner", "convert", "tokenizer", "tokenizer_mode", "skip_tokenizer_init", "trust_remote_code", "download_dir",
    "load_format", "config_format", "dtype", "kv_cache_dtype", "seed", "max_model_len", "revision", "code_revision",
    "tokenizer_revision", "hf_overrides", "quantization", "model_impl", "served_model_name", "generation_config",
    "override_generation_config", "max_parallel_loading_workers", "safetensors_load_strategy", "ignore_patterns",
    "use_tqdm_on_load", "pt_load_map_location", "enable_prompt_embeds", "language_model_only",
    # memory, cache and scheduling
    "gpu_memory_utilization", "kv_cache_memory_bytes", "cpu_offload_gb", "block_size", "enable_prefix_caching",
    "prefix_caching_hash_algo", "disable_sliding_window", "disable_cascade_attn", "num_gpu_blocks_override",
    "max_num_batched_tokens", "max_num_seqs", "max_logprobs", "logprobs_mode", "long_prefill_token_threshold",
    "enable_chunked_prefill", "scheduling_policy", "async_scheduling", "stream_interval", "swap_space",
    "mamba_cache_dtype", "mamba_ssm_cache_dtype", "calculate_kv_scales", "enable_sleep_mode",
    # parallelism and compilation
    "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "enable_expert_parallel",
    "distributed_executor_backend", "disable_custom_all_reduce", "enforce_eager", "compilation_config",
    "cudagraph_capture_sizes", "max_cudagraph_capture_size", "attention_backend", "optimization_level",
    "performance_mode",
    # adapters, multimodal inputs, structured output, speculation
    "enable_lora", "max_loras", "max_lora_rank", "max_cpu_loras", "lora_dtype", "fully_sharded_loras",
    "limit_mm_per_prompt", "mm_processor_kwargs", "mm_processor_cache_gb", "skip_mm_profiling",
    "structured_outputs_config", "reasoning_parser", "speculative_config", "disable_log_stats",
})


def secret_values(kwargs: dict[str, Any]) -> list[str]:
    """Every text value held under an argument not known to be a setting, at any depth."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif value is not None and not isinstance(value, bool) and len(str(value)) >= 4:
            found.append(str(value))

    for name, value in kwargs.items():
        if name not in SAFE_ENGINE_ARGS:
            walk(value)
    return found


def hide_in_engine_logs(kwargs: dict[str, Any]) -> None:
    """From now on, in every log line this process makes (vLLM's engine's), the values of
    `kwargs` not known to be settings read <redacted>. At the records' making, not on a handler:
    vLLM configures its logging again when an engine starts, and its handlers with it."""
    values = secret_values(kwargs)
    if not values:
        return
    make = logging.getLogRecordFactory()

    def record(*args: Any, **extra: Any) -> logging.LogRecord:
        made = make(*args, **extra)
        try:
            text = made.getMessage()
        except Exception:  # a malformed call: logging reports it when the line is written
            return made
        if any(v in text for v in values):
            for value in values:
                text = text.replace(value, REDACTED)
            made.msg, made.args = text, None
        return made

    logging.setLogRecordFactory(record)
