"""A model folder at any fsspec URL (`s3://bucket/prefix/`, `gs://...`), with
`model.storage_options` for its endpoint and credentials.

Planning pins the folder's listing: every file's size and ETag (or version, or generation).
Each node downloads the folder once into its node cache, under a folder named by the URL and
the pin, so a new checkpoint at the same URL is a new folder and never mixes with the old.
The download fills a staging folder, checked against the pin, and is renamed into place only
when complete (cluster/models/node_cache.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cluster.models.errors import ModelChangedError, ModelNotFoundError
from cluster.models.node_cache import fill_once, models_dir
from cluster.models.source import ModelSource, describe_change

# What names a file's content in a listing, by store: S3 (ETag, VersionId), GCS (generation,
# md5Hash), Azure (etag); the modification time where there is nothing better.
CONTENT_KEYS = ("ETag", "etag", "VersionId", "version_id", "generation", "md5Hash", "content_md5",
                "Content-MD5", "Digest", "LastModified", "last_modified", "mtime")  # HTTP: ETag, Content-MD5, Digest


def _fs(url: str, options: dict[str, Any]):
    import fsspec

    fs, root = fsspec.core.url_to_fs(url, **options)
    return fs, root.rstrip("/")


def _listing(fs, root: str) -> dict[str, list]:
    fs.invalidate_cache()  # a listing fsspec kept from before would hide a change
    files: dict[str, list] = {}
    for path, info in fs.find(root, detail=True).items():
        rel = path[len(root):].lstrip("/")
        if info.get("type") == "directory" or not rel or path.endswith("/"):
            continue
        if info.get("size") is None:  # a web server's folder page links files without sizes: ask each
            try:
                info = fs.info(path)
            except Exception as err:  # noqa: BLE001 - its text may quote the URL, userinfo and all
                raise ModelNotFoundError(f"{rel}: the server would not say its size ({err.__class__.__name__})") \
                    from None
        content = next((str(info[k]) for k in CONTENT_KEYS if info.get(k) is not None), None)
        files[rel] = [int(info.get("size") or 0), content]
    return files


def identify(url: str, options: dict[str, Any], where: str, marker: str = "config.json") -> ModelSource:
    try:
        fs, root = _fs(url, options)
        files = _listing(fs, root)
    except ModelNotFoundError as err:  # a file of it said by name (_listing), never with the URL
        raise ModelNotFoundError(f"model {where!r}: {err}") from None
    except ImportError as err:  # no fsspec driver for the scheme: its message names the package
        raise ModelNotFoundError(f"model {where!r}: cannot open that URL ({err})") from None
    except ValueError as err:  # its message may quote the URL, credentials and all
        raise ModelNotFoundError(f"model {where!r}: cannot open that URL ({err.__class__.__name__})") from None
    except PermissionError:
        raise ModelNotFoundError(f"model {where!r}: access denied; check model.storage_options") from None
    except Exception as err:  # noqa: BLE001 - the store's own errors name what went wrong (never the secret)
        raise ModelNotFoundError(f"model {where!r}: could not list it ({err.__class__.__name__})") from None
    if not files:
        raise ModelNotFoundError(f"model {where!r}: nothing there (no such folder, or it is empty)")
    if marker not in files:
        raise ModelNotFoundError(f"model {where!r}: the folder holds no {marker} (found: "
                                 f"{', '.join(sorted(files)[:5])}{', ...' if len(files) > 5 else ''})")
    return ModelSource("url", where, {"files": files})


def node_folder(source: ModelSource) -> Path:
    """Where this pin of this URL lives in the node cache."""
    name = hashlib.sha256(source.where.encode()).hexdigest()[:12]
    return models_dir() / "url" / f"{name}-{source.digest()}"


def resolve(source: ModelSource, url: str, options: dict[str, Any], marker: str = "config.json") -> tuple[Path, bool]:
    """The node's copy of the pinned folder, downloaded once; True if this call downloaded it."""
    dest = node_folder(source)

    def download(staging: Path) -> None:
        fs, root = _fs(url, options)
        now = ModelSource("url", source.where, {"files": _listing(fs, root)})
        if now.pin != source.pin:
            raise ModelChangedError(describe_change(source.to_json(), now) + "; the run was planned with the old ones")
        files = sorted(source.pin["files"].items())
        for rel, _ in files:
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        # One call for all files: async stores (s3fs, gcsfs) fetch them concurrently.
        fs.get([f"{root}/{rel}" for rel, _ in files], [str(staging / rel) for rel, _ in files])
        for rel, (size, _) in files:
            got = (staging / rel).stat().st_size
            if got != size:
                raise ModelChangedError(f"model {source.where!r}: {rel} arrived with {got} bytes, "
                                        f"the listing says {size}")
        again = _listing(fs, root)
        if again != source.pin["files"]:  # changed while we downloaded: never keep a mix of two
            raise ModelChangedError(f"model {source.where!r} changed while it was downloaded")

    downloaded = fill_once(dest, download, marker)
    return dest, downloaded
