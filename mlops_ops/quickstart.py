"""The main job of the embedded default: run ``mlops_training`` in real Airflow and summarise it.

Airflow lives under ``$MLOPS_HOME/airflow`` (SQLite), MLflow in ``$MLOPS_HOME/mlflow.db``, artifacts in
``$MLOPS_HOME/artifacts``. Nothing needs to be running beforehand.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from mlops_ops.demo import DATA_DIR
from mlops_ops.settings import artifact_root, mlops_home, tracking_uri
from mlops_ops.store import Store

DAG_ID = "mlops_training"
BATCHES = {"base": "churn.csv", "drift": "churn_drift.csv", "corrupt": "churn_corrupt.csv"}
STEPS = ("ingest", "validate", "train", "evaluate", "promote")


def airflow_env(dags_folder: Path, plugins_folder: Path | None = None) -> dict[str, str]:
    """Environment for an embedded Airflow under MLOPS_HOME (SQLite, no examples)."""
    home = mlops_home()
    airflow_home = home / "airflow"
    airflow_home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({
        "MLOPS_HOME": str(home),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder.absolute()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": env.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"),
        "MLFLOW_TRACKING_URI": tracking_uri(),
        "MLOPS_ARTIFACT_ROOT": artifact_root(),
    })  # fmt: skip
    if plugins_folder is not None:
        env["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(plugins_folder.absolute())
    return env


def migrate(env: dict[str, str], log: Path) -> None:
    """Create or upgrade Airflow's metadata database, once per Airflow version."""
    from importlib.metadata import version

    marker = Path(env["AIRFLOW_HOME"]) / f".migrated-{version('apache-airflow')}"
    database = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    if marker.exists() and marker.read_text() == database:
        return
    click.echo("Preparing the Airflow metadata database…")
    if airflow(env, "db", "migrate", log=log).returncode != 0:
        raise click.ClickException(f"airflow db migrate failed; see {log}")
    marker.write_text(database)


