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

A commit never overwrites: it is the storage layer's create-if-absent (pipelines/store/storage/:
on a file system a hard link from the staged file to the final name, which fails if the name
exists; on S3 an exclusive create, which S3 turns into a conditional put, If-None-Match). The
storage refuses a second commit of a unit, so a stale attempt of an actor thought dead cannot
add a second copy.

OutputStore is assembled from its parts: the files (pipelines/store/files.py), the manifest
(manifest.py), the units' commits (units.py) and the move aside of a run (supersede.py).
"""

from __future__ import annotations

import uuid

from pipelines.store.layout import (  # noqa: F401 (importable from here as before)
    ACTORS,
    ATTEMPTS,
    FINGERPRINT,
    FOLDED,
    LOADED,
    MANIFEST,
    PART_PREFIX,
    PROBE,
    REPLACED,
    RUNS,
    STAGING,
    STATS_KEY,
    STOP,
    SUPERSEDED,
    SUPERSEDING,
    UNIT_ID,
)
from pipelines.store.manifest import ManifestFiles
from pipelines.store.storage import STAGED, already_exists  # noqa: F401 (importable from here as before)
from pipelines.store.supersede import Supersede
from pipelines.store.units import REPLACE_RETRIES, STATS_READS_IN_FLIGHT, UnitFiles  # noqa: F401
from spotbatch.errors import OutputError, StorageError  # noqa: F401 (their home; importable from here as before)


class OutputStore(UnitFiles, Supersede, ManifestFiles):
    def check_is_ours(self) -> None:
        """Refuse a folder that holds files spotbatch did not write, before writing anything."""
        if not self.storage.exists(self.root) or self.read_manifest() is not None:
            return
        if not self.storage.isdir(self.root):
            raise OutputError(f"output path {self.url} is a file, not a folder")
        ours = {STAGING, MANIFEST.split("/")[0]}  # an interrupted --new-run leaves only _spotbatch/
        names = self.names()
        if self.read(SUPERSEDING) is not None:  # and, interrupted early, the old run's parts
            names = [n for n in names if not n.startswith(PART_PREFIX)]
        foreign = [n for n in names if n not in ours]  # exact names: a user's `notes.staging` is not ours
        if foreign:
            raise OutputError(
                f"output path {self.url} already holds files that are not a spotbatch run "
                f"(e.g. {foreign[0]}); choose an empty or new folder"
            )

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
                self.remove(name)  # our marker only: another run may be probing beside it
            except Exception:  # a marker left behind harms nothing: readers skip _spotbatch/
                pass

    def check_conditional_replace(self) -> None:
        """`run --retry-failed` merges retried rows into committed results by a conditional
        replace (put-if-version); a store without one is refused at planning, naming why."""
        if not self.storage.replaces_if_version():
            raise OutputError(
                f"the storage at {self.url} offers no conditional replace (a PUT with If-Match, "
                f"as S3 has): run --retry-failed merges retried rows into a unit's results and "
                f"must not lose another merge's rows there. Nothing was run; retry on a store "
                f"that has it (S3, or a local/network file system), or start a new run.")
