"""Which local files a store may read: those under a data root or a folder the caller adds."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from mlops_ops.errors import SpecError
from mlops_ops.store.uri import local_path


def readable_path(uri: str, also: Iterable[Path] = ()) -> Path:
    """The local file ``uri`` names, symlinks and ``..`` resolved, if it lies under a data root or ``also``.

    Raises:
        SpecError: ``uri`` is not local, cannot be resolved, or lies outside every root; the message names
            ``MLOPS_DATA_ROOTS``, the setting a deployment changes to allow more folders.
    """
    from mlops_ops.settings import DATA_ROOTS_ENV, data_roots

    path = local_path(uri)
    if path is None:
        raise SpecError(f"{uri!r} is not a local path or file:// URI")
    if "\x00" in str(path):
        raise SpecError(f"{uri!r} contains a NUL byte, which no path can contain")
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise SpecError(f"cannot resolve the path {uri!r}: {exc}") from exc
    roots = data_roots() + [Path(root).resolve() for root in also]
    if any(resolved == root or root in resolved.parents for root in roots):
        return resolved
    outermost = [r for r in dict.fromkeys(roots) if not any(other in r.parents for other in roots)]
    allowed = os.pathsep.join(str(root) for root in outermost)
    raise SpecError(
        f"{uri!r} resolves to {str(resolved)!r}, outside the folders a spec may read ({allowed}); "
        f"a deployment allows more with {DATA_ROOTS_ENV} (folders separated by {os.pathsep!r})"
    )