def airflow(env: dict[str, str], *args: str, log: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``airflow`` command of this environment."""
    binary = str(Path(sys.executable).with_name("airflow"))
    if log is None:
        return subprocess.run([binary, *args], env=env, text=True, capture_output=True, check=False)
    with log.open("a") as out:
        return subprocess.run([binary, *args], env=env, text=True, stdout=out, stderr=subprocess.STDOUT, check=False)


_FINISHED = re.compile(r"DagRun Finished: .*?run_id=(?P<run_id>[^,]+), .*?state=(?P<state>\w+)")
_FAILED_STEP = re.compile(r"(step \w+ failed: .*?)(?: \[airflow|$)", re.MULTILINE)


def outcome(output: str) -> tuple[dict[str, str], list[str]]:
    """The run id and state Airflow reported, and the one-line errors of failed steps."""
    finished = _FINISHED.search(output)
    if finished is None:
        raise click.ClickException(f"Airflow did not finish a run of {DAG_ID}; see {mlops_home() / 'demo.log'}")
    errors = list(dict.fromkeys(m.group(1).strip() for m in _FAILED_STEP.finditer(output)))
    return {"run_id": finished["run_id"], "state": finished["state"]}, errors


def manifests(run_id: str) -> dict[str, dict[str, Any]]:
    """Each step's result manifest of a run, read back from the artifact store (latest try)."""
    from mlops_ops.context import RunContext

    store = Store(artifact_root())
    found: dict[str, dict[str, Any]] = {}
    for step in STEPS:
        for attempt in range(5, 0, -1):
            uri = store.uri(RunContext(pipeline=DAG_ID, run_id=run_id, step=step, try_number=attempt).result_key())
            if store.exists(uri):
                found[step] = json.loads(store.get_bytes(uri))
                break
    return found


def summary(run: dict[str, str], errors: list[str], results: dict[str, dict[str, Any]], elapsed: float) -> str:
    """What happened, in a dozen lines."""
    lines = [
        f"Run {run['run_id']}: {run['state']} in {elapsed:.1f}s",
        "  steps       " + ", ".join(f"{t}={'done' if t in results else 'not run'}" for t in STEPS),
    ]
    lines += [f"  error       {e}" for e in errors]
    if "ingest" in results:
        snap = results["ingest"]["snapshot"]
        lines.append(f"  dataset     {snap['rows']} rows, sha256 {snap['digest'][:16]}…  {snap['uri']}")
    if "validate" in results:
        lines.append(f"  validation  passed {results['validate']['evaluated']} expectations")
    if "evaluate" in results:
        ev = results["evaluate"]
        lines.append("  candidate   " + _metrics(ev["candidate_metrics"]))
        if ev.get("champion_metrics"):
            lines.append(f"  champion v{ev['champion_version']} " + _metrics(ev["champion_metrics"]))
        verdict = "PASS" if ev["passed"] else "REJECT: " + "; ".join(ev["reasons"])
        lines.append(f"  decision    {verdict}")
    if "promote" in results:
        pr = results["promote"]
        moved = (
            f"moved from v{pr['previous_version']}"
            if pr["moved"] and pr["previous_version"]
            else ("set" if pr["moved"] else "unchanged")
        )
        lines.append(f"  registry    {pr['model_name']} v{pr['version']} @{pr['alias']} ({moved})")
        lines.append(f"  lineage     mlops-ops lineage {pr['model_name']} --alias {pr['alias']}")
    return "\n".join(lines)


def _metrics(values: dict[str, float]) -> str:
    keys = [k for k in ("roc_auc", "accuracy", "f1", "rmse", "r2") if k in values]
    return ", ".join(f"{k}={values[k]:.4f}" for k in keys)


@click.command()
@click.option(
    "--data",
    "batch",
    default="base",
    show_default=True,
    help="Demo batch (base, drift, corrupt) or a path/URI of your own CSV or Parquet.",
)
@click.option(
    "--dags-folder", type=click.Path(path_type=Path, file_okay=False), default=Path("dags"), show_default=True
)
@click.option("--conf", "extra_conf", default="{}", help="Extra DAG params as JSON (the UI form's fields).")
@click.option("--ui", is_flag=True, help="Instead, start Airflow (API server, scheduler, DAG processor) on this home.")
def main(batch: str, dags_folder: Path, extra_conf: str, ui: bool) -> None:
    """Run mlops_training end to end in Airflow on demo data and print what happened."""
    env = airflow_env(dags_folder, Path("plugins") if Path("plugins").is_dir() else None)
    if ui:
        env.setdefault("AIRFLOW__API__HOST", "127.0.0.1")
        click.echo(
            f"Starting Airflow on {env['AIRFLOW_HOME']}; the admin password is printed below and kept "
            "in simple_auth_manager_passwords.json.generated there."
        )
        os.execve(str(Path(sys.executable).with_name("airflow")), ["airflow", "standalone"], env)
    log = mlops_home() / "demo.log"
    data = str(DATA_DIR / BATCHES[batch]) if batch in BATCHES else batch
    conf = {"data_uri": data} | json.loads(extra_conf)
    click.echo(f"MLOPS_HOME={mlops_home()}  (full Airflow output: {log})")
    migrate(env, log)
    click.echo(f"Running {DAG_ID} on {data} …")
    started = time.perf_counter()
    done = airflow(env, "dags", "test", DAG_ID, "-c", json.dumps(conf))
    elapsed = time.perf_counter() - started
    with log.open("a") as out:
        out.write(done.stdout + done.stderr)
    run, errors = outcome(done.stdout + done.stderr)
    click.echo(summary(run, errors, manifests(run["run_id"]), elapsed))
    click.echo(
        "\nOpen the UIs on this data:\n"
        f"  MLflow:  .venv/bin/mlflow ui --backend-store-uri {tracking_uri()} --port 5000\n"
        "  Airflow: make airflow-ui   (then http://localhost:8080)"
    )
    if run["state"] != "success":
        sys.exit(1)


if __name__ == "__main__":
    main()
