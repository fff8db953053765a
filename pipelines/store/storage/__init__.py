"""The one storage layer under the output, its records, the response cache and the compile
cache: create-if-absent, put, put-if-version-matches, read-with-version, list, move, delete
(pipelines/store/storage/base.py), for a local file system (local.py) and for object stores
through fsspec (remote.py). Each store's quirks are handled here, once: every shape of
"exists" (exists.py), S3's 409 retries, S3's missing rename, the local fast paths. Nothing
outside this package asks whether a store is local."""

from __future__ import annotations

from typing import Any

from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from pipelines.store.storage.base import STAGED, Storage
from pipelines.store.storage.exists import already_exists
from pipelines.store.storage.local import LocalStorage
from pipelines.store.storage.remote import FsspecStorage

__all__ = ["STAGED", "FsspecStorage", "LocalStorage", "Storage", "already_exists", "open_storage",
           "storage_for"]


def open_storage(url: str, storage_options: dict[str, Any] | None = None) -> Storage:
    """The storage at `url` (a folder or s3://, gs://, ...), rooted there.

    No listing cache: what is committed must always be read from the storage itself (s3fs
    would otherwise answer from listings taken before other actors committed)."""
    fs, root = url_to_fs(url, **{"use_listings_cache": False, **(storage_options or {})})
    return storage_for(fs, root)


def storage_for(fs: Any, root: str = "") -> Storage:
    """The storage over an fsspec file system a caller already holds."""
    if isinstance(fs, LocalFileSystem):
        return LocalStorage(root, fs)
    return FsspecStorage(fs, root)
