"""A model's own context length (what `model.max_model_len: null` means), read on the driver
from the model's config.json where this machine has it: a local folder, a built-in model built
here, a hub repo in the hub cache. As vLLM derives it, the least of the lengths the config
names. None where the config is not at hand (a URL folder, a repo not cached): nothing is
fetched to find out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cluster.models import hub, kind_of, models_dir

# The config keys vLLM reads a context length from (vllm/config/model.py, _get_and_verify_max_len).
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
                "max_sequence_length", "max_seq_length", "seq_len")


def config_of(model: Any) -> dict[str, Any] | None:
    """The model's config.json where this machine has it, else None (nothing is fetched)."""
    path = _config_path(model)
    try:
        config = json.loads(path.read_text()) if path is not None else None
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def config_context(model: Any) -> int | None:
    """The context length the model's config.json names, or None where it is not at hand."""
    config = config_of(model)
    if config is None:
        return None
    nested = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    lengths = [c[k] for c in (config, nested) for k in CONTEXT_KEYS
               if isinstance(c.get(k), int) and not isinstance(c.get(k), bool) and c[k] > 0]
    return min(lengths) if lengths else None


def _config_path(model: Any) -> Path | None:
    try:
        kind = kind_of(model.name)
    except Exception:  # a name of no known form: planning names it
        return None
    if kind == "builtin":
        return models_dir() / model.name / "config.json"  # once built on this machine
    if kind == "local":
        return Path(model.name.removeprefix("file://")).expanduser() / "config.json"
    if kind == "hub":
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model.name, "config.json", cache_dir=hub.hub_cache(),
                                       revision=model.revision or "main")
        return Path(found) if isinstance(found, str) else None
    return None
