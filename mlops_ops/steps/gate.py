"""Gate step: decide whether a retraining run trains at all (cooldown, minimum new rows, or force).

The decision reads the registry through lineage and is recorded on the gate's own MLflow run
(``lineage.record_gate``), which is how later gates see that a training started. Decisions of one model are
taken under a store lock, so two runs triggered together cannot both pass a cooldown.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from mlops_ops import lineage
from mlops_ops.context import RunContext, safe
from mlops_ops.lineage import history
from mlops_ops.specs.gate import GateResult, GateSpec
from mlops_ops.store import Store

log = logging.getLogger(__name__)


def lock_key(model: str) -> str:
    """Store key of the lock that serialises gate decisions on one model."""
    return f"locks/gate/{safe(model)}.lock"


def run(spec: GateSpec, ctx: RunContext, store: Store) -> GateResult:
    """Decide, record the decision on this step's MLflow run, and return it (a "no" is a result, not an error)."""
    rows = count_rows(spec.data_uri, store) if spec.min_rows and spec.data_uri else None
    with lineage.step_run(ctx) as mlrun, store.lock(lock_key(spec.registered_model)):
        last = history.last_training(spec.registered_model, spec.alias, exclude_run_id=ctx.run_id)
        go, reason = decide(spec, last, rows, datetime.now(UTC))
        mlrun.log_params({"cooldown_hours": spec.cooldown_hours, "min_rows": spec.min_rows, "force": spec.force})
        lineage.record_gate(mlrun, model=spec.registered_model, go=go, reason=reason)
        log.info("gate on %s: %s - %s", spec.registered_model, "train" if go else "do not train", reason)
        return GateResult(
            registered_model=spec.registered_model,
            go=go,
            reason=reason,
            last_training_at=last.at.isoformat(timespec="seconds") if last else None,
            last_training=last.what if last else None,
            rows=rows,
            data_uri=spec.data_uri,
            forced=spec.force,
            mlflow_run_id=mlrun.run_id,
        )


def decide(spec: GateSpec, last: history.Activity | None, rows: int | None, now: datetime) -> tuple[bool, str]:
    """The rule: ``force`` wins; then too few new rows or a cooldown not yet over say no."""
    asked = f" (asked by {spec.trigger})" if spec.trigger else ""
    if spec.force:
        return True, f"forced{asked}"
    if rows is not None and rows < spec.min_rows:
        return False, f"the new batch has {rows} rows, fewer than min_rows={spec.min_rows}{asked}"
    if last is not None and spec.cooldown_hours > 0:
        ends = last.at + timedelta(hours=spec.cooldown_hours)
        if now < ends:
            left = (ends - now).total_seconds() / 3600
            return False, (
                f"cooldown: {last.what} at {last.at.isoformat(timespec='seconds')}, less than "
                f"{spec.cooldown_hours:g} h ago ({left:.1f} h left); set force to train anyway{asked}"
            )
    since = f"last training {last.what} at {last.at.isoformat(timespec='seconds')}" if last else "no training yet"
    counted = f", {rows} new rows" if rows is not None else ""
    return True, f"{since}{counted}{asked}"


def count_rows(uri: str, store: Store) -> int:
    """Rows of a CSV or Parquet batch, read the way ingest reads it (same data roots and errors)."""
    from mlops_ops.steps.ingest import read_source

    return int(read_source(uri, store).num_rows)
