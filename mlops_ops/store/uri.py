"""What a URI names: a local path (a plain path or ``file://``) or an S3 bucket and key."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlops_ops.errors import SpecError


def local_path(uri: str) -> Path | None:
    """The local path a plain path or ``file://`` URI names, or None for a remote URI."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(uri).absolute()
    return None


def split_s3(uri: str) -> tuple[str, str]:
    """The bucket and key of an ``s3://bucket/key`` URI.

    Raises:
        SpecError: ``uri`` is not an ``s3://`` URI with a bucket.
    """
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise SpecError(f"{uri!r} is not an s3://bucket/key URI")
    return parsed.netloc, parsed.path.lstrip("/")
