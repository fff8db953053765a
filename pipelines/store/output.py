"""The output folder: its manifest, and the commit of each unit's results, at most once.

Layout (readers such as `pyarrow.dataset.dataset(PATH)` skip names starting with _ or .):
    PATH/part-<unit>.parquet      committed results of one unit; its footer holds the unit's
                                  counts, so status needs no row scan
    PATH/_spotbatch/manifest.json the plan and the fingerprint of what decides the answers
    PATH/_spotbatch/attempts|actors|runs|stop/   the run's records (see pipelines/store/records.py)
    PATH/_spotbatch/superseded/   results of an earlier spec, moved aside by --new-run
    PATH/_spotbatch/replaced/     unit results as they were before `run --retry-failed` merged
                                  retried rows into them
    PATH/.staging/                results being written, before their commit

A commit never overwrites: on a file system it is a hard link from the staged file to the
final name (link fails if the name exists); elsewhere (S3) an exclusive create, which S3 turns
into a conditional put (If-None-Match). The storage refuses a second commit of a unit, so a
stale attempt of an actor thought dead cannot add a second copy.
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

MANIFEST = "_spotbatch/manifest.json"
# The run's records (pipelines/store/records.py writes them); they move with their results.
ATTEMPTS, ACTORS, RUNS, STOP = "_spotbatch/attempts", "_spotbatch/actors", "_spotbatch/runs", "_spotbatch/stop"
SUPERSEDED = "_spotbatch/superseded"
REPLACED = "_spotbatch/replaced"  # unit results replaced by a merge of retried rows
STAGING = ".staging"
PART_PREFIX = "part-"
STATS_KEY = b"spotbatch.unit"
STAGED = ".tmp"  # a small record being written beside its final name; listings skip it


class OutputError(ValueError):
    """An output path that this run must not write to."""


class OutputStore:
    def __init__(self, path: str, storage_options: dict[str, Any] | None = None):
        self.url = path
        self.storage_options = dict(storage_options or {})
        # No listing cache: what is committed must always be read from the storage itself
        # (s3fs would otherwise answer from listings taken before other actors committed).
        self.fs, self.root = url_to_fs(path, **{"use_listings_cache": False, **self.storage_options})
        self.root = self.root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"


    def part_name(self, unit_id: str) -> str:
        return f"{PART_PREFIX}{unit_id}.parquet"

    # -- manifest -------------------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.fs.cat_file(self._path(MANIFEST)))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def require_manifest(self) -> dict[str, Any]:
        """The manifest of the run this folder holds; an OutputError when it holds none."""
        manifest = self.read_manifest()
        if manifest is None:
            raise OutputError(f"no spotbatch run at {self.url} (no _spotbatch/manifest.json)")
        return manifest

    def create_manifest(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Write the manifest unless one exists; return the one that is there afterwards.

        Two runs started at once both try; the storage lets exactly one create it."""
        data = json.dumps(manifest, indent=1).encode()
        try:
            self._create(self._path(MANIFEST), data)
        except FileExistsError:
            pass
        found = self.read_manifest()
        assert found is not None
        return found

    def supersede(self, fingerprint: str) -> str:
        """Move a run's results, records and manifest under _spotbatch/superseded/, where
        readers do not see them and nothing is lost; returns where they went."""
        dest = f"{SUPERSEDED}/{fingerprint}-{time.strftime('%Y%m%dT%H%M%S')}"
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]
        moves = [n for n in names if n.startswith(PART_PREFIX)] + [ATTEMPTS, ACTORS, RUNS, STOP, MANIFEST]
        self.fs.makedirs(self._path(dest), exist_ok=True)
        for name in moves:
            if self.fs.exists(self._path(name)):
                self.fs.mv(self._path(name), self._path(f"{dest}/{name.rsplit('/', 1)[-1]}"), recursive=True)
        return self._path(dest)

    def check_is_ours(self) -> None:
        """Refuse a folder that holds files spotbatch did not write, before writing anything."""
        if not self.fs.exists(self.root) or self.read_manifest() is not None:
            return
        if not self.fs.isdir(self.root):
            raise OutputError(f"output path {self.url} is a file, not a folder")
        ours = (STAGING, MANIFEST.split("/")[0])  # an interrupted --new-run leaves only _spotbatch/
        foreign = [p for p in self.fs.ls(self.root, detail=False) if not p.rstrip("/").endswith(ours)]
        if foreign:
            name = foreign[0].rstrip("/").rsplit("/", 1)[-1]
            raise OutputError(
                f"output path {self.url} already holds files that are not a spotbatch run "
                f"(e.g. {name}); choose an empty or new folder"
            )

    # -- units ----------------------------------------------------------------------------
    def committed_units(self) -> set[str]:
        if not self.fs.exists(self.root):
            return set()
        names = (p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False))
        return {
            n[len(PART_PREFIX) : -len(".parquet")]
            for n in names
            if n.startswith(PART_PREFIX) and n.endswith(".parquet")
        }

    def is_committed(self, unit_id: str) -> bool:
        return self.fs.exists(self._path(self.part_name(unit_id)))

    def commit(self, unit_id: str, table: pa.Table, stats: dict[str, Any]) -> bool:
        """Commit a unit's results; False when the unit was committed already (nothing written)."""
        meta = dict(table.schema.metadata or {})
        meta[STATS_KEY] = json.dumps(stats).encode()
        table = table.replace_schema_metadata(meta)
        final = self._path(self.part_name(unit_id))
        if self.local:
            return self._commit_local(final, unit_id, table)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        try:
            self._create(final, buf.getvalue())
        except FileExistsError:
            return False
        return True

    def replace(self, unit_id: str, table: pa.Table, stats: dict[str, Any]) -> str:
        """Replace a committed unit's results with a merged version (`run --retry-failed`): the
        old file is copied to _spotbatch/replaced/ first, then the new one takes its name in one
        step (a rename locally, one PUT on S3), so readers see the old or the new, never both.
        Returns where the old version went."""
        meta = dict(table.schema.metadata or {})
        meta[STATS_KEY] = json.dumps(stats).encode()
        buf = io.BytesIO()
        pq.write_table(table.replace_schema_metadata(meta), buf)
        final = self._path(self.part_name(unit_id))
        kept = f"{REPLACED}/{unit_id}-{time.time_ns()}.parquet"
        self.create(kept, self.fs.cat_file(final))
        self.put(self.part_name(unit_id), buf.getvalue())
        return kept

    def read_unit(self, unit_id: str) -> pa.Table:
        with self.fs.open(self._path(self.part_name(unit_id)), "rb") as fh:
            return pq.read_table(fh)

    def _commit_local(self, final: str, unit_id: str, table: pa.Table) -> bool:
        staging = self._path(STAGING)
        os.makedirs(staging, exist_ok=True)
        staged = f"{staging}/{unit_id}-{uuid.uuid4().hex}.parquet"
        try:
            pq.write_table(table, staged)
            with open(staged, "rb") as fh:
                os.fsync(fh.fileno())
            os.link(staged, final)  # atomic, and refuses an existing name
            return True
        except FileExistsError:
            return False
        finally:
            if os.path.exists(staged):
                os.unlink(staged)

    def create(self, name: str, data: bytes) -> None:
        """Create PATH/name holding data, or raise FileExistsError."""
        self._create(self._path(name), data)

    def put(self, name: str, data: bytes) -> None:
        """Write PATH/name whole, replacing what was there (for records that are rewritten)."""
        path = self._path(name)
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            staged = f"{path}.{uuid.uuid4().hex}{STAGED}"
            with open(staged, "wb") as fh:
                fh.write(data)
            os.replace(staged, path)  # readers see the old or the new, never half
        else:
            self.fs.pipe_file(path, data)

    def read(self, name: str) -> bytes | None:
        try:
            return self.fs.cat_file(self._path(name))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read_many(self, names: list[str]) -> dict[str, bytes]:
        """Several small files at once (s3fs fetches them concurrently)."""
        if not names:
            return {}
        data = self.fs.cat([self._path(n) for n in names], on_error="omit")
        return {p[len(self.root) + 1 :]: v for p, v in data.items()}

    def find(self, folder: str) -> list[str]:
        """Names (relative to PATH) of the files under PATH/folder, without records still being
        written: a reader during a run would see them half made, under a name that is no record's."""
        root = self._path(folder)
        if not self.fs.exists(root):
            return []
        return [p[len(self.root) + 1 :] for p in self.fs.find(root) if not p.endswith(STAGED)]

    def _create(self, path: str, data: bytes) -> None:
        """Create `path` holding `data`, or raise FileExistsError if it exists."""
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            staged = f"{path}.{uuid.uuid4().hex}{STAGED}"
            with open(staged, "wb") as fh:
                fh.write(data)
            try:
                os.link(staged, path)
            finally:
                os.unlink(staged)
            return
        with self.fs.open(path, "xb") as fh:
            fh.write(data)

    def unit_stats(self, unit_id: str) -> dict[str, Any]:
        """The counts a committed unit carries in its footer."""
        with self.fs.open(self._path(self.part_name(unit_id)), "rb") as fh:
            meta = pq.ParquetFile(fh).schema_arrow.metadata or {}
        return json.loads(meta[STATS_KEY])
