"""LoRA adapters (`model.adapters`): found and pinned as models are (cluster/models, the same
four forms with adapter_config.json where a model has config.json), and checked against the
base model before anything is written: a LoRA (the only kind vLLM serves), its rank, and, where
the base model's config and the adapter's weights are on this machine, that its layers and
matrix sizes are the base model's.

>>> lora_rank_for([4, 8]), lora_rank_for([12]), lora_rank_for([])
(8, 16, 8)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cluster.models import ModelNotFoundError, ModelSource, hub, identify, resolve
from cluster.models.adapter_weights import WEIGHTS, WEIGHTS_FILES, weight_shapes, weights_file
from cluster.models.context import config_of
from cluster.models.node_cache import fill_once, models_dir
from operators.engine_args import redact_url
from operators.engine_config import BASE_ADAPTER

ADAPTER_CONFIG = "adapter_config.json"
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM 0.32's MaxLoRARanks
LAYER = re.compile(r"\.layers\.(\d+)\.")


def lora_rank_for(ranks: list[int]) -> int:
    """The least rank vLLM accepts that holds every adapter's (8 with none)."""
    need = max(ranks, default=8)
    return next((r for r in VLLM_LORA_RANKS if r >= need), VLLM_LORA_RANKS[-1])


ADAPTER_KEY = "adapter:"  # an adapter's key among a plan's model sources (a model's is its name)


def identify_adapters(model: Any) -> dict[str, dict[str, Any]]:
    """Every adapter of `model` (a ModelSpec) found, pinned and checked, by ADAPTER_KEY + name."""
    return {ADAPTER_KEY + name: identify_adapter(name, adapter, model)
            for name, adapter in model.adapters.items()}


def identify_adapter(name: str, adapter: Any, base: Any) -> dict[str, Any]:
    """The adapter `name` (an AdapterSpec) found, pinned and checked against `base` (a ModelSpec):
    its ModelSource as JSON. Raises ModelNotFoundError naming the field."""
    field = f"model.adapters.{name}"
    try:
        source = identify(adapter, redact_url(adapter.source), ADAPTER_CONFIG, field)
        config = _read_config(adapter, source)
    except ModelNotFoundError as err:
        raise ModelNotFoundError(f"{field}: {err}") from None
    _check_config(field, config)
    weights = weights_file(field, source)
    try:
        shapes = weight_shapes(adapter, source, weights)
    except ModelNotFoundError as err:
        raise ModelNotFoundError(f"{field}: {err}") from None
    except Exception as err:  # noqa: BLE001 - a garbled header, or a store's error whose text may hold the URL's secret
        raise ModelNotFoundError(f"{field}: cannot read {weights}'s header ({err.__class__.__name__})") from None
    if shapes is not None:
        _check_weights(field, shapes, config_of(base))
    return source.to_json()


def _read_config(adapter: Any, source: ModelSource) -> dict[str, Any]:
    """adapter_config.json of the pinned adapter: a small file, read where it is."""
    try:
        if source.kind == "local":
            text = (Path(source.where) / ADAPTER_CONFIG).read_text()
        elif source.kind == "hub":
            from huggingface_hub import hf_hub_download

            text = Path(hf_hub_download(source.pin["repo"], ADAPTER_CONFIG, revision=source.pin["commit"],
                                        cache_dir=hub.hub_cache(), local_files_only=hub.offline())).read_text()
        else:
            import fsspec

            with fsspec.open(adapter.source.rstrip("/") + "/" + ADAPTER_CONFIG, "r", **adapter.storage_options) as fh:
                text = fh.read()
        config = json.loads(text)
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(f"cannot read its {ADAPTER_CONFIG} ({err.__class__.__name__})") from None
    except Exception as err:  # noqa: BLE001 - a store's or the hub's own error; its text may hold a URL's secret
        raise ModelNotFoundError(f"cannot read its {ADAPTER_CONFIG} ({err.__class__.__name__})") from None
    if not isinstance(config, dict):
        raise ModelNotFoundError(f"its {ADAPTER_CONFIG} holds no JSON object")
    return config


# What vLLM 0.32 refuses when an engine loads an adapter (vllm/lora/peft_helper.py PEFTHelper
# validate_legal), checked here by name: importing vLLM's own check costs torch and ~30 s.
UNSERVED = {"use_dora": "DoRA", "lora_bias": "LoRA bias", "alora_invocation_tokens": "Activated LoRA (aLoRA)",
            "layer_replication": "layer_replication", "use_bdlora": "block-diagonal LoRA",
            "use_qalora": "QALoRA"}
PLAIN_INITS = ("gaussian", "eva", "orthogonal", "mica", "lora_ga")  # init_lora_weights a saved LoRA holds as is


def _check_config(field: str, config: dict[str, Any]) -> int:
    """The rank the adapter needs (its r, or a larger one of rank_pattern), once its config says
    it is a LoRA vLLM can serve; else ModelNotFoundError naming the adapter_config.json field."""
    kind = config.get("peft_type")
    if kind != "LORA":
        raise ModelNotFoundError(f"{field}: {ADAPTER_CONFIG} peft_type is {kind!r}; vLLM serves LORA adapters only")
    pattern = config.get("rank_pattern") or {}
    if not isinstance(pattern, dict):
        raise ModelNotFoundError(f"{field}: {ADAPTER_CONFIG} rank_pattern must map modules to ranks")
    for key, rank in [("r", config.get("r")), *((f"rank_pattern.{k}", v) for k, v in pattern.items())]:
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 < rank <= VLLM_LORA_RANKS[-1]:
            raise ModelNotFoundError(f"{field}: {ADAPTER_CONFIG} {key} must be a rank from 1 to "
                                     f"{VLLM_LORA_RANKS[-1]}, got {rank!r}")
    if not config.get("target_modules"):
        raise ModelNotFoundError(f"{field}: {ADAPTER_CONFIG} names no target_modules")
    why = _unserved(config)
    if why:
        raise ModelNotFoundError(f"{field}: {ADAPTER_CONFIG} {why}; vLLM 0.32 would refuse it when the engine "
                                 f"loads it")
    return adapter_rank(config)


