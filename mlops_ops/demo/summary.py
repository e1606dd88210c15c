"""The demo's report, built only from recorded state: Airflow's task instances and XComs, MLflow's registry.

One line per step as it starts and ends (:func:`step_line`), then a summary (:func:`summary`) of the run:
the data, validation, the candidate against the champion, the decision, what promote did and why, and
where the alias really is in the registry now.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlops_ops.demo.runstate import RunState, TaskState

#: Steps of the training chain, in order; other tasks of a DAG follow in the order they started.
STEPS = ("ingest", "validate", "train", "evaluate", "approve", "promote")
#: Metrics shown, in this order, when a manifest has them.
SHOWN_METRICS = ("roc_auc", "accuracy", "f1", "rmse", "mae", "r2")
#: A champion that scores this much worse on the new batch than on the rows it was promoted on means drift.
DRIFT_DROP = 0.02


@dataclass(frozen=True)
class Champion:
    """Where the alias points in the registry now, and the metrics recorded on that version."""

    model: str
    alias: str
    version: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    #: Metrics recorded on the version the evaluation compared with (it may have moved since).
    compared_metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """Everything recorded about one demo run."""

    run: RunState
    tasks: dict[str, TaskState]
    results: dict[str, dict[str, Any]]
    errors: dict[str, str]
    champion: Champion | None = None
    gate_metric: str = "roc_auc"
    #: Steps that reused an identical earlier run's result instead of running, and whose result it is.
    reused: dict[str, str] = field(default_factory=dict)

    def ordered(self) -> list[TaskState]:
        known = [self.tasks[t] for t in STEPS if t in self.tasks]
        rest = sorted((t for t in self.tasks.values() if t.task_id not in STEPS), key=lambda t: str(t.start_date))
        return known + rest


def metrics_text(values: dict[str, float] | None) -> str:
    keys = [k for k in SHOWN_METRICS if k in (values or {})]
    return ", ".join(f"{k}={values[k]:.4f}" for k in keys) if values else "none recorded"


def figure(task_id: str, result: dict[str, Any]) -> str:
    """The key figure of a finished step's result manifest."""
    if task_id == "ingest":
        return f"{result['snapshot']['rows']} rows ({result['train']['rows']} train, {result['eval']['rows']} eval)"
    if task_id == "validate":
        return f"{result['evaluated'] - len(result['failures'])} of {result['evaluated']} expectations passed"
    if task_id == "train":
        reused = ", reused an identical earlier training" if result.get("cached") else ""
        return f"{result['estimator'].rsplit('.', 1)[-1]}, training {metrics_text(result.get('metrics'))}{reused}"
    if task_id == "evaluate":
        verdict = "PASS" if result["passed"] else "REJECT: " + "; ".join(result["reasons"])
        return f"candidate {metrics_text(result['candidate_metrics'])}: {verdict}"
    if task_id == "approve":
        if not result.get("required"):
            return "no reviewer needed under this promotion policy"
        decision = "approved" if result.get("approved") else "rejected"
        return f"{decision} by {result.get('by') or '?'}" + (f": {result['comment']}" if result.get("comment") else "")
    if task_id == "promote":
        return promote_text(result)
    return ""


def promote_text(result: dict[str, Any]) -> str:
    where = f"{result['model_name']} v{result['version']}"
    if not result["moved"]:
        return f"{where} did not take @{result['alias']}: {result['reason']}"
    came = f" from v{result['previous_version']}" if result.get("previous_version") else ""
    return f"{where} took @{result['alias']}{came}: {result['reason']}"


def step_line(task: TaskState, result: dict[str, Any] | None, error: str | None, reused: str | None = None) -> str:
    """One progress line: the step, its recorded state, its duration and its key figure (or error).

    :param reused: Set when the task reused an identical earlier run's result instead of running its step.
    """
    head = f"  {task.task_id:<9} {task.state or 'none':<8}"
    if not task.finished:
        return f"{head} try {task.try_number}" if task.state == "running" else head.rstrip()
    seconds = f"{task.duration:6.1f}s" if task.duration is not None else " " * 7
    if task.state == "success" and result is not None:
        text = figure(task.task_id, {k: v for k, v in result.items() if k != "cached"} if reused else result)
        return f"{head} {seconds}  {'reused: ' if reused else ''}{text}"
    if task.state in ("failed", "skipped") and error:
        return f"{head} {seconds}  {error}"
    if task.state == "upstream_failed":
        return f"{head} not run: an upstream step failed"
    return f"{head} {seconds}".rstrip()


