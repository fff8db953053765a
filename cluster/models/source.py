"""What planning found a model to be: its kind, where it is, and the pin that says which
weights those are (a hub commit, a listing, content hashes). The pin decides the run's
fingerprint and the response-cache key, and every engine actor loads exactly what it names.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelSource:
    kind: str  # builtin | local | hub | url
    where: str  # the name or path as written, with any URL userinfo redacted
    pin: dict[str, Any] = field(default_factory=dict)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.pin, sort_keys=True).encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSource:
        return cls(**data)


def describe_change(old: dict[str, Any], new: ModelSource) -> str:
    """What differs between the weights a run was planned with and the ones found now."""
    before, now = old.get("pin", {}), new.pin
    if old.get("kind") != new.kind or old.get("where") != new.where:
        return f"model {old.get('where')!r} ({old.get('kind')}) is now {new.where!r} ({new.kind})"
    if "commit" in now:
        return (f"model {new.where!r}: revision now at commit {now['commit']}, was {before.get('commit')} "
                f"(model.revision: {before.get('commit')} resumes on the old one)")
    old_files, new_files = before.get("files", {}), now.get("files", {})
    changed = sorted(n for n in old_files.keys() & new_files.keys() if old_files[n] != new_files[n])
    added, gone = sorted(new_files.keys() - old_files.keys()), sorted(old_files.keys() - new_files.keys())
    what = [f"changed: {', '.join(changed)}"] * bool(changed) + [f"new: {', '.join(added)}"] * bool(added) \
        + [f"gone: {', '.join(gone)}"] * bool(gone)
    if not what:
        what = [f"{k} {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(before.keys() | now.keys())
                if before.get(k) != now.get(k)]
    return f"model {new.where!r} ({new.kind}): new weights at the same {'path' if new.kind != 'builtin' else 'name'} " \
           f"({'; '.join(what)})"
