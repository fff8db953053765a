"""Each unit's committed results, at most once: the commit, the reads of results and of the
counts in their footers, and the replacement of a unit's results by a merge of retried rows."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.store.files import StoreFiles
from pipelines.store.layout import PART_PREFIX, REPLACED, STAGING, STATS_KEY, part_name
from spotbatch.errors import StorageError

STATS_READS_IN_FLIGHT = 16
REPLACE_RETRIES = 20  # a merge that keeps losing the race to other merges gives up after this


def with_stats(table: pa.Table, stats: dict[str, Any]) -> pa.Table:
    """The table with the unit's counts in its footer's key-values, so status needs no row scan."""
    meta = dict(table.schema.metadata or {})
    meta[STATS_KEY] = json.dumps(stats).encode()
    return table.replace_schema_metadata(meta)


class UnitFiles(StoreFiles):
    def part_name(self, unit_id: str) -> str:
        return part_name(unit_id)

    def committed_units(self) -> set[str]:
        return {n[len(PART_PREFIX) : -len(".parquet")]
                for n in self.names() if n.startswith(PART_PREFIX) and n.endswith(".parquet")}

    def is_committed(self, unit_id: str) -> bool:
        return self.exists(part_name(unit_id))

    def commit(self, unit_id: str, table: pa.Table, stats: dict[str, Any]) -> bool:
        """Commit a unit's results; False when the unit was committed already (nothing written).
        Staged under .staging/, which readers of the folder skip, until it takes its name."""
        try:
            with self.storage.create_staged(self._path(part_name(unit_id)), stage_in=self._path(STAGING),
                                           durable=True) as fh:
                pq.write_table(with_stats(table, stats), fh)
        except FileExistsError:
            return False
        return True

    def replace(self, unit_id: str, merge: Callable[[pa.Table], tuple[pa.Table, dict[str, Any]]]) -> str:
        """Replace a committed unit's results with `merge(current)` (`run --retry-failed`), only
        if nobody replaced them since they were read: a lost race reads again and merges again,
        so two merges, or a merge and a late actor, never lose each other's rows. The version
        read is first copied to _spotbatch/replaced/; then the new one takes the name in one step
        (the storage's put-if-version: a rename under a lock locally, a PUT with If-Match on S3),
        so readers see the old or the new, never both. Returns where the old version went."""
        final = self._path(part_name(unit_id))
        for _ in range(REPLACE_RETRIES):
            found = self.storage.read_versioned(final)
            if found is None:
                raise StorageError(f"unit {unit_id} has no committed results to merge into")
            data, version = found
            table, stats = merge(pq.read_table(io.BytesIO(data)))
            buf = io.BytesIO()
            pq.write_table(with_stats(table, stats), buf)
            kept = f"{REPLACED}/{unit_id}-{time.time_ns()}.parquet"
            # before the replace, and durably: the old version is never only in memory
            self.storage.create(self._path(kept), data, durable=True)
            if self.storage.put_if_version(final, buf.getvalue(), version):
                return kept
            self.remove(kept)  # this try lost: the version it kept is not the one replaced
        raise StorageError(f"unit {unit_id}'s results kept changing while being merged ({REPLACE_RETRIES} tries)")

    def read_unit(self, unit_id: str, columns: list[str] | None = None) -> pa.Table:
        """A committed unit's results; with `columns`, only those are read (Parquet reads each apart)."""
        with self.storage.open(self._path(part_name(unit_id))) as fh:
            return pq.read_table(fh, columns=columns)

    def unit_stats(self, unit_id: str) -> dict[str, Any]:
        """The counts a committed unit carries in its footer."""
        with self.storage.open(self._path(part_name(unit_id))) as fh:
            meta = pq.read_metadata(fh).metadata or {}  # the footer's key-values: no Arrow schema built
        return json.loads(meta[STATS_KEY])

    def unit_stats_many(self, unit_ids: list[str]) -> list[dict[str, Any]]:
        """unit_stats of each, STATS_READS_IN_FLIGHT at a time: `status` of a 100k-unit run reads
        100k footers, each tens of ms away on an object store."""
        with ThreadPoolExecutor(STATS_READS_IN_FLIGHT) as pool:
            return list(pool.map(self.unit_stats, unit_ids))
