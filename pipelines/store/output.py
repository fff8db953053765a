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
import re
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from pipelines.redact import redact_url
from spotbatch.errors import OutputError, StorageError  # noqa: F401 (their home; importable from here as before)

MANIFEST = "_spotbatch/manifest.json"
# The run's records (pipelines/store/records.py writes them); they move with their results.
ATTEMPTS, ACTORS, RUNS, STOP = "_spotbatch/attempts", "_spotbatch/actors", "_spotbatch/runs", "_spotbatch/stop"
FOLDED = "_spotbatch/folded"  # records of ended runs, folded into one file per compaction
LOADED = "_spotbatch/loaded"  # per model, the dtype the run's first engine loaded: every later one loads it too
SUPERSEDED = "_spotbatch/superseded"
SUPERSEDING = "_spotbatch/superseding.json"  # a --new-run's move in progress: where it goes
FINGERPRINT = "_spotbatch/fingerprint"  # the manifest's fingerprint alone, read before each commit
REPLACED = "_spotbatch/replaced"  # unit results replaced by a merge of retried rows
STAGING = ".staging"
PART_PREFIX = "part-"
STATS_KEY = b"spotbatch.unit"
STATS_READS_IN_FLIGHT = 16
STAGED = ".tmp"  # a small record being written beside its final name; listings skip it


UNIT_ID = re.compile(r"[A-Za-z0-9_.-]+")  # what a unit id may be: it names files
PROBE = "_spotbatch/probe"  # markers of the exclusive-create check, removed after it
CONFLICT_RETRIES = 3  # a 409 from a conditional write is looked at and tried again this often
REPLACE_RETRIES = 20  # a merge that keeps losing the race to other merges gives up after this
LOCK_STALE_SECONDS = 600.0  # a unit's replacement lock older than this was left by a dead merge


