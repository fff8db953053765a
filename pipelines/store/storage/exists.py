"""Every shape in which a store says "that object is there (or changed)", recognised in one place."""

from __future__ import annotations


def already_exists(err: BaseException) -> bool:
    """Whether a refused conditional write means "the object is there (or changed)", in any of
    the shapes stores use: FileExistsError (a file system; s3fs for AWS's 412 on If-None-Match),
    412 PreconditionFailed without its Condition, 409 ConditionalRequestConflict.

    >>> already_exists(FileExistsError("x"))
    True
    >>> already_exists(OSError(22, "Invalid argument"))
    False
    """
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, FileExistsError):
            return True
        response = getattr(seen, "response", None) or {}
        code = response.get("Error", {}).get("Code")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