def summary(outcome: Outcome) -> list[str]:
    """What happened, from the records, in a dozen lines."""
    run = outcome.run
    took = f" in {run.seconds:.1f}s" if run.seconds is not None else ""
    lines = [f"Run {run.run_id} of {run.dag_id}: {run.state}{took}"]
    for task_id, error in outcome.errors.items():
        if outcome.tasks[task_id].state == "failed":
            lines.append(f"  error       {task_id}: {error}")
    r = outcome.results
    if "ingest" in r:
        snap = r["ingest"]["snapshot"]
        lines.append(
            f"  dataset     {r['ingest']['source']}: {snap['rows']} rows, snapshot sha256 {snap['digest'][:16]}…"
        )
    if "validate" in r:
        lines.append(f"  validation  {figure('validate', r['validate'])}")
    if outcome.reused:
        steps = ", ".join(outcome.reused)
        lines.append(f"  reused      {steps}: results of an identical earlier run ({_origin_run(outcome.reused)});")
        lines.append("              the steps did not run again (--conf '{\"force\": true}' runs every step)")
    lines += _evaluation(outcome)
    lines += _promotion(outcome)
    return lines


def _origin_run(reused: dict[str, str]) -> str:
    """The earlier runs whose results were reused, as ``run R`` (one or more)."""
    runs = dict.fromkeys(origin.split(" (", 1)[0].split(" run ", 1)[-1] for origin in reused.values())
    return "run " + ", ".join(runs)


def _evaluation(outcome: Outcome) -> list[str]:
    ev = outcome.results.get("evaluate")
    if ev is None:
        return []
    lines = ["  candidate   " + metrics_text(ev["candidate_metrics"])]
    if ev.get("champion_metrics"):
        lines.append(
            f"  champion    v{ev['champion_version']} on the same rows: " + metrics_text(ev["champion_metrics"])
        )
        lines += _drift(outcome, ev)
    elif ev.get("champion_version"):
        lines.append(
            f"  champion    v{ev['champion_version']} could not be scored on these rows (trained on another "
            "table or schema?), so it was not compared"
        )
    lines.append("  decision    " + ("PASS" if ev["passed"] else "REJECT: " + "; ".join(ev["reasons"])))
    return lines


def _drift(outcome: Outcome, ev: dict[str, Any]) -> list[str]:
    """Whether the champion scores worse on this batch than on the rows it was promoted on."""
    from mlops_ops.specs import METRICS

    metric = outcome.gate_metric
    before = (outcome.champion.compared_metrics if outcome.champion else {}).get(metric)
    now = (ev.get("champion_metrics") or {}).get(metric)
    higher = METRICS.get(ev["candidate"]["task"], {}).get(metric)
    if before is None or now is None or higher is None:
        return []
    worse = (before - now) if higher else (now - before)
    if worse <= DRIFT_DROP:
        return [
            f"  drift       none seen: v{ev['champion_version']} {metric} {now:.4f} here, {before:.4f} when promoted"
        ]
    return [
        f"  drift       this batch has drifted: v{ev['champion_version']} {metric} {now:.4f} here against "
        f"{before:.4f} on the rows it was promoted on"
    ]


def _promotion(outcome: Outcome) -> list[str]:
    lines = []
    promote = outcome.tasks.get("promote")
    if "promote" in outcome.results:
        lines.append("  promote     " + promote_text(outcome.results["promote"]))
    elif promote is not None and promote.state == "skipped":
        lines.append("  promote     skipped: " + (outcome.errors.get("promote") or "the candidate did not pass"))
    champion = outcome.champion
    if champion is not None:
        where = f"v{champion.version}" if champion.version else "no version"
        held = f", {metrics_text(champion.metrics)} when promoted" if champion.metrics else ""
        lines.append(f"  registry    {champion.model}@{champion.alias} is {where} in MLflow now{held}")
    return lines
