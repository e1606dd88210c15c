"""Registry-side history: an alias's full move log, rollbacks, and the model's last training activity.

A move of an alias is recorded on the version it moved to (``lineage.registry.move_alias``). A version can
hold an alias twice (a rollback gives it back), and its second move overwrites the tags of the first; a
rollback therefore first archives those tags on the registered model (``mlops.alias.<alias>.archive.N``),
so :func:`alias_history` still lists every move, oldest first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlops_ops.errors import SpecError, TrackingError
from mlops_ops.lineage import tags as t
from mlops_ops.lineage.chain import alias_history as version_moves
from mlops_ops.lineage.client import client
from mlops_ops.lineage.registry import get_version, move_alias, tag_version, version_by_alias, version_tags
from mlops_ops.settings import tracking_uri

if TYPE_CHECKING:
    from mlops_ops.store import Store

#: Reason prefix of a rollback's move (the reason the user gave follows it).
ROLLBACK = "rollback"


@dataclass(frozen=True)
class Activity:
    """A training-related event of a registered model: when, and what."""

    at: datetime
    what: str


@dataclass(frozen=True)
class Rollback:
    """What a rollback did."""

    model: str
    alias: str
    version: str
    previous: str
    moved: bool
    reason: str


# ----------------------------------------------------------------------------------------------- history


def _registered_tags(name: str) -> dict[str, str]:
    try:
        return dict(client().get_registered_model(name).tags)
    except TrackingError as exc:
        if getattr(exc.__cause__, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return {}
        raise


def alias_history(name: str, alias: str = "champion") -> list[dict[str, str]]:
    """Every move of ``alias``, oldest first: time, from, to, reason, actor, pipeline run, and kind.

    ``kind`` is ``promotion`` or ``rollback``. Moves whose version tags a later move overwrote come from
    the registered model's archive.
    """
    moves = [_with_kind(m, version_tags(name, m["to"]), alias) for m in version_moves(name, alias)]
    prefix = f"{t.alias_prefix(alias)}archive."
    archived = [json.loads(v) for k, v in sorted(_registered_tags(name).items()) if k.startswith(prefix)]
    return in_order([*archived, *moves])


def in_order(moves: list[dict[str, str]]) -> list[dict[str, str]]:
    """Moves by time; moves within the same second (times are recorded to the second) follow the chain,
    each starting where the one before ended."""
    remaining = sorted(moves, key=lambda m: (m["moved_at"], int(m["to"])))
    ordered: list[dict[str, str]] = []
    while remaining:
        earliest = [m for m in remaining if m["moved_at"] == remaining[0]["moved_at"]]
        last = ordered[-1]["to"] if ordered else ""
        pick = next((m for m in earliest if m["from"] == last), earliest[0])
        ordered.append(pick)
        remaining.remove(pick)
    return ordered


def _with_kind(move: dict[str, str], tags: dict[str, str], alias: str) -> dict[str, str]:
    rolled_back = tags.get(t.alias_key(alias, "rollback_of"))
    return move | {"kind": ROLLBACK if rolled_back else "promotion"}


def holders(moves: list[dict[str, str]]) -> list[str]:
    """The versions that held the alias, oldest first, with versions a rollback undid taken off."""
    stack: list[str] = []
    for move in moves:
        if move.get("kind") == ROLLBACK and move["to"] in stack:
            del stack[stack.index(move["to"]) + 1 :]
        else:
            stack.append(move["to"])
    return stack


# ---------------------------------------------------------------------------------------------- rollback


def rollback(
    name: str, reason: str, *, store: Store, alias: str = "champion", to: str | None = None, actor: str = ""
) -> Rollback:
    """Move ``alias`` back to ``to`` (default: the version that held it before the current one).

    Runs under the lock promotions of this alias take (``steps.promote.lock_key``), so a rollback and a
    promotion cannot interleave their read-compare-move. Idempotent: the alias already on ``to``, or a
    repeated default rollback with the same reason, changes nothing.

    Raises:
        SpecError: The model has no alias history, ``to`` is not a version, or there is nothing to go back to.
    """
    from mlops_ops.steps.promote import lock_key

    if not reason.strip():
        raise SpecError("a rollback needs a reason (--reason TEXT): it is recorded with the move")
    with store.lock(lock_key(name, alias)):
        holder = version_by_alias(name, alias)
        moves = alias_history(name, alias)
        if holder is None or not moves:
            raise SpecError(f"registered model {name!r} has no history of alias {alias!r} to roll back")
        current = str(holder.version)
        recorded = f"{ROLLBACK}: {reason}"
        last = moves[-1]
        if to is None and last["to"] == current and last.get("kind") == ROLLBACK and last["reason"] == recorded:
            return Rollback(name, alias, current, last["from"], False, f"already rolled back: {recorded}")
        target = to or _previous_holder(name, alias, moves, current)
        if get_version(name, target) is None:
            raise SpecError(f"registered model {name!r} has no version {target!r}")
        if target == current:
            return Rollback(name, alias, current, current, False, f"{alias} already points at version {current}")
        _archive(name, alias, target)
        tag_version(name, target, {t.alias_key(alias, "rollback_of"): current})
        move_alias(name, alias, target, recorded, actor)
        return Rollback(name, alias, target, current, True, recorded)


def _previous_holder(name: str, alias: str, moves: list[dict[str, str]], current: str) -> str:
    stack = holders(moves)
    if stack and stack[-1] != current:  # moved by hand outside mlops-ops: go back to the last recorded holder
        return stack[-1]
    if len(stack) < 2:
        raise SpecError(f"{name}@{alias} is on version {current}, the first it ever held: nothing to roll back to")
    return stack[-2]


def _archive(name: str, alias: str, version: str) -> None:
    """Keep the move recorded on ``version`` before a new move overwrites its tags."""
    tags = version_tags(name, version)
    moved_at = tags.get(t.alias_key(alias, "moved_at"))
    if not moved_at:
        return
    previous = tags.get(t.alias_key(alias, "previous"), "none")
    move = {
        "moved_at": moved_at,
        "from": "" if previous == "none" else previous,
        "to": version,
        "reason": tags.get(t.alias_key(alias, "reason"), ""),
        "actor": tags.get(t.alias_key(alias, "actor"), ""),
        "pipeline_run": tags.get(t.PIPELINE_RUN_ID, ""),
        "kind": ROLLBACK if tags.get(t.alias_key(alias, "rollback_of")) else "promotion",
    }
    prefix = f"{t.alias_prefix(alias)}archive."
    count = sum(1 for k in _registered_tags(name) if k.startswith(prefix))
    client().set_registered_model_tag(name, t.alias_archive(alias, count), json.dumps(move, sort_keys=True))
    if t.alias_key(alias, "rollback_of") in tags:
        client().delete_model_version_tag(name, version, t.alias_key(alias, "rollback_of"))


# --------------------------------------------------------------------------------------- last training


def last_training(name: str, alias: str = "champion", *, exclude_run_id: str | None = None) -> Activity | None:
    """The latest of: a move of ``alias``, a version registered, a training a gate let through.

    Activity of the pipeline run ``exclude_run_id`` is left out, so a retried gate does not block itself.
    """
    found: list[Activity] = []
    for move in alias_history(name, alias):
        if exclude_run_id and move.get("pipeline_run") == exclude_run_id:
            continue
        found.append(Activity(_parse(move["moved_at"]), f"{alias} moved to version {move['to']}"))
    for mv in _versions(name):
        if exclude_run_id and dict(mv.tags).get(t.PIPELINE_RUN_ID) == exclude_run_id:
            continue
        found.append(Activity(_millis(mv.creation_timestamp), f"version {mv.version} registered"))
    gate = _last_gate_go(name, exclude_run_id)
    if gate is not None:
        found.append(gate)
    return max(found, key=lambda a: a.at) if found else None


def _versions(name: str) -> list[Any]:
    try:
        return list(client().search_model_versions(f"name = '{_quote(name)}'"))
    except TrackingError as exc:
        raise SpecError(f"cannot read {name!r} from the registry at {tracking_uri()}: {exc}") from exc


def _last_gate_go(name: str, exclude_run_id: str | None) -> Activity | None:
    mlflow_client = client()
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    if not experiments:
        return None
    query = f"tags.`{t.GATE_MODEL}` = '{_quote(name)}' and tags.`{t.GATE_GO}` = 'true'"
    runs = mlflow_client.search_runs(experiments, query, order_by=["attributes.start_time DESC"], max_results=20)
    for run in runs:
        if exclude_run_id and run.data.tags.get(t.PIPELINE_RUN_ID) == exclude_run_id:
            continue
        pipeline_run = run.data.tags.get(t.PIPELINE_RUN_ID, run.info.run_id)
        return Activity(_millis(run.info.start_time), f"a training let through by the gate of run {pipeline_run}")
    return None


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def _parse(iso: str) -> datetime:
    parsed = datetime.fromisoformat(iso)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _millis(value: int | None) -> datetime:
    return datetime.fromtimestamp((value or 0) / 1000, UTC)
