"""The output's manifest (the plan, and the fingerprint of what decides the answers), written
once, and checked before anything is built from it."""

from __future__ import annotations

import json
from typing import Any

from pipelines.store.files import StoreFiles
from pipelines.store.layout import FINGERPRINT, MANIFEST, UNIT_ID
from spotbatch.errors import OutputError


class ManifestFiles(StoreFiles):
    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest, checked before anything is built from it: the folder may have been
        written by anyone, and unit ids become file names."""
        data = self.read(MANIFEST)
        if data is None:
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
            self.storage.create(self._path(MANIFEST), data, durable=True)
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
