"""Find the input shards and check them before any engine starts.

Only Parquet footers and the id column are read here: planning 10M rows must stay cheap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from pipelines.redact import redact_url
from pipelines.spec import InputSpec
from pipelines.store.storage.paths import shown_path
from spotbatch.errors import InputError  # noqa: F401 (its home; importable from here as before)


@dataclass(frozen=True)
class Shard:
    """One input Parquet file, as listed at planning time."""

    path: str  # as the file system names it, with the protocol for remote ones
    size: int
    version: str  # mtime on a file system, ETag on S3: a changed file changes the run's fingerprint
    num_rows: int
    row_group_rows: tuple[int, ...]
    prompt_bytes: int  # uncompressed bytes of the prompt columns, for estimating tokens
    id_type: str


def is_hidden(path: str, root: str) -> bool:
    """Whether a file is one a dataset reader skips: any part of its path below the listed
    root starting with _ or . (Spark's _SUCCESS and _temporary/, .crc files, our own
    _spotbatch/), the rule pyarrow's dataset reader uses.

    >>> is_hidden("in/_temporary/0/part-1.parquet", "in"), is_hidden("in/a/part-1.parquet", "in")
    (True, False)
    """
    below = path[len(root):] if path.startswith(root) else path.rsplit("/", 1)[-1]
    return any(part.startswith(("_", ".")) for part in below.strip("/").split("/") if part)


def listed_root(pattern: str) -> str:
    """The part of a path or glob that the user named outright (hidden rules apply below it)."""
    for i, ch in enumerate(pattern):
        if ch in "*?[":
            return pattern[:i].rsplit("/", 1)[0]
    return pattern


def expand_paths(fs, pattern: str) -> list[str]:
    """The files a path, folder or glob names (a missing plain path is an InputError)."""
    if any(ch in pattern for ch in "*?["):
        matches = fs.glob(pattern)
        files: list[str] = []
        for match in matches:
            files.extend(fs.find(match) if fs.isdir(match) else [match])
        return files
    if not fs.exists(pattern):
        raise InputError(f"input path does not exist: {pattern}")
    return fs.find(pattern) if fs.isdir(pattern) else [pattern]


def file_version(info: dict) -> str:
    """What changes when a file does: its ETag on object stores, its mtime on disks."""
    for key in ("ETag", "etag", "mtime", "LastModified", "created"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


def list_shards(spec: InputSpec) -> list[Shard]:
    """Every Parquet file the spec's paths name, sorted, with footers checked."""
    shards: list[Shard] = []
    needed = spec.columns_read()
    for pattern in spec.paths:
        fs, root = url_to_fs(pattern, **spec.storage_options)
        files = sorted(p for p in expand_paths(fs, root) if not is_hidden(p, listed_root(root)))
        if not files:
            raise InputError(f"no Parquet files under {redact_url(pattern)}")
        for path in files:
            shards.append(_read_footer(fs, path, needed))
    _check_id_types(shards, spec.id_column)
    names = [s.path for s in shards]
    if len(set(names)) != len(names):
        raise InputError("input paths overlap: a file is named twice; list each shard once")
    return shards


def _check_id_types(shards: list[Shard], id_column: str) -> None:
    # Results of all units form one dataset, so the id column must have one type.
    first = shards[0]
    for shard in shards[1:]:
        if shard.id_type != first.id_type:
            raise InputError(
                f"column {id_column!r} is {shard.id_type} in {shard.path} but {first.id_type} "
                f"in {first.path}; ids must have one type in every shard"
            )


