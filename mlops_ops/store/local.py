"""Local files: their digest, atomic copies into place, and the error a failed local read or write raises."""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
from pathlib import Path

from mlops_ops.errors import MlopsError, SpecError, StoreError

_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_atomic(source: Path, dest: Path) -> None:
    """Copy ``source`` to a hidden ``.part`` file beside ``dest`` and rename it into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.part")
    try:
        # Create it with open() rather than mkstemp so it gets the umask's mode (usually 0644), not 0600:
        # other users (an MLflow server, a pod with another uid) must be able to read the artifact.
        with open(tmp, "xb"):
            pass
        shutil.copyfile(source, tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def local_failure(exc: OSError, doing: str) -> MlopsError:
    """The error to raise for a failed local read or write: SpecError if permissions forbid it, else StoreError.

    A full disk or an I/O error may heal (StoreError, retried); a folder the step may not write, or a
    read-only filesystem, will not until the deployment changes (SpecError, final).
    """
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return SpecError(f"cannot {doing}: {exc.strerror}; give the step's user access, or choose another folder")
    return StoreError(f"cannot {doing}: {exc.strerror or exc}")
