"""What a pinned LoRA adapter's weights are, read at planning wherever the adapter is (a local
folder, a URL folder, a hub commit) without downloading them: which weights file it holds, and
each tensor's shape from the safetensors header (its first few kilobytes), so an adapter of
another base model is refused before an engine loads it, whatever its form.

A safetensors file starts with an 8-byte little-endian header length, then that many bytes of
JSON: {tensor name: {dtype, shape, data_offsets}, "__metadata__": {...}}.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

from cluster.models import ModelNotFoundError, ModelSource, hub

WEIGHTS = "adapter_model.safetensors"
WEIGHTS_BIN = "adapter_model.bin"  # peft's safe_serialization=False; vLLM loads it too
WEIGHTS_PT = "adapter_model.pt"  # a torch.save of the tensors, which vLLM 0.32 loads as .bin
WEIGHTS_FILES = (WEIGHTS, WEIGHTS_BIN, WEIGHTS_PT)  # vLLM's order (vllm/lora/lora_model.py)
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on a header


def weights_file(field: str, source: ModelSource) -> str:
    """The weights file the pinned adapter holds (safetensors, .bin, .pt: the first vLLM finds), or
    ModelNotFoundError naming the field: a folder with a config and no weights would fail only
    when an engine loads it, after the run has begun."""
    files = _files(source)
    found = next((name for name in WEIGHTS_FILES if files is None or name in files), None)
    if found is None:
        shown = f"{', '.join(sorted(files)[:5])}{', ...' if len(files) > 5 else ''}"
        raise ModelNotFoundError(f"{field}: the adapter holds no {WEIGHTS}, {WEIGHTS_BIN} or {WEIGHTS_PT} (found: "
                                 f"{shown}){_looked_in(source)}")
    return found


def _looked_in(source: ModelSource) -> str:
    """Offline, a hub adapter's files are the cache's: an online planning (an estimate) leaves
    its adapter_config.json there and no weights, which the hub may well hold."""
    if source.kind != "hub" or not hub.offline():
        return ""
    return (f"; HF_HUB_OFFLINE is set: only the hub cache at {hub.hub_cache()} was looked in; hf download "
            f"{source.pin['repo']} --revision {source.pin['commit']} fills it")


def weight_shapes(adapter: Any, source: ModelSource, name: str) -> dict[str, list[int]] | None:
    """Each tensor's shape in the adapter's safetensors weights, from the header alone; None for
    .bin or .pt weights (a pickle: nothing to read without loading it) or a header nobody can reach."""
    if name != WEIGHTS:
        return None
    if source.kind == "local":
        with open(Path(source.where) / WEIGHTS, "rb") as fh:
            return read_header(fh)
    if source.kind == "url":
        return _url_shapes(adapter.source.rstrip("/") + "/" + WEIGHTS, adapter.storage_options)
    return _hub_shapes(source)


def _url_shapes(url: str, options: dict[str, Any]) -> dict[str, list[int]]:
    """The header by two ranged reads: a store's file object reads ahead (s3fs: 50 MB blocks). A
    server that ignores Range (python's http.server) sends the whole file: the header is read from it."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **options)
    first = fs.cat_file(path, start=0, end=8)
    size = header_size(first[:8])
    return shapes_of(first[8:8 + size] if len(first) > 8 else fs.cat_file(path, start=8, end=8 + size))


def read_header(fh: BinaryIO) -> dict[str, list[int]]:
    """The tensors' shapes of a safetensors file open at its start."""
    return shapes_of(fh.read(header_size(fh.read(8))))


def header_size(first: bytes) -> int:
    (size,) = struct.unpack("<Q", first)
    if size > MAX_HEADER:
        raise ModelNotFoundError(f"{WEIGHTS} is not a safetensors file (a header of {size} bytes)")
    return size


def shapes_of(header: bytes) -> dict[str, list[int]]:
    return {key: list(value["shape"]) for key, value in json.loads(header).items() if key != "__metadata__"}


def _files(source: ModelSource) -> set[str] | None:
    """The adapter's files as its pin or its cache lists them; None where nothing lists them."""
    if "files" in source.pin:  # local and URL folders are pinned by their listing
        return set(source.pin["files"])
    if source.kind != "hub":
        return None
    repo, commit = source.pin["repo"], source.pin["commit"]
    if hub.offline():  # what the cache holds is all a node will have
        snapshot = Path(hub.hub_cache()) / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
        return {str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()}
    from huggingface_hub import HfApi

    try:
        return set(HfApi().list_repo_files(repo, revision=commit))
    except Exception:  # noqa: BLE001 - the hub unreachable now: the engine's own download will say
        return None


def _hub_shapes(source: ModelSource) -> dict[str, list[int]] | None:
    """The header of the commit's weights: from the cache when it is there, else read from the hub
    by a ranged request (huggingface_hub's parse_safetensors_file_metadata)."""
    repo, commit = source.pin["repo"], source.pin["commit"]
    cached = Path(hub.hub_cache()) / f"models--{repo.replace('/', '--')}" / "snapshots" / commit / WEIGHTS
    if cached.exists():
        with open(cached, "rb") as fh:
            return read_header(fh)
    if hub.offline():
        return None
    from huggingface_hub import parse_safetensors_file_metadata

    try:
        meta = parse_safetensors_file_metadata(repo, WEIGHTS, revision=commit)
    except Exception:  # noqa: BLE001 - the hub unreachable now: the engine's own download will say
        return None
    return {key: list(info.shape) for key, info in meta.tensors.items()}
