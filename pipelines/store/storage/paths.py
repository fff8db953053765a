"""Paths as the storage layer names them, for the planning code that reads the input: a path as
a user would recognise it in a message, and where a path really is, for telling two apart. A
local folder and an object store differ here (symlinks, protocols, endpoints), so this is the
storage layer's to say, not the caller's."""

from __future__ import annotations

import os
from typing import Any

from fsspec.implementations.local import LocalFileSystem


def shown_path(fs: Any, path: str) -> str:
    """A path for a message: a local one as it is, any other with its protocol (s3://...)."""
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def store_identity(fs: Any, options: dict[str, Any]) -> str:
    """Which store a path is on: "file", or the protocol and endpoint of an object store, so two
    paths compare equal only on the same store."""
    if isinstance(fs, LocalFileSystem):
        return "file"
    protocol = fs.protocol[0] if isinstance(fs.protocol, (tuple, list)) else fs.protocol
    endpoint = options.get("endpoint_url") or (options.get("client_kwargs") or {}).get("endpoint_url")
    return f"{protocol} {endpoint or ''}"


def resolved(fs: Any, root: str) -> str:
    """`root` (a path with no wildcard) with its symlinks resolved on a local disk; an object
    store has none."""
    return os.path.realpath(root or "/") if isinstance(fs, LocalFileSystem) else root
