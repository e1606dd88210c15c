"""``mlops-ops run PIPELINE.yaml``: run one pipeline file in the embedded default and print what happened.

The file goes through the loader DAG file, exactly as in a deployment, and Airflow runs the DAG with
``airflow dags test`` (the way ``make demo`` runs ``mlops_training``): SQLite metadata under
``$MLOPS_HOME/airflow``, MLflow in ``$MLOPS_HOME/mlflow.db``, steps as local processes. Local files are
read only under the data roots; when ``MLOPS_DATA_ROOTS`` is unset, the run adds the folders of the
data and the suite to the default roots (and says so).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import click

from mlops_ops.authoring.parse import PIPELINES_ENV, Parsed, parse_file
from mlops_ops.settings import DATA_ROOTS_ENV, default_data_roots, mlops_home

#: The loader a run's private DAGs folder holds: the same call as dags/yaml_pipelines.py.
LOADER = '''"""The YAML pipelines loader for `mlops-ops run` (an Airflow DAG file)."""
from mlops_ops.authoring.loader import load

load(globals(), __file__)
'''


def data_roots_for(paths: list[str]) -> str | None:
    """``MLOPS_DATA_ROOTS`` for a run that reads ``paths``: None if the user set it (theirs holds)."""
    if os.environ.get(DATA_ROOTS_ENV) is not None:
        return None
    folders = [str(root) for root in default_data_roots()]
    for value in paths:
        if value and "://" not in value and "{{" not in value:
            folders.append(str(Path(value).absolute().parent))
    return os.pathsep.join(dict.fromkeys(folders))


def local_inputs(pipeline: Any) -> list[str]:
    return [v for v in (getattr(pipeline, "data", None), getattr(pipeline, "suite", None)) if isinstance(v, str)]


def ensure_suite(parsed: Parsed) -> None:
    """Infer the suite of a ``suite: infer`` file beside it on first use (the suite is then kept)."""
    from mlops_ops.authoring.parse import suite_beside

    suite = getattr(parsed.pipeline, "suite", None)
    if suite and suite == str(suite_beside(parsed.path.absolute())) and not Path(suite).exists():
        from mlops_ops.suite import write_suite

        click.echo(f"Inferring the expectation suite from the data into {suite} …")
        write_suite(parsed.pipeline.data, suite, target=getattr(parsed.pipeline, "target", None))  # type: ignore[attr-defined]


def run_file(path: str | Path, conf: dict[str, Any] | None = None) -> int:
    """Run the pipeline file at ``path`` end to end; print a summary; 0 when the run succeeded."""
    from mlops_ops import quickstart
    from mlops_ops.demo.runstate import stored_results

    parsed = parse_file(path)
    pipeline = parsed.pipeline
    roots = data_roots_for(local_inputs(pipeline))
    if roots is not None:
        os.environ[DATA_ROOTS_ENV] = roots
        click.echo(f"{DATA_ROOTS_ENV} not set: reading local data under {roots}")
    ensure_suite(parsed)
    dags = mlops_home() / "run" / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    (dags / "yaml_pipelines.py").write_text(LOADER)
    env = quickstart.airflow_env(dags)
    env[PIPELINES_ENV] = str(parsed.path.absolute())
    log = mlops_home() / "run.log"
    click.echo(f"MLOPS_HOME={mlops_home()}  (full Airflow output: {log})")
    quickstart.migrate(env, log)
    click.echo(f"Running {pipeline.dag_id} ({pipeline.kind}) from {parsed.display} …")
    started = time.perf_counter()
    done = quickstart.airflow(env, "dags", "test", pipeline.dag_id, "-c", json.dumps(conf or {}))
    elapsed = time.perf_counter() - started
    with log.open("a") as out:
        out.write(done.stdout + done.stderr)
    run, errors = quickstart.outcome(done.stdout + done.stderr)
    results = stored_results(pipeline.dag_id, run["run_id"], type(pipeline).steps)
    click.echo(summary(run, errors, results, elapsed, type(pipeline).steps))
    return 0 if run["state"] == "success" else 1


_SHOWN = ("roc_auc", "accuracy", "f1", "rmse", "mae", "r2")


def _metrics(values: dict[str, float]) -> str:
    return ", ".join(f"{k}={values[k]:.4f}" for k in _SHOWN if k in values)


def summary(
    run: dict[str, str], errors: list[str], results: dict[str, dict[str, Any]], elapsed: float, steps: tuple[str, ...]
) -> str:
    """What the run did, in a few lines: steps, data, metrics, the decision and where the model landed."""
    lines = [
        f"Run {run['run_id']}: {run['state']} in {elapsed:.1f}s",
        "  steps       " + ", ".join(f"{s}={'done' if s in results else 'not run'}" for s in steps),
    ]
    lines += [f"  error       {e}" for e in errors]
    if "ingest" in results:
        snap = results["ingest"]["snapshot"]
        lines.append(f"  dataset     {snap['rows']} rows, sha256 {snap['digest'][:16]}…  {snap['uri']}")
    if "validate" in results:
        lines.append(f"  validation  passed {results['validate']['evaluated']} expectations")
    if "drift" in results:
        dr = results["drift"]
        advice = "retraining requested" if dr.get("retrain_advised") else "no retraining advised"
        lines.append(f"  drift       share {float(dr.get('drift_share') or 0):.2f}: {advice}")
    if "evaluate" in results:
        ev = results["evaluate"]
        lines.append("  candidate   " + _metrics(ev["candidate_metrics"]))
        if ev.get("champion_metrics"):
            lines.append(f"  champion v{ev['champion_version']} " + _metrics(ev["champion_metrics"]))
        lines.append("  decision    " + ("PASS" if ev["passed"] else "REJECT: " + "; ".join(ev["reasons"])))
    if "promote" in results:
        from mlops_ops.demo.conf import shown
        from mlops_ops.demo.embedded import venv_bin

        cli = shown(venv_bin() / "mlops-ops")
        pr = results["promote"]
        moved = "set" if pr["moved"] and not pr.get("previous_version") else ("moved" if pr["moved"] else "unchanged")
        lines.append(f"  registry    {pr['model_name']} v{pr['version']} @{pr['alias']} ({moved})")
        lines.append(f"  lineage     {cli} lineage {pr['model_name']} --alias {pr['alias']}")
    return "\n".join(lines)
