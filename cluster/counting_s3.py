"""s3fs's filesystem, counting each request it makes to S3 (cluster/storage_requests.py)."""

from __future__ import annotations

from fsspec.asyn import sync_wrapper
from s3fs import S3FileSystem

from cluster.storage_requests import record


class CountingS3FileSystem(S3FileSystem):
    async def _call_s3(self, method, *args, **kwargs):
        record(method)
        return await super()._call_s3(method, *args, **kwargs)

    # s3fs's files (reads and writes through `open`) call the blocking form, which s3fs binds to
    # its own `_call_s3`: bound again here, to ours.
    call_s3 = sync_wrapper(_call_s3)
