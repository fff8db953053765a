"""`--new-run`: a run's results, records and manifest moved aside under _spotbatch/superseded/,
where readers do not see them and nothing is lost; and a late commit of such a run taken back."""

from __future__ import annotations

import json
import time
import uuid

from pipelines.store.files import StoreFiles
from pipelines.store.layout import (
    ACTORS,
    ATTEMPTS,
    FINGERPRINT,
    FOLDED,
    LOADED,
    MANIFEST,
    PART_PREFIX,
    RUNS,
    STOP,
    SUPERSEDED,
    SUPERSEDING,
    part_name,
)


class Supersede(StoreFiles):
    def supersede(self, fingerprint: str) -> str:
        """Move a run's results, records and manifest under _spotbatch/superseded/; returns
        where they went.

        The manifest goes first, so a late commit of the old run sees, right after it lands,
        that its run is gone and takes its file back out (pipelines/unit/protocol.py). A marker
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
        parts = [n for n in self.names() if n.startswith(PART_PREFIX)]
        for name in [FINGERPRINT, MANIFEST, *parts, ATTEMPTS, ACTORS, RUNS, STOP, FOLDED, LOADED]:
            self._move(name, f"{dest}/{name.rsplit('/', 1)[-1]}")  # one moved already is not there
        self.remove(SUPERSEDING)
        return self._path(dest)

    def _move(self, name: str, dest: str) -> None:
        """Move PATH/name, a file or a folder, to PATH/dest."""
        self.storage.move(self._path(name), self._path(dest))

    def retract(self, unit_id: str, fingerprint: str) -> str:
        """Move a unit's results that a superseded run committed late to where its run went."""
        dest = f"{SUPERSEDED}/{fingerprint}-late/{part_name(unit_id)}"
        self._move(part_name(unit_id), dest)
        return self._path(dest)
