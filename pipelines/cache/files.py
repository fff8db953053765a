"""The response cache's folder as files, on the storage layer (pipelines/store/storage/)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.cache.key_filter import KeyFilter
from pipelines.store.storage import open_storage

ROW_GROUP_ROWS = 2048  # what one key read fetches from a shard file
PARALLEL_REQUESTS = 16  # storage requests of one lookup or compaction step in flight at once
FILTER_KEY = b"spotbatch.key_filter"  # a shard file's footer: the Bloom filter of its keys


class CacheFiles:
    """The cache folder's file operations."""

    def __init__(self, path: str, storage_options: dict[str, Any] | None = None):
        self.storage = open_storage(path, storage_options)
        self.fs, self.root = self.storage.fs, self.storage.root

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def exists(self) -> bool:
        return self.storage.exists(self.root)

    def parquet_files(self, folder: str) -> list[str]:
        """The finished files under `folder` (a file being written is named otherwise)."""
        return [f for f in self.storage.find(self.path(folder)) if f.endswith(".parquet")]

    def parquet_sizes(self, folder: str) -> dict[str, int]:
        """The finished files under `folder` and their sizes, from one listing."""
        return {f: n for f, n in self.storage.sizes(self.path(folder)).items() if f.endswith(".parquet")}

    def leftovers(self, folder: str) -> list[str]:
        """Files writers killed while writing left under `folder`."""
        return self.storage.leftovers(self.path(folder))

    def modified(self, path: str) -> float | None:
        return self.storage.modified(path)

    def write(self, name: str, table: pa.Table, key_filter: bool = False) -> str:
        """Write a file whole or not at all: a killed writer leaves nothing a reader takes (the
        storage's put). `key_filter`: a Bloom filter of its keys goes into its footer (shard files)."""
        buf = io.BytesIO()
        with pq.ParquetWriter(buf, table.schema) as writer:
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            if key_filter:  # in the footer only: in the Arrow schema too, every read would parse it twice
                keys = table.column("key").to_pylist()
                writer.add_key_value_metadata({FILTER_KEY: KeyFilter.of(keys).to_bytes()})
        final = self.path(name)
        self.storage.put(final, buf.getvalue())
        return final

    def create(self, name: str, data: bytes) -> None:
        """Create a small file, or raise FileExistsError (the storage's create-if-absent)."""
        self.storage.create(self.path(name), data)

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> Iterator[Any]:
        """fn over items, several at a time: an object store answers each request in tens of ms."""
        if len(items) <= 1:
            return iter([fn(i) for i in items])
        with ThreadPoolExecutor(min(PARALLEL_REQUESTS, len(items))) as pool:
            return iter(list(pool.map(fn, items)))

    def open(self, path: str):
        """For reading parts of a file (a footer, row groups); on S3 a HEAD first, for its size."""
        return self.storage.open(path)

    def read(self, path: str) -> io.BytesIO:
        """A whole file in one request (a GET, where open() would first ask its size): entries
        files, read by every actor of a fleet, and files being merged."""
        data = self.storage.read(path)
        if data is None:
            raise FileNotFoundError(path)
        return io.BytesIO(data)

    def read_bytes(self, path: str) -> bytes | None:
        return self.storage.read(path)

    def remove(self, path: str) -> None:
        self.storage.delete(path)
