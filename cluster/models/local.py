"""A model folder on the node's own file system (or a shared one mounted on every node).

Its pin is every file's size and content hash. Hashes are kept in the node cache by path,
size and modification time, so a 15 GB folder is read once per node, not on every resume;
new weights written at the same path change the time and are hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cluster.models.errors import ModelChangedError, ModelNotFoundError
from cluster.models.node_cache import models_dir
from cluster.models.source import ModelSource, describe_change

CHUNK = 8 << 20


def model_files(folder: Path) -> list[Path]:
    """The files that make the model: all but hidden ones (caches, editors' and tools' own)."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def file_hash(path: Path) -> str:
    """sha256 of a file, from the node's hash cache while its size and mtime are unchanged."""
    stat = path.stat()
    memo = models_dir() / ".hashes" / f"{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]}.json"
    stamp = [stat.st_size, stat.st_mtime_ns]
    try:
        saved = json.loads(memo.read_text())
        if saved["stamp"] == stamp:
            return saved["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"stamp": stamp, "sha256": digest.hexdigest()}))
    tmp.replace(memo)  # atomic: a concurrent reader sees the old entry or the new one
    return digest.hexdigest()


def identify(name: str, marker: str = "config.json") -> ModelSource:
    """The folder pinned by its files; `marker` is the file that makes it a model (an adapter:
    adapter_config.json)."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        raise ModelNotFoundError(f"model {name!r}: no folder at {folder.resolve()}")
    if not (folder / marker).exists():
        raise ModelNotFoundError(f"model {name!r}: the folder {folder.resolve()} holds no {marker}")
    folder = folder.resolve()
    files = {str(p.relative_to(folder)): [p.stat().st_size, file_hash(p)] for p in model_files(folder)}
    return ModelSource("local", str(folder), {"files": files})


def resolve(source: ModelSource, marker: str = "config.json") -> Path:
    """The folder, once its files are checked to be the ones the run was planned with."""
    now = identify(source.where, marker)
    if now.pin != source.pin:
        raise ModelChangedError(describe_change(source.to_json(), now) + "; the run was planned with the old ones")
    return Path(source.where)
