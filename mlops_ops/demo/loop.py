"""The embedded continuous-training loop: train, score a drifted batch, detect drift, retrain, decide.

Under ``airflow dags test`` Asset events are recorded but no DAG is scheduled on them, so this driver
chains the runs itself, in the order a deployment's scheduler would start them:

1. ``mlops_training`` on the base batch (``churn.csv``): the first champion;
2. ``mlops_scoring`` on the drifted batch (``churn_drift.csv``): scores it and checks drift; when drift
   advises retraining, the run emits the ``retrain-request/<model>`` Asset event (what a deployment's
   scheduler would start ``mlops_retraining`` on);
3. ``mlops_retraining`` on the drifted batch (it is labelled), as that event would: the gate, then the
   chain, evaluated against the champion and promoted or not.

Each decision is collected for the summary. The Airflow helpers are the quickstart's.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from mlops_ops.demo import DATA_DIR
from mlops_ops.demo.embedded import log_since, prestart_airflow, start_airflow
from mlops_ops.demo.runstate import stored_results
from mlops_ops.quickstart import airflow_env, migrate, outcome
from mlops_ops.settings import mlops_home

TRAINING, SCORING, RETRAINING = "mlops_training", "mlops_scoring", "mlops_retraining"
STEPS = {
    TRAINING: ("ingest", "validate", "train", "evaluate", "promote"),
    SCORING: ("ingest", "score", "drift"),
    RETRAINING: ("gate", "ingest", "validate", "train", "evaluate", "promote"),
}


@dataclass
class Stage:
    """One DAG run of the loop and the decisions read from its steps' results."""

    dag_id: str
    run_id: str
    state: str
    seconds: float
    results: dict[str, dict[str, Any]]
    errors: list[str] = field(default_factory=list)


@dataclass
class Loop:
    """The stages run and the decisions taken, one line each."""

    stages: list[Stage] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(stage.state == "success" for stage in self.stages)


def run_dag(env: dict[str, str], dag_id: str, conf: dict[str, Any], log: Path) -> Stage:
    """``airflow dags test DAG -c CONF``, its output appended to ``log``."""
    started = time.perf_counter()
    offset = log.stat().st_size if log.exists() else 0
    with log.open("a") as out:
        process = start_airflow(env, ["dags", "test", dag_id, "-c", json.dumps(conf)], out)
        try:
            process.wait()
        except BaseException:
            process.kill()
            raise
    run, errors = outcome(log_since(log, offset))
    return Stage(
        dag_id,
        run["run_id"],
        run["state"],
        time.perf_counter() - started,
        stored_results(dag_id, run["run_id"], STEPS[dag_id]),
        errors,
    )


def decisions(stage: Stage) -> list[str]:
    """What one stage decided, in lines for the summary."""
    r, lines = stage.results, [f"{stage.dag_id} {stage.run_id}: {stage.state} in {stage.seconds:.0f}s"]
    lines += [f"  error     {e}" for e in stage.errors]
    if "score" in r:
        lines.append(f"  score     {r['score']['dataset']['rows']} rows by v{r['score']['version']}")
    if "drift" in r:
        d = r["drift"]
        verdict = "retraining requested" if d["retrain_advised"] else "no retraining needed"
        lines.append(f"  drift     {len(d['drifted_columns'])}/{len(d['columns'])} columns drifted: {verdict}")
    if "gate" in r:
        lines.append(f"  gate      {'train' if r['gate']['go'] else 'do not train'}: {r['gate']['reason']}")
    if "evaluate" in r:
        e = r["evaluate"]
        lines.append("  evaluate  " + ("PASS" if e["passed"] else "REJECT: " + "; ".join(e["reasons"])))
    if "promote" in r:
        p = r["promote"]
        lines.append(
            f"  promote   v{p['version']} {'took' if p['moved'] else 'did not take'} @{p['alias']}: {p['reason']}"
        )
    elif "evaluate" in r:
        lines.append("  promote   skipped: the candidate did not pass evaluation")
    return lines


def run_loop(dags_folder: Path = Path("dags"), *, model: str = "churn-classifier", echo: Any = click.echo) -> Loop:
    """Run the three DAGs in turn on the demo batches and return what each decided.

    :param dags_folder: The DAGs folder holding ``mlops_training``, ``mlops_scoring`` and ``mlops_retraining``.
    :param model: The registered model the loop trains, watches and retrains.
    :param echo: Where progress lines go.
    """
    env = airflow_env(dags_folder)
    log = mlops_home() / "demo-loop.log"
    prestart_airflow(env)
    migrate(env, log)
    loop = Loop()
    base, drifted = str(DATA_DIR / "churn.csv"), str(DATA_DIR / "churn_drift.csv")
    plan: list[tuple[str, dict[str, Any]]] = [
        (TRAINING, {"data_uri": base, "registered_model": model}),
        (SCORING, {"data_uri": drifted, "registered_model": model}),
    ]
    for dag_id, conf in plan:
        echo(f"Running {dag_id} on {Path(conf['data_uri']).name} …")
        loop.stages.append(run_dag(env, dag_id, conf, log))
        loop.decisions += decisions(loop.stages[-1])
        if loop.stages[-1].state != "success":
            return loop
    drift = loop.stages[-1].results.get("drift", {})
    if not drift.get("retrain_advised"):
        loop.decisions.append("no retraining requested, so no retraining run")
        return loop
    # The demo retrains right after the first training; a deployment keeps the gate's default cooldown.
    echo(f"Drift requested retraining: running {RETRAINING} on {Path(drifted).name} …")
    retrain = {"data_uri": drifted, "registered_model": model, "cooldown_hours": 0}
    loop.stages.append(run_dag(env, RETRAINING, retrain, log))
    loop.decisions += decisions(loop.stages[-1])
    return loop


@click.command()
@click.option(
    "--dags-folder", type=click.Path(path_type=Path, file_okay=False), default=Path("dags"), show_default=True
)
@click.option("--model", default="churn-classifier", show_default=True, help="Registered model of the loop.")
def main(dags_folder: Path, model: str) -> None:
    """Train, score a drifted batch, detect drift, retrain and decide - in real Airflow, embedded."""
    click.echo(f"MLOPS_HOME={mlops_home()}  (full Airflow output: {mlops_home() / 'demo-loop.log'})")
    loop = run_loop(dags_folder, model=model)
    click.echo("\n".join(["", "The loop's decisions:", *loop.decisions]))
    click.echo(f"\nAlias history:  mlops-ops history {model}")
    if not loop.ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