def already_exists(err: BaseException) -> bool:
    """Whether a refused conditional write means "the object is there (or changed)", in any of
    the shapes stores use: FileExistsError (a file system; s3fs for AWS's 412 on If-None-Match),
    412 PreconditionFailed without its Condition, 409 ConditionalRequestConflict.

    >>> already_exists(FileExistsError("x"))
    True
    >>> already_exists(OSError(22, "Invalid argument"))
    False
    """
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, FileExistsError):
            return True
        response = getattr(seen, "response", None) or {}
        code = response.get("Error", {}).get("Code")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class OutputStore:
    def __init__(self, path: str, storage_options: dict[str, Any] | None = None):
        self.url = redact_url(path)  # for messages; a URL's userinfo is a credential
        self.storage_options = dict(storage_options or {})
        # No listing cache: what is committed must always be read from the storage itself
        # (s3fs would otherwise answer from listings taken before other actors committed).
        self.fs, self.root = url_to_fs(path, **{"use_listings_cache": False, **self.storage_options})
        self.root = self.root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)

    def _path(self, name: str) -> str:
        """PATH/name; a name that would lead outside PATH is refused, whatever a record says."""
        if name.startswith("/") or ".." in name.split("/"):
            raise OutputError(f"refused to touch {name!r}: it leads outside the output {self.url}")
        return f"{self.root}/{name}"

    def part_name(self, unit_id: str) -> str:
        return f"{PART_PREFIX}{unit_id}.parquet"

    # -- manifest -------------------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest, checked before anything is built from it: the folder may have been
        written by anyone, and unit ids become file names."""
        try:
            data = self.fs.cat_file(self._path(MANIFEST))
        except (FileNotFoundError, NotADirectoryError):
            return None
        where = f"{self.url.rstrip('/')}/{MANIFEST}"
        try:
            manifest = json.loads(data)
        except ValueError:
            raise OutputError(f"{where} is not JSON: not a manifest spotbatch wrote") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("fingerprint"), str):
            raise OutputError(f"{where} has no fingerprint: not a manifest spotbatch wrote")
        for unit in manifest.get("units", []):
            unit_id = unit.get("unit_id") if isinstance(unit, dict) else None
            if not isinstance(unit_id, str) or not UNIT_ID.fullmatch(unit_id) or ".." in unit_id:
                raise OutputError(f"{where} names a unit {unit_id!r} that spotbatch never plans "
                                  f"(unit ids are letters, digits, _ . and -): refused, nothing written")
        return manifest

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
        self.pin_fingerprint(found["fingerprint"])
        return found

    def pin_fingerprint(self, fingerprint: str) -> None:
        """Write the manifest's fingerprint beside it, once (outputs made before it existed get
        it on their next run)."""
        if self.read(FINGERPRINT) is None:
            self.put(FINGERPRINT, fingerprint.encode())

    def fingerprint(self) -> str | None:
        """The fingerprint of the run this folder holds now, from a file small enough to read
        before every commit (the manifest holds the whole plan)."""
        data = self.read(FINGERPRINT)
        if data is not None:
            return data.decode()
        manifest = self.read_manifest()  # an output written before the small file existed
        return None if manifest is None else manifest["fingerprint"]

    def supersede(self, fingerprint: str) -> str:
        """Move a run's results, records and manifest under _spotbatch/superseded/, where
        readers do not see them and nothing is lost; returns where they went.

        The manifest goes first, so a late commit of the old run sees, right after it lands,
        that its run is gone and takes its file back out (pipelines/unit_protocol.py). A marker
        says where the move goes until it is done: an interrupted move is finished by the next
        run, never left half made."""
        # Never a folder an earlier move used: --new-run of an unchanged spec moves runs of one
        # fingerprint, and two in one second would otherwise land on each other.
        dest = f"{SUPERSEDED}/{fingerprint}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.put(SUPERSEDING, json.dumps({"dest": dest}).encode())
        return self.finish_supersede()

    def finish_supersede(self) -> str | None:
        """Finish a move begun by `supersede`; None when none was begun."""
        marker = self.read(SUPERSEDING)
        if marker is None:
            return None
        dest = json.loads(marker)["dest"]
        self.fs.makedirs(self._path(dest), exist_ok=True)
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]
        parts = [n for n in names if n.startswith(PART_PREFIX)]
        for name in [FINGERPRINT, MANIFEST, *parts, ATTEMPTS, ACTORS, RUNS, STOP, FOLDED, LOADED]:
            if self.fs.exists(self._path(name)):
                self._move(name, f"{dest}/{name.rsplit('/', 1)[-1]}")
        self.fs.rm(self._path(SUPERSEDING))
        return self._path(dest)

    def _move(self, name: str, dest: str) -> None:
        """Move PATH/name, a file or a folder, to PATH/dest. A folder on an object store has no
        name of its own to move (s3fs's recursive move copies a key for the folder itself and
        fails): each object under it moves on its own."""
        src, to = self._path(name), self._path(dest)
        if self.local or not self.fs.isdir(src):
            self.fs.mv(src, to, recursive=True)
            return
        for path in self.fs.find(src):
            self.fs.mv(path, to + path[len(src):])

    def retract(self, unit_id: str, fingerprint: str) -> str:
        """Move a unit's results that a superseded run committed late to where its run went."""
        dest = f"{SUPERSEDED}/{fingerprint}-late/{self.part_name(unit_id)}"
        self.fs.makedirs(self._path(dest.rsplit("/", 1)[0]), exist_ok=True)
        self.fs.mv(self._path(self.part_name(unit_id)), self._path(dest))
        return self._path(dest)

    def check_is_ours(self) -> None:
        """Refuse a folder that holds files spotbatch did not write, before writing anything."""
        if not self.fs.exists(self.root) or self.read_manifest() is not None:
            return
        if not self.fs.isdir(self.root):
            raise OutputError(f"output path {self.url} is a file, not a folder")
        ours = {STAGING, MANIFEST.split("/")[0]}  # an interrupted --new-run leaves only _spotbatch/
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]
        if self.read(SUPERSEDING) is not None:  # and, interrupted early, the old run's parts
            names = [n for n in names if not n.startswith(PART_PREFIX)]
        foreign = [n for n in names if n not in ours]  # exact names: a user's `notes.staging` is not ours
        if foreign:
            raise OutputError(
                f"output path {self.url} already holds files that are not a spotbatch run "
                f"(e.g. {foreign[0]}); choose an empty or new folder"
            )

    # -- units ----------------------------------------------------------------------------
    def committed_units(self) -> set[str]:
        try:
            listed = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:  # no output yet; on S3 also a prefix whose only object just went
            return set()
        names = (p.rstrip("/").rsplit("/", 1)[-1] for p in listed)
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

    def replace(self, unit_id: str, merge: Callable[[pa.Table], tuple[pa.Table, dict[str, Any]]]) -> str:
        """Replace a committed unit's results with `merge(current)` (`run --retry-failed`), only
        if nobody replaced them since they were read: a lost race reads again and merges again,
        so two merges, or a merge and a late actor, never lose each other's rows. The version
        read is first copied to _spotbatch/replaced/; then the new one takes the name in one step
        (a rename locally, one conditional PUT with If-Match on S3), so readers see the old or
        the new, never both. Returns where the old version went."""
        final = self._path(self.part_name(unit_id))
        for _ in range(REPLACE_RETRIES):
            with self._replacing(unit_id):
                data, version = self._read_versioned(final)
                table, stats = merge(pq.read_table(io.BytesIO(data)))
                meta = dict(table.schema.metadata or {})
                meta[STATS_KEY] = json.dumps(stats).encode()
                buf = io.BytesIO()
                pq.write_table(table.replace_schema_metadata(meta), buf)
                kept = f"{REPLACED}/{unit_id}-{time.time_ns()}.parquet"
                self.create(kept, data)
                if self._put_if_unchanged(final, buf.getvalue(), version):
                    return kept
        raise StorageError(f"unit {unit_id}'s results kept changing while being merged ({REPLACE_RETRIES} tries)")

    @contextmanager
    def _replacing(self, unit_id: str) -> Iterator[None]:
        """On a file system, replacements of one unit take turns: a lock file created
        exclusively (the same link as a commit), broken when older than any merge could take.
        Object stores need none: their If-Match refuses a put over a version not read."""
        if not self.local:
            yield
            return
        lock = f"{STAGING}/{unit_id}.replacing"
        while True:
            try:
                self.create(lock, str(os.getpid()).encode())
                break
            except FileExistsError:
                try:
                    age = time.time() - os.stat(self._path(lock)).st_mtime
                except FileNotFoundError:
                    continue
                if age > LOCK_STALE_SECONDS:
                    _unlink(self._path(lock))  # its holder died mid-merge
                time.sleep(0.05)
        try:
            yield
        finally:
            _unlink(self._path(lock))

    def _read_versioned(self, path: str) -> tuple[bytes, str | None]:
        """A file's bytes, and the ETag of exactly those bytes on an object store."""
        if self.local:
            return self.fs.cat_file(path), None
        for _ in range(REPLACE_RETRIES):
            etag = self.fs.info(path)["ETag"]
            data = self.fs.cat_file(path)
            if self.fs.info(path)["ETag"] == etag:  # unchanged across the read: these bytes are that version
                return data, etag
        raise StorageError(f"{path} kept changing while being read")

    def _put_if_unchanged(self, path: str, data: bytes, version: str | None) -> bool:
        """Write `path` whole unless it changed since `version` was read; False when it did."""
        if self.local:  # under the unit's replacement lock
            staged = f"{path}.{uuid.uuid4().hex}{STAGED}"
            with open(staged, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(staged, path)
            return True
        bucket, key, _ = self.fs.split_path(path)
        try:
            self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfMatch=version)
        except Exception as err:
            if already_exists(err):  # 412: the ETag is not the one read
                return False
            raise
        return True

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
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                with self.fs.open(path, "xb") as fh:
                    fh.write(data)
                return
            except Exception as err:
                if not already_exists(err):
                    raise
                # 412: it exists. 409 ConditionalRequestConflict: another conditional write to
                # the name was in flight, and may or may not land: look, and try again if not.
                if self.fs.exists(path):
                    raise FileExistsError(f"{path} exists") from err
                time.sleep(0.2 * 2**attempt)
        raise StorageError(f"conditional create of {path} kept conflicting with other writers")

    # -- the storage's promises -----------------------------------------------------------
    def check_exclusive_create(self) -> None:
        """Create a marker twice and expect the second to be refused: exactly-once rests on it.
        Some S3-compatible stores ignore If-None-Match (and some file systems refuse hard links);
        a run there is refused before any engine starts, naming why."""
        name = f"{PROBE}/{uuid.uuid4().hex}"
        try:
            self.create(name, b"first")
            try:
                self.create(name, b"second")
            except FileExistsError:
                return
            raise OutputError(
                f"the storage at {self.url} did not refuse a second create of the same object "
                f"(a conditional write, If-None-Match on S3): two writers of one unit could both "
                f"land, so spotbatch cannot promise each row once there. Use a store that honours "
                f"conditional writes (AWS S3, GCS, a recent MinIO) or a local/network file system.")
        except OSError as err:
            raise OutputError(f"the storage at {self.url} cannot create a file exclusively ({err!r}); "
                              f"spotbatch needs it to commit each unit once") from err
        finally:
            try:
                self.fs.rm(self._path(name))  # our marker only: another run may be probing beside it
            except Exception:  # a marker left behind harms nothing: readers skip _spotbatch/
                pass

    def unit_stats(self, unit_id: str) -> dict[str, Any]:
        """The counts a committed unit carries in its footer."""
        with self.fs.open(self._path(self.part_name(unit_id)), "rb") as fh:
            meta = pq.read_metadata(fh).metadata or {}  # the footer's key-values: no Arrow schema built
        return json.loads(meta[STATS_KEY])

    def unit_stats_many(self, unit_ids: list[str]) -> list[dict[str, Any]]:
        """unit_stats of each, STATS_READS_IN_FLIGHT at a time: `status` of a 100k-unit run reads
        100k footers, each tens of ms away on an object store."""
        with ThreadPoolExecutor(STATS_READS_IN_FLIGHT) as pool:
            return list(pool.map(self.unit_stats, unit_ids))