def adapter_rank(config: dict[str, Any]) -> int:
    """The largest rank of any of the adapter's modules: r, or one of rank_pattern's."""
    return max([config["r"], *(config.get("rank_pattern") or {}).values()])


def _unserved(config: dict[str, Any]) -> str | None:
    """The first field of a checked adapter_config.json that vLLM 0.32 does not serve, said by name."""
    if "lora_alpha" not in config:
        return "has no lora_alpha"
    for key, what in UNSERVED.items():
        if config.get(key):
            return f"{key} is {config[key]!r}: vLLM serves no {what}"
    if config.get("bias", "none") != "none":
        return f"bias is {config['bias']!r}: vLLM serves LoRAs with bias 'none' only"
    extra = [m for m in config.get("modules_to_save") or [] if m not in ("classifier", "score")]
    if extra:
        return f"modules_to_save is {extra!r}: vLLM serves no fully trained modules beside the LoRA"
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in PLAIN_INITS:
        return (f"init_lora_weights is {init!r}: that init changes the base model's weights; convert the "
                f"adapter to a plain LoRA with peft's path_initial_model_for_weight_conversion")
    return None


def _check_weights(field: str, shapes: dict[str, list[int]], base: dict[str, Any] | None) -> None:
    """Each LoRA matrix (`shapes`: its weights' tensors) reads a vector of the base model's sizes,
    in a layer the base model has."""
    if base is None:
        return  # the base's config is not on this machine
    sizes = _input_widths(base)
    layers = base.get("num_hidden_layers")
    for key, shape in shapes.items():
        layer = LAYER.search(key)
        if layer and isinstance(layers, int) and int(layer.group(1)) >= layers:
            raise ModelNotFoundError(f"{field}: {WEIGHTS} has {key}, but the base model has {layers} layers")
        if ".lora_A." in key and sizes and shape and shape[-1] not in sizes:
            raise ModelNotFoundError(
                f"{field}: {WEIGHTS} {key} reads vectors of {shape[-1]} numbers; the base model's are "
                f"{sorted(sizes)}: an adapter of another base model")


def _input_widths(base: dict[str, Any]) -> set[int]:
    """What a LoRA's A matrix may read in the base model: its hidden state (q, k, v, gate, up,
    lm_head), the attention heads' concatenation (o_proj: heads x head_dim, not always the hidden
    size), and an MLP's or an MoE expert's intermediate state (down_proj)."""
    hidden, heads = base.get("hidden_size"), base.get("num_attention_heads")
    head_dim = base.get("head_dim") or (hidden // heads if isinstance(hidden, int) and heads else None)
    attention = heads * head_dim if isinstance(heads, int) and isinstance(head_dim, int) else None
    widths = [hidden, attention, base.get("intermediate_size"), base.get("moe_intermediate_size"),
              base.get("shared_expert_intermediate_size")]
    return {w for w in widths if isinstance(w, int) and not isinstance(w, bool)}


def adapters_on_node(model: Any, sources: dict[str, dict[str, Any]]) -> tuple[dict[str, str], int]:
    """Each of `model`'s adapters put on this node exactly as pinned (`sources`, a plan's model
    sources: a URL's downloaded once per node), by name, and the LoRA rank the engine needs."""
    folders = {name: resolve(adapter, ModelSource.from_json(sources[ADAPTER_KEY + name]), ADAPTER_CONFIG)[0]
               for name, adapter in model.adapters.items()}
    ranks = [adapter_rank(json.loads((folder / ADAPTER_CONFIG).read_text())) for folder in folders.values()]
    if folders:  # the base model's rows get an adapter too (operators/engine_config.py's BASE_ADAPTER says why)
        folders[BASE_ADAPTER] = null_adapter(next(iter(folders.values())))
    return {name: str(folder) for name, folder in folders.items()}, lora_rank_for(ranks)


def null_adapter(like: Path) -> Path:
    """An adapter that adds exactly nothing: `like`'s keys and shapes, every tensor zero (x A B = 0
    whatever a factor is called: lora_B, and peft's lora_embedding_B of an embedding LoRA), made
    once per node in the node cache. `like`'s weights may be adapter_model.bin or .pt (which
    planning and vLLM accept); the null's are safetensors either way."""
    from cluster.models.local import file_hash

    weights = next((like / name for name in WEIGHTS_FILES if (like / name).exists()), like / WEIGHTS)
    # lora-null-2: the nulls an earlier version made kept lora_embedding_B; a node never reuses them
    dest = models_dir() / "lora-null-2" / file_hash(weights)[:16]

    def build(staging: Path) -> None:
        import torch
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(weights)) if weights.name == WEIGHTS else \
            torch.load(weights, map_location="cpu", weights_only=True)
        save_file({k: torch.zeros_like(v) for k, v in tensors.items()}, str(staging / WEIGHTS))
        (staging / ADAPTER_CONFIG).write_text((like / ADAPTER_CONFIG).read_text())

    fill_once(dest, build, ADAPTER_CONFIG)
    return dest