def _read_footer(fs, path: str, needed: list[str]) -> Shard:
    full = shown_path(fs, path)
    info = fs.info(path)
    try:
        with fs.open(path, "rb") as fh:
            meta = pq.ParquetFile(fh).metadata
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"not a Parquet file: {full} ({err})") from None
    schema = meta.schema.to_arrow_schema()
    missing = [c for c in needed if c not in schema.names]
    if missing:
        raise InputError(
            f"{full} has no column {', '.join(repr(c) for c in missing)}; "
            f"its columns are: {', '.join(schema.names)}"
        )
    id_type = schema.field(needed[0]).type
    if pa.types.is_nested(id_type) or pa.types.is_dictionary(id_type) or pa.types.is_null(id_type):
        raise InputError(f"{full}: id column {needed[0]!r} is {id_type}; ids must be single values "
                         f"(integers, text, dates, ...), not lists or structs")
    indices = [schema.get_field_index(c) for c in needed[1:]]
    prompt_bytes = sum(
        meta.row_group(g).column(i).total_uncompressed_size
        for g in range(meta.num_row_groups)
        for i in indices
    )
    return Shard(
        path=full,
        size=int(info.get("size") or 0),
        version=file_version(info),
        num_rows=meta.num_rows,
        row_group_rows=tuple(meta.row_group(g).num_rows for g in range(meta.num_row_groups)),
        prompt_bytes=prompt_bytes,
        id_type=str(schema.field(needed[0]).type),
    )


def check_unique_ids(spec: InputSpec, shards: list[Shard]) -> None:
    """Refuse duplicate ids across all shards.

    Only 8-byte hashes are kept (80 MB for 10M rows, freed after planning); a hash that
    repeats is confirmed against the real values so a collision never refuses good input.
    """
    hashes = []
    for shard in shards:
        ids = read_column(spec, shard, spec.id_column)
        if ids.null_count:
            raise InputError(f"{shard.path}: column {spec.id_column!r} has {ids.null_count} null ids")
        if pa.types.is_floating(ids.type) and pc.any(pc.is_nan(ids)).as_py():
            raise InputError(f"{shard.path}: column {spec.id_column!r} has NaN ids; NaN equals nothing, "
                             f"so its rows could never be matched to their results")
        hashes.append(hash_values(ids.to_pandas()))
    repeated = repeated_hashes(hashes)
    if not repeated:
        return
    found = first_repeat(((read_column(spec, shard, spec.id_column).to_pylist(), repeat(shard.path))
                          for shard in shards), repeated)
    if found is not None:
        value, first, second = found
        raise InputError(f"duplicate id {value!r} in column {spec.id_column!r}: "
                         f"in {first} and in {second}; ids must be unique")


def hash_values(values) -> np.ndarray:
    """An 8-byte hash of each value: what a check for duplicates keeps of 10M ids."""
    return pd.util.hash_array(np.asarray(values, dtype=object))


def repeated_hashes(hashes: list[np.ndarray]) -> set[int]:
    """The hashes that occur more than once across the arrays."""
    if not hashes:
        return set()
    allh = np.concatenate(hashes)
    allh.sort()
    return set(allh[1:][allh[1:] == allh[:-1]].tolist())


def first_repeat(chunks: Iterable[tuple[list, Iterable[str]]], repeated: set[int]) -> tuple[Any, str, str] | None:
    """The first value seen twice in chunks of (values, where each one is), with where it was
    seen first and second; only values whose hash is in `repeated` are kept to compare (a hash
    collision of two different values is no duplicate)."""
    seen: dict[Any, str] = {}
    for values, wheres in chunks:
        for value, h, where in zip(values, hash_values(values), wheres):
            if int(h) not in repeated:
                continue
            if value in seen:
                return value, seen[value], where
            seen[value] = where
    return None


def read_column(spec: InputSpec, shard: Shard, column: str, named_by: str = "") -> pa.ChunkedArray:
    """One column of a shard, whole (planning reads ids and routes this way); a column the
    shard lacks is an InputError that says which setting `named_by` it."""
    fs, path = url_to_fs(shard.path, **spec.storage_options)
    with fs.open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        if column not in pf.schema_arrow.names:
            why = f", which {named_by} names" if named_by else ""
            raise InputError(f"{shard.path} has no column {column!r}{why}")
        return pf.read(columns=[column]).column(0)
