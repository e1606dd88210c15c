"""Promote step: register a candidate that passed evaluation and move the policy's alias to it.

Two pipeline runs can finish evaluation at the same moment, each having compared its candidate with the
same champion. So the read-compare-move of the alias runs under a lock that every run sharing the
artifact store takes (``Store.lock``: an ``flock`` on a local root, a lease object on S3), and inside it
the candidate looks at the alias again. The rule:

1. If the alias points at the version the candidate's evaluation compared with (or at nothing), the
   evaluation's decision stands and the alias moves to the candidate.
2. If it points elsewhere (another promotion moved it after the evaluation, or the alias is not the one
   evaluated against, such as ``challenger``), the candidate replaces the holder only if it ranks
   above it: on the metric its evaluation compared (``compare_metric``), as recorded in both versions'
   lineage (``lineage.version_lineage``), when both were evaluated on the same rows
   (``lineage.Evaluated.comparable_with``);
   a tie goes to the later version (the higher version number), and so does a pair that cannot be
   compared (other rows, or a metric missing). The evaluation's margin (``min_improvement``) is not
   applied again: it was applied against the champion the candidate saw.
3. A candidate that does not rank above the holder leaves the alias alone, is tagged
   superseded (``lineage.supersede``), and its result says ``moved=False`` with the reason. A version
   the alias has already left (``replaced_by``) does not take it back when its promotion is retried.

So whatever order racing runs take the lock in, the alias ends on the best of the candidates evaluated
on the same rows (ties: the latest version), or on the latest version when they saw different rows; and
the history tags form one chain: each move names the version it replaced (``previous``), which names it
back (``replaced_by``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from mlops_ops import lineage
from mlops_ops.context import RunContext, safe
from mlops_ops.errors import PromotionRejected
from mlops_ops.specs import DEFAULT_COMPARE_METRIC, METRICS, PromoteResult, PromoteSpec
from mlops_ops.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What the locked section decided."""

    moved: bool
    previous: str | None
    reason: str


def lock_key(model: str, alias: str) -> str:
    """Store key of the lock that serialises moves of one alias."""
    return f"locks/registry/{safe(model)}/{safe(alias)}.lock"


def register_lock_key(model: str) -> str:
    """Store key of the lock that serialises registrations of versions of one model."""
    return f"locks/registry/{safe(model)}/_register.lock"


def run(spec: PromoteSpec, ctx: RunContext, store: Store) -> PromoteResult:
    """Register the candidate (once per training run) and move the alias to it if the rule above allows."""
    evaluation = spec.evaluation
    if not evaluation.passed:
        raise PromotionRejected(
            "candidate rejected by evaluation: "
            + "; ".join(evaluation.reasons)
            + "; nothing was registered and no alias moved"
        )
    candidate = evaluation.candidate
    with lineage.step_run(ctx) as mlrun:
        # Look-up and creation under one lock: racing or retried promotions of one training run find
        # the version the first one made instead of registering a second.
        with store.lock(register_lock_key(spec.registered_model)):
            version = lineage.register(
                spec.registered_model,
                candidate.model_uri,
                candidate.mlflow_run_id,
                lineage.version_lineage(evaluation, ctx),
            )
        number = str(version.version)
        metric = compare_metric(spec)
        with store.lock(lock_key(spec.registered_model, spec.alias)):
            outcome = settle(spec, number, metric)
        result = PromoteResult(
            model_name=spec.registered_model,
            version=number,
            alias=spec.alias,
            previous_version=outcome.previous,
            moved=outcome.moved,
            reason=outcome.reason,
            mlflow_run_id=mlrun.run_id,
        )
        lineage.record_promotion(mlrun, result)
        if outcome.moved:
            log.info(
                "%s@%s -> version %s (was %s): %s",
                spec.registered_model,
                spec.alias,
                number,
                outcome.previous or "unset",
                outcome.reason,
            )
        else:
            log.info(
                "%s@%s stays on version %s: %s", spec.registered_model, spec.alias, outcome.previous, outcome.reason
            )
        return result


def compare_metric(spec: PromoteSpec) -> str:
    """The metric the evaluation compared with the champion, as its result manifest says."""
    evaluation = spec.evaluation
    task = evaluation.candidate.task
    recorded = evaluation.compare_metric
    return recorded if recorded in METRICS[task] else DEFAULT_COMPARE_METRIC[task]


def settle(spec: PromoteSpec, number: str, metric: str) -> Outcome:
    """Decide and make the move; the caller holds the alias's lock."""
    name, alias = spec.registered_model, spec.alias
    holder = lineage.version_by_alias(name, alias)
    current = str(holder.version) if holder is not None else None
    if current == number:
        lineage.move_alias(name, alias, number, "")  # completes the history a try that died half-way left
        return Outcome(False, number, f"{alias} already points at version {number}")
    mine = lineage.version_record(name, number)
    replaced_by = mine.replaced_by(alias)
    if replaced_by:
        return Outcome(
            False,
            current,
            f"version {number} was {alias} and was replaced by version {replaced_by}; "
            "a retried promotion does not take the alias back",
        )
    reason = spec.reason or _reason(spec)
    seen = spec.evaluation.champion_version
    if current is not None and current != seen:
        theirs = lineage.version_record(name, current).evaluated(metric)
        wins, why = outranks(spec.evaluation.candidate.task, metric, mine.evaluated(metric), theirs)
        change = f"{alias} moved from {_v(seen)} to version {current} after this candidate's evaluation; {why}"
        if not wins:
            lineage.supersede(name, number, alias, by=current, reason=change)
            return Outcome(False, current, f"superseded: {change}")
        reason = f"{reason}; {change}"
    previous = lineage.move_alias(name, alias, number, reason)
    return Outcome(True, previous, reason)


def outranks(task: str, metric: str, mine: lineage.Evaluated, theirs: lineage.Evaluated) -> tuple[bool, str]:
    """Whether version ``mine`` ranks above ``theirs`` on ``metric`` by the rule in the module docstring, and why."""
    later = int(mine.version) > int(theirs.version)
    recorded = mine.comparable_with(theirs)
    if recorded is None:
        return later, f"the two were not evaluated on the same rows with {metric}, so the later version wins"
    ours, theirs_value = float(recorded[0]), float(recorded[1])
    compared = f"{metric} {recorded[0]} against version {theirs.version}'s {recorded[1]}"
    if ours == theirs_value:
        return later, f"{compared} is a tie, so the later version wins"
    better = ours > theirs_value if METRICS[task].get(metric, True) else ours < theirs_value
    return better, f"{compared} is {'better' if better else 'worse'}"


def _v(version: str | None) -> str:
    return f"version {version}" if version else "no version"


def _reason(spec: PromoteSpec) -> str:
    e = spec.evaluation
    metrics = ", ".join(
        f"{k}={v:.4f}" for k, v in sorted(e.candidate_metrics.items()) if k in ("roc_auc", "accuracy", "rmse", "r2")
    )
    if e.champion_version and not e.champion_metrics:
        return (
            f"passed gates; v{e.champion_version} could not be scored on these rows, so it was not compared ({metrics})"
        )
    if e.champion_version:
        return f"passed gates and compared with v{e.champion_version} ({metrics})"
    return f"passed gates, first {spec.alias} ({metrics})"
