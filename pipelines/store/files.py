"""The output folder as named files: every read and write of the output goes through here, onto
the storage layer (pipelines/store/storage/), with names kept inside the folder."""

from __future__ import annotations

from typing import Any

from pipelines.redact import redact_url
from pipelines.store.storage import STAGED, open_storage
from spotbatch.errors import OutputError


class StoreFiles:
    def __init__(self, path: str, storage_options: dict[str, Any] | None = None):
        self.url = redact_url(path)  # for messages; a URL's userinfo is a credential
        self.storage_options = dict(storage_options or {})
        self.storage = open_storage(path, self.storage_options)
        self.fs, self.root = self.storage.fs, self.storage.root

    def _path(self, name: str) -> str:
        """PATH/name; a name that would lead outside PATH is refused, whatever a record says."""
        if name.startswith("/") or ".." in name.split("/"):
            raise OutputError(f"refused to touch {name!r}: it leads outside the output {self.url}")
        return f"{self.root}/{name}"

    def create(self, name: str, data: bytes) -> None:
        """Create PATH/name holding data, or raise FileExistsError."""
        self._create(self._path(name), data)

    def _create(self, path: str, data: bytes) -> None:
        self.storage.create(path, data)

    def put(self, name: str, data: bytes) -> None:
        """Write PATH/name whole, replacing what was there (for records that are rewritten)."""
        self.storage.put(self._path(name), data)

    def read(self, name: str) -> bytes | None:
        return self.storage.read(self._path(name))

    def read_many(self, names: list[str]) -> dict[str, bytes]:
        """Several small files at once (s3fs fetches them concurrently)."""
        data = self.storage.read_many([self._path(n) for n in names])
        return {p[len(self.root) + 1 :]: v for p, v in data.items()}

    def find(self, folder: str) -> list[str]:
        """Names (relative to PATH) of the files under PATH/folder, without records still being
        written: a reader during a run would see them half made, under a name that is no record's."""
        return [p[len(self.root) + 1 :] for p in self.storage.find(self._path(folder)) if not p.endswith(STAGED)]

    def exists(self, name: str) -> bool:
        return self.storage.exists(self._path(name))

    def remove(self, name: str, recursive: bool = False) -> None:
        """Remove PATH/name (a folder with `recursive`); one gone already is fine."""
        self.storage.delete(self._path(name), recursive=recursive)

    def names(self) -> list[str]:
        """The names directly in PATH."""
        return self.storage.list(self.root)
