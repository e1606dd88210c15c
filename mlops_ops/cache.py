"""Reuse of step results: an unchanged ingest, validation or training returns its stored result, no process.

The index lives in the artifact store (``cache/<step>/<key>.json``, written through :mod:`mlops_ops.store`),
keyed by the step, its canonical spec, the tracking URI, the artifact root and the versions of the
libraries that decide the result. Local files a spec names (ingest's source, validate's suite) are part
of the identity by their bytes: a stored sha256 is trusted while size, mtime, ctime and inode agree, else
the file is hashed again. A result is reused only if every local artifact it names still exists.

A reused result is the one of the run that made it, MLflow run id included, as train's own reuse of an
identical training does (``cached`` is then true). Only file:// artifact roots are indexed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from mlops_ops.errors import MlopsError
from mlops_ops.settings import tracking_uri
from mlops_ops.store import Store, local_path, readable_path, sha256_file, write_uri

if TYPE_CHECKING:
    from mlops_ops.runners.base import StepInvocation

log = logging.getLogger(__name__)

#: Steps whose result depends only on their spec and the bytes of the files it names.
CACHED_STEPS = {"ingest": ("source",), "validate": ("suite",), "train": ()}
#: Libraries whose version can change a cached step's result.
_LIBRARIES = ("mlops-ops", "scikit-learn", "pandas", "pyarrow", "great-expectations", "mlflow")
_FORMAT = 1


@dataclass
class Lookup:
    """The outcome of :func:`lookup`: a result to reuse, or what :func:`record` needs after the step ran."""

    step: str
    key: str | None = None
    result: dict[str, Any] | None = None
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    reason: str = ""
    #: The run whose result is reused: ``pipeline P run R (try N, manifest URI)``.
    origin: str = ""


def _stat(path: str) -> dict[str, Any]:
    info = os.stat(path)
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "ctime_ns": info.st_ctime_ns, "ino": info.st_ino}


def _versions() -> dict[str, str]:
    found = {}
    for name in _LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = ""
    return found


def cache_key(step: str, spec: dict[str, Any], root: str, tracking: str) -> str:
    """Identity of a step's result: step, canonical spec, tracking URI, artifact root, library versions."""
    # train's refit (set by force) decides whether the step fits again, not what the result is.
    spec = {k: v for k, v in spec.items() if not (step == "train" and k == "refit")}
    basis = {"step": step, "spec": spec, "tracking": tracking, "root": root, "versions": _versions()}
    return hashlib.sha256(json.dumps(basis, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _index_key(step: str, key: str) -> str:
    return f"cache/{step}/{key[:2]}/{key}.json"


def lookup(invocation: StepInvocation, root: str, runner: object, *, force: bool, say: Callable[[str], None]) -> Lookup:
    """The stored result of an identical earlier run of the step, if one is still valid; says why not.

    Only for a runner whose steps see this machine's files (``shares_filesystem``, the local runner): the
    inputs are checked here, so they must be the files the step reads.
    """
    if not getattr(runner, "shares_filesystem", False):
        return Lookup(invocation.step, reason="the runner's steps do not read this machine's files")
    found = _lookup(invocation, root, force)
    if found.result is None and invocation.step in CACHED_STEPS:
        say(f"{invocation.step} runs: {found.reason}")
    return found


def _lookup(invocation: StepInvocation, root: str, force: bool) -> Lookup:
    step, spec = invocation.step, invocation.spec
    found = Lookup(step)
    if step not in CACHED_STEPS:
        return found
    if local_path(root) is None:
        found.reason = f"results are reused only under a file:// artifact root, not {root}"
        return found
    try:
        for name in CACHED_STEPS[step]:
            path = str(readable_path(str(spec[name])))
            found.inputs[path] = _stat(path)
    except (MlopsError, OSError, KeyError) as exc:  # the step itself will say what is wrong
        found.reason = f"its input cannot be checked here ({exc})"
        return found
    env = invocation.env | invocation.secret_env
    found.key = cache_key(step, spec, root, env.get("MLFLOW_TRACKING_URI") or tracking_uri())
    if force:
        found.reason = "force=True"
        return found
    store = Store(root)
    index = store.uri(_index_key(step, found.key))
    if not store.exists(index):
        found.reason = "no earlier run with this spec"
        return found
    entry = json.loads(store.get_bytes(index))
    found.reason = _stale(entry, found.inputs, store)
    if not found.reason:
        found.result = _as_reused(step, entry["result"])
        found.origin = entry["from"]
        found.reason = f"reused {step} result from {found.origin}"
    return found


def _stale(entry: dict[str, Any], inputs: dict[str, dict[str, Any]], store: Store) -> str:
    """Why a stored entry cannot be reused ('' if it can)."""
    if entry.get("format") != _FORMAT:
        return "the stored entry has another format"
    for path, stat in inputs.items():
        stored = entry["inputs"].get(path)
        if stored is None:
            return f"{path} was not an input of the stored run"
        if {k: stored[k] for k in stat} != stat and sha256_file(path) != stored["sha256"]:
            return f"{path} changed since the stored run"
    missing = [uri for uri in _artifact_uris(entry["result"]) if not store.exists(uri)]
    return f"{missing[0]} is gone" if missing else ""


def _artifact_uris(value: Any) -> list[str]:
    """The file:// artifacts a result names."""
    found: list[str] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for name, item in items:
        if isinstance(item, str):
            if str(name).endswith("uri") and item.startswith("file://"):
                found.append(item)
        else:
            found += _artifact_uris(item)
    return found


def _as_reused(step: str, result: dict[str, Any]) -> dict[str, Any]:
    """What the step itself returns when it finds its work done: train says the model was reused."""
    return result | {"cached": True} if step == "train" else result


def reuse(found: Lookup, invocation: StepInvocation, say: Callable[[str], None]) -> dict[str, Any]:
    """Write the reused result as this try's manifest, say so in the task log, and return it."""
    assert found.result is not None
    if invocation.result_uri:
        write_uri(invocation.result_uri, json.dumps(found.result, sort_keys=True).encode())
    say(f"{found.reason}; the step did not run (force=True runs it again)")
    return found.result


def record(found: Lookup, invocation: StepInvocation, root: str, result: dict[str, Any]) -> bool:
    """Index a successful result, if its inputs did not change while the step ran; True if indexed."""
    if found.key is None:
        return False
    inputs = {}
    for path, before in found.inputs.items():
        digest = sha256_file(path)
        if _stat(path) != before:  # written to while the step read it: the bytes it read are unknown
            return False
        inputs[path] = before | {"sha256": digest}
    ctx = invocation.ctx
    origin = (
        f"pipeline {ctx.pipeline} run {ctx.run_id} (try {ctx.try_number}, {invocation.result_uri or 'no manifest'})"
    )
    entry = {"format": _FORMAT, "step": found.step, "result": result, "inputs": inputs, "from": origin}
    Store(root).put_bytes(_index_key(found.step, found.key), json.dumps(entry, sort_keys=True).encode())
    return True
