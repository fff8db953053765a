"""The server's store: everything it knows lives here, nothing in its memory that a restart
would lose. A folder or an s3:// prefix, through the project's storage layer.

    files/<tenant>/<file id>/meta.json      the file object (OpenAI's)
    files/<tenant>/<file id>/content.jsonl  its bytes, as uploaded (or as a batch produced them)
    batches/<tenant>/<batch id>.json        the batch object, its status moved by the driver
    runs/<tenant>/<batch id>/               the batch's spotbatch run (its output folder)

A tenant is a key's hash's prefix (server/keys.py): a key reads only its own folder, so another
key's id is simply not there (404).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from pipelines.store.storage import Storage, open_storage


def new_id(prefix: str) -> str:
    """An id that sorts by creation time (then random), as OpenAI's look: file-..., batch_..."""
    return f"{prefix}{time.time_ns():x}{secrets.token_hex(6)}"


class State:
    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.storage: Storage = open_storage(self.url, self.storage_options)
        self._lock = threading.Lock()  # read-modify-write of a batch object (driver and cancel)

    def _path(self, name: str) -> str:
        return self.storage.path(name)

    def url_of(self, name: str) -> str:
        """The URL (with protocol) of a name in the store, as a run's spec names it."""
        return self.storage.fs.unstrip_protocol(self._path(name))

    def _json(self, name: str) -> dict[str, Any] | None:
        data = self.storage.read(self._path(name))
        return None if data is None else json.loads(data)

    # -- files ------------------------------------------------------------------------------
    def content_name(self, tenant: str, file_id: str) -> str:
        return f"files/{tenant}/{file_id}/content.jsonl"

    def add_file(self, tenant: str, meta: dict[str, Any], local_file: str) -> None:
        """The content first, then the object: a file listed is a file whole. Both durable: a
        batch record (durable) points at them, and must not outlive them in a power loss."""
        self.storage.put_from(self._path(self.content_name(tenant, meta["id"])), local_file, durable=True)
        self.storage.put(self._path(f"files/{tenant}/{meta['id']}/meta.json"), json.dumps(meta).encode(),
                         durable=True)

    def add_file_bytes(self, tenant: str, meta: dict[str, Any], data: bytes) -> None:
        self.storage.put(self._path(self.content_name(tenant, meta["id"])), data, durable=True)
        self.storage.put(self._path(f"files/{tenant}/{meta['id']}/meta.json"), json.dumps(meta).encode(),
                         durable=True)

    def file(self, tenant: str, file_id: str) -> dict[str, Any] | None:
        if "/" in file_id or file_id.startswith("."):
            return None
        return self._json(f"files/{tenant}/{file_id}/meta.json")

    def files(self, tenant: str) -> list[dict[str, Any]]:
        found = [self.file(tenant, name) for name in self.storage.list(self._path(f"files/{tenant}"))]
        return [f for f in found if f is not None]

    def open_content(self, tenant: str, file_id: str):
        return self.storage.open(self._path(self.content_name(tenant, file_id)))

    def delete_file(self, tenant: str, file_id: str) -> None:
        self.storage.delete(self._path(f"files/{tenant}/{file_id}/meta.json"))  # unlisted first
        self.storage.delete(self._path(f"files/{tenant}/{file_id}"), recursive=True)

    # -- batches ----------------------------------------------------------------------------
    def put_batch(self, tenant: str, batch: dict[str, Any]) -> None:
        self.storage.put(self._path(f"batches/{tenant}/{batch['id']}.json"), json.dumps(batch).encode(),
                         durable=True)

    def batch(self, tenant: str, batch_id: str) -> dict[str, Any] | None:
        if "/" in batch_id or batch_id.startswith("."):
            return None
        return self._json(f"batches/{tenant}/{batch_id}.json")

    def update_batch(self, tenant: str, batch_id: str,
                     change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> dict[str, Any]:
        """The batch object after `change` (which edits it in place; returning a dict replaces it)."""
        with self._lock:
            batch = self.batch(tenant, batch_id)
            batch = change(batch) or batch
            self.put_batch(tenant, batch)
            return batch

    def batches(self, tenant: str) -> list[dict[str, Any]]:
        names = self.storage.list(self._path(f"batches/{tenant}"))
        found = [self.batch(tenant, n[: -len(".json")]) for n in names if n.endswith(".json")]
        return [b for b in found if b is not None]

    def tenants(self) -> list[str]:
        return self.storage.list(self._path("batches"))

    def run_url(self, tenant: str, batch_id: str) -> str:
        return self.url_of(f"runs/{tenant}/{batch_id}")
