"""The S3 requests this process makes, counted by the class S3 prices them in, so a run's ledger
can say what its storage traffic cost beside what its GPUs cost.

Counted where s3fs makes every call to S3 (`_call_s3`, one per API request, its own retries
aside): `count_s3_requests()` registers, through fsspec's own `register_implementation`, a
subclass of s3fs's filesystem that counts (cluster/counting_s3.py) for `s3://` and `s3a://`.
Importing spotbatch registers nothing (a library must not change fsspec for its caller): each
process that counts calls it before its first storage call, the driver as a run starts
(pipelines/run.py), each engine actor as it starts (pipelines/engine/actor.py) and Ray's read tasks as
they read units (pipelines/stream/unit_rows.py). s3fs itself is only imported when an s3:// URL is used.
Other stores (GCS, Azure, local folders) are not counted; S3-compatible stores reached through
s3fs are, at S3's list prices.

A run's share is the difference between two snapshots: the driver's from the run's start to
its end (its run record), each engine actor's from when it took the run (its beats and its
attempts' end records); pipelines/store/ledger.py adds them up and prices them.
"""

from __future__ import annotations

import threading
from collections import Counter

# S3 API operation (s3fs's method name) -> the class S3 prices it in; the rest are priced as GETs.
CLASSES = {
    "list_objects_v2": "LIST", "list_objects": "LIST", "list_object_versions": "LIST", "list_buckets": "LIST",
    "get_object": "GET", "head_object": "HEAD", "head_bucket": "HEAD",
    "put_object": "PUT", "upload_part": "PUT", "upload_part_copy": "PUT", "copy_object": "COPY",
    "create_multipart_upload": "POST", "complete_multipart_upload": "POST",
    "delete_object": "DELETE", "delete_objects": "DELETE", "abort_multipart_upload": "DELETE",
}
COUNTING_CLASS = "cluster.counting_s3.CountingS3FileSystem"

_counts: Counter = Counter()
_lock = threading.Lock()


def count_s3_requests() -> None:
    """From now on, s3:// and s3a:// filesystems made by fsspec count their requests here."""
    import fsspec

    for protocol in ("s3", "s3a"):
        if protocol in fsspec.registry:  # its class is imported already: register ours the same way
            from cluster.counting_s3 import CountingS3FileSystem

            if fsspec.registry[protocol] is not CountingS3FileSystem:
                fsspec.register_implementation(protocol, CountingS3FileSystem, clobber=True)
        else:
            fsspec.register_implementation(protocol, COUNTING_CLASS, clobber=True)


def record(method: str) -> None:
    with _lock:
        _counts[CLASSES.get(method, "GET")] += 1


def snapshot() -> dict[str, int]:
    """This process's requests so far, by class."""
    with _lock:
        return dict(_counts)


def since(before: dict[str, int]) -> dict[str, int]:
    """The requests made since `before` (a snapshot), by class."""
    now = snapshot()
    return {k: n - before.get(k, 0) for k, n in now.items() if n - before.get(k, 0)}
