"""A model's tokenizer on this machine without its weights: what the estimate needs to count
prompt tokens (pipelines/estimate/), before a GPU second is bought. A 70B model's folder is
~140 GB; its tokenizer, config and chat template are a few MB."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from cluster.models.source import ModelSource

# What transformers' AutoTokenizer and a chat template read (never a weights file).
TOKENIZER_FILES = ["config.json", "generation_config.json", "tokenizer*", "special_tokens_map.json", "vocab*",
                   "merges.txt", "added_tokens.json", "chat_template*", "*.tiktoken", "spiece.model",
                   "preprocessor_config.json"]


def is_tokenizer_file(rel: str) -> bool:
    """A file the tokenizer reads, at the top of the model's folder.

    >>> [is_tokenizer_file(f) for f in ("tokenizer.json", "model-00001-of-00030.safetensors")]
    [True, False]
    """
    return "/" not in rel and any(fnmatch.fnmatch(rel, p) for p in TOKENIZER_FILES)


def tokenizer_folder(model: Any, source: ModelSource) -> Path:
    """A folder with the model's tokenizer files: the node's full copy when it has one, else
    only those files, fetched from the hub or the URL folder (builtin and local models are here)."""
    from cluster.models import resolve

    if source.kind in ("builtin", "local"):
        return resolve(model, source)[0]
    if source.kind == "hub":
        return _hub(source)
    return _url(model, source)


def _hub(source: ModelSource) -> Path:
    from huggingface_hub import snapshot_download

    from cluster.models.errors import ModelNotFoundError
    from cluster.models.hub import hub_cache, offline

    repo, commit = source.pin["repo"], source.pin["commit"]
    try:
        return Path(snapshot_download(repo, revision=commit, cache_dir=hub_cache(), local_files_only=offline(),
                                      allow_patterns=TOKENIZER_FILES))
    except Exception as err:
        raise ModelNotFoundError(f"model {repo!r} at commit {commit}: could not get its tokenizer "
                                 f"(hub cache {hub_cache()}): {err.__class__.__name__}") from None


def _url(model: Any, source: ModelSource) -> Path:
    from cluster.models.node_cache import fill_once
    from cluster.models.url import _fs, node_folder

    whole = node_folder(source)
    if (whole / "config.json").exists():  # an engine of this machine fetched it already
        return whole
    dest = whole.with_name(f"{whole.name}-tokenizer")
    wanted = sorted(rel for rel in source.pin["files"] if is_tokenizer_file(rel))

    def download(staging: Path) -> None:
        fs, root = _fs(model.name, model.storage_options)
        fs.get([f"{root}/{rel}" for rel in wanted], [str(staging / rel) for rel in wanted])

    fill_once(dest, download)
    return dest
