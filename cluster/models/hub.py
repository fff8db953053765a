"""A Hugging Face hub repo id (`org/name`), at `model.revision` (branch, tag or commit).

Planning resolves the revision to a commit once, and every engine actor downloads exactly
that commit, so a repo that moves during a night's run cannot mix two models in one output.
Weights go into the user's own hub cache (HF_HOME, HF_HUB_CACHE) with the user's HF_TOKEN,
as huggingface_hub does everywhere; its own locks make concurrent downloads on a node safe.
With HF_HUB_OFFLINE set, only the cache is used. The environment is read at call time, so
a notebook that sets it after importing spotbatch is honoured.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from cluster.models.errors import ModelNotFoundError
from cluster.models.source import ModelSource

log = logging.getLogger("spotbatch.models")

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")


def is_repo_id(name: str) -> bool:
    return bool(REPO_ID.match(name)) and ".." not in name and not name.endswith((".", "-"))


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def hub_cache() -> str:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def _from_cache(name: str, revision: str, why: str, marker: str = "config.json") -> ModelSource:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(name, revision=revision, cache_dir=hub_cache(), local_files_only=True,
                                        allow_patterns=[marker]))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        raise ModelNotFoundError(
            f"model {name!r} revision {revision!r} is not in the hub cache at {hub_cache()} and {why}: download "
            f"it first (hf download {name} --revision {revision}) or point HF_HOME at a cache that holds it") from None
    if not (folder / marker).exists():
        raise ModelNotFoundError(f"model {name!r}: the cached snapshot {folder} holds no {marker}")
    return ModelSource("hub", f"{name}@{revision}", {"repo": name, "commit": folder.name})


def identify(name: str, revision: str | None, marker: str = "config.json") -> ModelSource:
    """The commit `revision` names now; the repo must hold a config.json. Offline, or when the
    hub cannot be reached (as huggingface_hub itself does), the cache's ref decides."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    revision = revision or "main"
    if offline():
        return _from_cache(name, revision, "HF_HUB_OFFLINE is set", marker)
    try:
        info = HfApi().model_info(name, revision=revision)
    except GatedRepoError:
        raise ModelNotFoundError(f"model {name!r} is gated: accept its terms on the hub and set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise ModelNotFoundError(f"model {name!r}: no revision {revision!r} on the hub") from None
    except RepositoryNotFoundError:
        raise ModelNotFoundError(f"model {name!r}: no such repo on the hub, or HF_TOKEN cannot read it") from None
    except HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", "?")
        raise ModelNotFoundError(f"model {name!r} revision {revision!r}: the hub answered HTTP {status}") from None
    except Exception as err:  # noqa: BLE001 - no network: the cache may still hold the revision
        source = _from_cache(name, revision, f"the hub could not be reached ({err.__class__.__name__})", marker)
        log.warning("the hub could not be reached (%s); using %s@%s from the cache: commit %s",
                    err.__class__.__name__, name, revision, source.pin["commit"])
        return source
    if marker not in {s.rfilename for s in info.siblings or []}:
        raise ModelNotFoundError(f"model {name!r} revision {revision!r} holds no {marker}")
    return ModelSource("hub", f"{name}@{revision}", {"repo": name, "commit": info.sha})


def resolve(source: ModelSource) -> Path:
    """The snapshot folder of the pinned commit, downloaded into the hub cache if need be."""
    from huggingface_hub import snapshot_download

    repo, commit = source.pin["repo"], source.pin["commit"]
    try:
        return Path(snapshot_download(repo, revision=commit, cache_dir=hub_cache(), local_files_only=offline()))
    except Exception as err:
        raise ModelNotFoundError(f"model {repo!r} at commit {commit}: could not get it on this node "
                                 f"(hub cache {hub_cache()}): {err.__class__.__name__}") from None
