"""A request's options as vLLM's parameter objects: part of the engine adapter (operators/engine.py)."""

from __future__ import annotations

from typing import Any


def pooling_params(embed: dict[str, Any]):
    """An embedding request's options (EmbedSpec's names) as vLLM's PoolingParams; `normalize`
    is the pooler's activation (None: the model's own setting)."""
    from vllm import PoolingParams

    return PoolingParams(task="embed", dimensions=embed.get("dimensions"), use_activation=embed.get("normalize"))


def sampling_params(sampling: dict[str, Any]):
    """A request's sampling (OpenAI's names, pipelines/spec/sampling.py's SamplingSpec) as vLLM's."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    structured = None
    response_format = sampling.get("response_format") or {}
    if response_format.get("type") == "json_object":
        structured = StructuredOutputsParams(json_object=True)
    elif response_format.get("type") == "json_schema":
        structured = StructuredOutputsParams(json=response_format["json_schema"]["schema"])
    elif sampling.get("structured"):
        structured = StructuredOutputsParams(**sampling["structured"])
    return SamplingParams(
        n=sampling.get("n", 1),
        max_tokens=sampling["max_tokens"],
        temperature=sampling["temperature"],
        top_p=sampling["top_p"],
        top_k=sampling.get("top_k") or 0,  # 0: all tokens
        min_p=sampling.get("min_p", 0.0),
        presence_penalty=sampling.get("presence_penalty", 0.0),
        frequency_penalty=sampling.get("frequency_penalty", 0.0),
        repetition_penalty=sampling.get("repetition_penalty", 1.0),
        seed=sampling.get("seed"),
        stop=sampling.get("stop") or None,
        # OpenAI's logprobs: true with top_logprobs k is vLLM's logprobs=k (the chosen token comes too).
        logprobs=(sampling.get("top_logprobs") or 0) if sampling.get("logprobs") else None,
        structured_outputs=structured,
        # Needs the engine's reasoning_config, which vLLM makes from its reasoning_parser
        # (EngineArgs._set_default_reasoning_config_args): model.reasoning_parser (pipelines/spec/pipeline.py).
        thinking_token_budget=sampling.get("thinking_token_budget"),
        # Set by a tool parser for an auto call (operators/output_parsing.py), never by a user.
        skip_special_tokens=sampling.get("skip_special_tokens", True),
        spaces_between_special_tokens=sampling.get("spaces_between_special_tokens", True),
        output_kind=RequestOutputKind.FINAL_ONLY,  # one output per request, when it ends
    )
