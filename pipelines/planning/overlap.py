"""The input, the output and the response cache kept apart, checked before anything is written.

An output inside what the input names would have its results read as input on the next run
(and every resume refused: `part-... has no column 'text'`); a cache there, its answers. The
other way round, an input inside the output or the cache would be written into, moved aside by
--new-run, or compacted away. An output only shares a parent with the input when the input's
listing never reaches its files: a glob that does not match them, or (Parquet input) a hidden
folder such as `data/_results/`, which readers skip.

Paths are compared as the storage names them: local ones absolute, symlinks resolved, no
trailing slash; an object store's by bucket and key, on the same endpoint.
"""

from __future__ import annotations

import re
from typing import Any

from fsspec.core import url_to_fs
from fsspec.utils import glob_translate

from pipelines.planning.inputs import is_hidden, listed_root
from pipelines.redact import redact_url
from pipelines.spec import BATCH_KINDS, PipelineSpec, SpecError
from pipelines.store.storage.paths import resolved, store_identity

# For the output and the cache: files each holds, as an input listing would meet them; what
# would go wrong were the input to read them; what would, were the input inside it.
FOLDERS = {
    "output.path": (("part-0.parquet", "_spotbatch/manifest.json"),
                     "the run's results would be read as its input on the next run. Choose an output path",
                     "a run writes there, and --new-run moves what it finds aside"),
    "cache.path": (("entries/0.parquet", "shards/00/0.parquet"),
                   "the cache's answers would be read as input. Choose a cache path",
                   "the cache's compaction rewrites and removes files there"),
}


def check_apart(spec: PipelineSpec) -> None:
    """Refuse (SpecError, naming both fields) an output or cache.path the input would read, and
    an input inside the output or cache.path."""
    inputs = [(f"input.paths[{i}]", p, where(p, spec.input.storage_options)) for i, p in enumerate(spec.input.paths)]
    folders = [("output.path", spec.output.path, spec.output.storage_options)]
    if spec.cache.path:
        folders.append(("cache.path", spec.cache.path, spec.cache.storage_options))
    skip_hidden = spec.input.kind not in BATCH_KINDS  # batch files are listed whole (pipelines/formats/)
    problems = []
    for name, path, options in folders:
        files, read, written = FOLDERS[name]
        store, folder = where(path, options)
        for field, pattern, (in_store, glob) in inputs:
            if in_store != store:
                continue
            if any(lists(glob, f"{folder}/{f}", skip_hidden) for f in files):
                problems.append(f"{name} {redact_url(path)} is inside {field} {redact_url(pattern)}: {read} "
                                f"outside the input.")
            elif inside(listed_root(glob), folder):
                problems.append(f"{field} {redact_url(pattern)} is inside {name} {redact_url(path)}: {written}. "
                                f"Keep the input outside it.")
    if problems:
        raise SpecError("; ".join(problems))


def where(path: str, options: dict[str, Any]) -> tuple[str, str]:
    """(which storage, the path in it) of a path or glob, normalised for comparing."""
    fs, stripped = url_to_fs(path, **options)
    root = listed_root(stripped)  # symlinks are resolved in the part before any wildcard
    return store_identity(fs, options), (resolved(fs, root) + stripped[len(root):]).rstrip("/") or "/"


def inside(path: str, folder: str) -> bool:
    """`path` is `folder` or below it.

    >>> inside("/a/b", "/a"), inside("/a", "/a"), inside("/ab", "/a")
    (True, True, False)
    """
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def lists(pattern: str, file: str, skip_hidden: bool) -> bool:
    """Whether listing `pattern` (a file, a folder or a glob, as pipelines/planning/inputs.py expands
    it) would include `file`: a glob's match that is a folder is listed whole.

    >>> lists("/in", "/in/out/part-0.parquet", True), lists("/in/*.parquet", "/in/out/part-0.parquet", True)
    (True, False)
    >>> lists("/in/*", "/in/out/part-0.parquet", True), lists("/in", "/in/_out/part-0.parquet", True)
    (True, False)
    """
    root = listed_root(pattern)
    if skip_hidden and is_hidden(file, root):
        return False
    if root == pattern:  # no wildcard
        return inside(file, pattern)
    match = re.compile(glob_translate(pattern)).match
    parts = file.split("/")
    return any(match("/".join(parts[:n])) for n in range(1, len(parts) + 1))
