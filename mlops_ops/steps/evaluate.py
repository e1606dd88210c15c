"""Evaluate step: candidate and champion on the same frozen rows, absolute and relative gates, plots."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mlops_ops import lineage
from mlops_ops.context import RunContext
from mlops_ops.errors import DataError
from mlops_ops.specs import METRICS, EvaluateResult, EvaluateSpec
from mlops_ops.steps import metrics as metric_fns
from mlops_ops.steps.train import split_xy
from mlops_ops.store import Store

log = logging.getLogger(__name__)


@dataclass
class Champion:
    """The current holder of the champion alias, as scored on the evaluation rows."""

    version: str | None = None
    metrics: dict[str, float] | None = None
    predictions: metric_fns.Predictions | None = None
    note: str | None = None


def _champion(
    spec: EvaluateSpec, x: pd.DataFrame, y: pd.Series, candidate: tuple[metric_fns.Predictions, dict[str, float]]
) -> Champion:
    """Score the current champion on the same rows (the candidate's own scores if it is the champion)."""
    found = lineage.version_by_alias(spec.registered_model, spec.champion_alias)
    if found is None:
        return Champion(note=f"no {spec.champion_alias} yet for {spec.registered_model!r}")
    version = str(found.version)
    if found.run_id and found.run_id == spec.candidate.mlflow_run_id:
        # The same model on the same rows: its scores are the candidate's, without loading or predicting again.
        return Champion(version, candidate[1], candidate[0], f"champion v{version} is this candidate's model")
    try:
        model = lineage.load_model(f"models:/{spec.registered_model}/{version}")
        predictions, scores = metric_fns.measure(spec.candidate.task, model, x, y)
        return Champion(version, scores, predictions)
    except (DataError, ValueError, KeyError) as exc:
        # A champion trained on another schema cannot be compared; say so instead of failing the run.
        return Champion(version, note=f"champion v{version} could not be scored on these rows: {exc}")


def decide(spec: EvaluateSpec, candidate: dict[str, float], champion: dict[str, float] | None) -> list[str]:
    """Reasons the candidate fails its gates (an empty list means it passes)."""
    reasons = [why for gate in spec.gates if (why := gate.check(candidate)) is not None]
    if champion is None:
        return reasons
    metric = spec.comparison()
    if metric not in candidate or metric not in champion:
        return reasons
    higher_is_better = METRICS[spec.candidate.task][metric]
    gain = candidate[metric] - champion[metric] if higher_is_better else champion[metric] - candidate[metric]
    if gain < spec.min_improvement:
        reasons.append(
            f"{metric} = {candidate[metric]:.4f} does not beat the champion's {champion[metric]:.4f} "
            f"by the required margin {spec.min_improvement:g}"
        )
    return reasons


def run(spec: EvaluateSpec, ctx: RunContext, store: Store) -> EvaluateResult:
    """Score the candidate (and the champion) on the evaluation partition and decide."""
    with store.open_local(spec.dataset.uri) as path:
        frame = pd.read_parquet(path)
    x, y = split_xy(frame, spec.candidate.target, None)
    candidate_model = lineage.load_model(spec.candidate.model_uri)
    x = x[_feature_names(candidate_model, x)]
    candidate_predictions, candidate = metric_fns.measure(spec.candidate.task, candidate_model, x, y)
    held = _champion(spec, x, y, (candidate_predictions, candidate))
    champion_version, champion, note = held.version, held.metrics, held.note
    reasons = decide(spec, candidate, champion)
    passed = not reasons

    with lineage.step_run(ctx) as mlrun:
        mlrun.log_dataset(
            frame,
            name="eval",
            uri=spec.dataset.uri,
            digest=spec.dataset.digest,
            context="evaluation",
            target=spec.candidate.target,
        )
        mlrun.log_params(
            {
                "gates": [str(g) for g in spec.gates],
                "compare_metric": spec.comparison(),
                "min_improvement": spec.min_improvement,
            }
        )
        mlrun.log_metrics(candidate, prefix="candidate_")
        if champion is not None:
            mlrun.log_metrics(champion, prefix="champion_")
        lineage.record_evaluation(
            mlrun, passed=passed, candidate_run_id=spec.candidate.mlflow_run_id, champion_version=champion_version
        )
        report = _report(spec, candidate, champion, champion_version, reasons, note)
        mlrun.log_text(report, "evaluation/report.md")
        mlrun.log_text(
            json.dumps({"passed": passed, "reasons": reasons, "candidate": candidate, "champion": champion}, indent=2),
            "evaluation/decision.json",
        )
        _plots(mlrun, spec.candidate.task, {"candidate": candidate_predictions, "champion": held.predictions}, y)
        report_uri = f"runs:/{mlrun.run_id}/evaluation/report.md"
        log.info("candidate %s", metric_fns.describe(candidate))
        if champion is not None:
            log.info("champion v%s %s", champion_version, metric_fns.describe(champion))
        if note:
            log.info("%s", note)
        log.info("decision: %s%s", "PASS" if passed else "REJECT", "" if passed else " - " + "; ".join(reasons))
        return EvaluateResult(
            passed=passed,
            reasons=reasons,
            candidate=spec.candidate,
            candidate_metrics=candidate,
            champion_version=champion_version,
            champion_metrics=champion,
            compare_metric=spec.comparison(),
            dataset_digest=spec.dataset.digest,
            report_uri=report_uri,
            mlflow_run_id=mlrun.run_id,
        )


def _feature_names(model: Any, x: pd.DataFrame) -> list[str]:
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return list(x.columns)
    missing = [n for n in names if n not in x.columns]
    if missing:
        raise DataError(f"the evaluation data lacks the model's feature columns {missing}")
    return list(names)


def _report(
    spec: EvaluateSpec,
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    champion_version: str | None,
    reasons: list[str],
    note: str | None,
) -> str:
    lines = [
        f"# Evaluation of {spec.registered_model} candidate",
        "",
        f"Decision: **{'PASS' if not reasons else 'REJECT'}**",
        "",
    ]
    lines += [f"- {r}" for r in reasons] or ["- all gates passed"]
    lines += [
        "",
        f"Gates: {', '.join(str(g) for g in spec.gates) or 'none'}; compared on {spec.comparison()} "
        f"with margin {spec.min_improvement:g}",
        "",
    ]
    if note:
        lines += [f"Note: {note}", ""]
    header = "| metric | candidate |" + (f" champion v{champion_version} |" if champion else "")
    lines += [header, "|---|---|" + ("---|" if champion else "")]
    for name in sorted(candidate):
        row = f"| {name} | {candidate[name]:.4f} |"
        if champion:
            row += f" {champion.get(name, float('nan')):.4f} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def _plots(
    mlrun: lineage.StepRun, task: str, predictions: dict[str, metric_fns.Predictions | None], y: pd.Series
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = {name: p for name, p in predictions.items() if p is not None}
    if task == "classification":
        from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

        for name, p in scored.items():
            fig, ax = plt.subplots(figsize=(5, 4))
            ConfusionMatrixDisplay.from_predictions(y, p.predicted, ax=ax, colorbar=False)
            ax.set_title(f"Confusion matrix: {name}")
            mlrun.log_figure(fig, f"evaluation/confusion_matrix_{name}.png")
            plt.close(fig)
        with_proba = {name: p for name, p in scored.items() if p.proba is not None}
        if y.nunique() == 2 and with_proba:
            fig, ax = plt.subplots(figsize=(5, 4))
            for name, p in with_proba.items():
                assert p.proba is not None
                RocCurveDisplay.from_predictions(y, p.proba[:, 1], pos_label=p.classes[1], ax=ax, name=name)
            ax.set_title("ROC on the evaluation partition")
            mlrun.log_figure(fig, "evaluation/roc.png")
            plt.close(fig)
        return
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, p in scored.items():
        ax.scatter(p.predicted, y - p.predicted, s=6, alpha=0.5, label=name)
    ax.axhline(0, color="grey", linewidth=1)
    ax.set_xlabel("predicted")
    ax.set_ylabel("residual")
    ax.set_title("Residuals on the evaluation partition")
    ax.legend()
    mlrun.log_figure(fig, "evaluation/residuals.png")
    plt.close(fig)
