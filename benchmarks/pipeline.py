"""Orchestration overhead and step costs, measured on this machine.

    .venv/bin/python benchmarks/pipeline.py overhead --rows 5000 --rows 1000000
    .venv/bin/python benchmarks/pipeline.py steps --rows 1000000

``overhead`` times mlops_training in Airflow (``python -m mlops_ops.quickstart``, what ``make demo``
runs, excluding environment creation) against one Python process calling the five step functions,
each on a fresh MLOPS_HOME and the same data. ``steps`` runs ingest, validate and train through the
CLI under ``/usr/bin/time -v`` and reports wall time and peak memory of each.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def dataset(rows: int, folder: Path) -> Path:
    """The demo CSV at this size (the shipped file at 5000 rows)."""
    from mlops_ops.demo import DATA_DIR

    if rows == 5000:
        return DATA_DIR / "churn.csv"
    path = folder / f"churn_{rows}.csv"
    if not path.exists():
        from mlops_ops.demo.generate import generate

        generate(rows, seed=0).to_csv(path, index=False)
    return path


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLFLOW_", "MLOPS_"))}
    return env | {"MLOPS_HOME": str(home)}


def plain(data: str) -> None:
    """The baseline: the five step functions called in one process."""
    from mlops_ops.context import RunContext
    from mlops_ops.demo import SUITE_PATH
    from mlops_ops.specs import EvaluateSpec, IngestSpec, PromoteSpec, TrainSpec, ValidateSpec
    from mlops_ops.steps import step_function
    from mlops_ops.store import store_for

    store = store_for()

    def ctx(step: str) -> RunContext:
        return RunContext(pipeline="plain", run_id="bench", step=step)

    ingested = step_function("ingest")(IngestSpec(source=data, target="churned"), ctx("ingest"), store)
    validated = step_function("validate")(ValidateSpec(dataset=ingested, suite=str(SUITE_PATH)), ctx("validate"), store)
    trained = step_function("train")(
        TrainSpec(dataset=ingested, target="churned", validation=validated,
                  estimator_params={"max_iter": 100, "learning_rate": 0.1}),
        ctx("train"), store)  # fmt: skip
    evaluated = step_function("evaluate")(
        EvaluateSpec(dataset=ingested, candidate=trained, registered_model="bench", gates=["roc_auc >= 0.75"]),
        ctx("evaluate"), store)  # fmt: skip
    step_function("promote")(PromoteSpec(evaluation=evaluated, registered_model="bench"), ctx("promote"), store)


@click.group()
def main() -> None:
    """Benchmarks of mlops-ops."""


@main.command("plain-run", hidden=True)
@click.argument("data")
def plain_run(data: str) -> None:
    plain(data)


@main.command()
@click.option("--rows", multiple=True, type=int, default=[5000], show_default=True)
@click.option("--repeat", default=1, show_default=True)
def overhead(rows: tuple[int, ...], repeat: int) -> None:
    """Airflow pipeline run against a plain one-process script."""
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    for n in rows:
        data = str(dataset(n, work))
        for attempt in range(repeat):
            home = work / f"plain-{n}-{attempt}"
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, __file__, "plain-run", data], env=clean_env(home), check=True, capture_output=True
            )
            plain_s = time.perf_counter() - started

            home = work / f"airflow-{n}-{attempt}"
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "mlops_ops.quickstart", "--data", data],
                cwd=REPO,
                env=clean_env(home),
                capture_output=True,
                text=True,
                check=False,
            )
            airflow_s = time.perf_counter() - started
            log = (home / "demo.log").read_text()
            run_s = float(re.search(r"run_duration=([0-9.]+)", log)[1])  # type: ignore[index]
            durations = {m[1]: float(m[2]) for m in re.finditer(r"step (\w+) finished in ([0-9.]+)s", log)}
            print(json.dumps({
                "rows": n, "plain_script_s": round(plain_s, 1), "make_demo_pipeline_s": round(airflow_s, 1),
                "dag_run_s": round(run_s, 1), "ratio_dag_run": round(run_s / plain_s, 2),
                "ratio_make_demo": round(airflow_s / plain_s, 2), "step_process_s": durations,
                "state": "success" if done.returncode == 0 else "failed",
            }), flush=True)  # fmt: skip


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (MiB) of a command under /usr/bin/time -v, and its stdout."""
    done = subprocess.run(["/usr/bin/time", "-v", *argv], env=env, capture_output=True, text=True, check=True)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([0-9.]+)", done.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    assert wall and rss, done.stderr[-2000:]
    seconds = int(wall[1] or 0) * 3600 + int(wall[2]) * 60 + float(wall[3])
    return seconds, int(rss[1]) / 1024, done.stdout


@main.command()
@click.option("--rows", default=1_000_000, show_default=True)
def steps(rows: int) -> None:
    """Ingest, validate and train through the CLI: wall time and peak memory of each."""
    from mlops_ops.demo import SUITE_PATH

    work = Path(tempfile.mkdtemp(prefix="bench-steps-"))
    data = dataset(rows, work)
    env = clean_env(work / "home")
    cli = [str(BIN / "mlops-ops"), "step"]
    results: dict[str, dict[str, float]] = {}

    def run(name: str, spec: dict[str, object]) -> dict[str, object]:
        seconds, mib, out = timed([*cli, name, "--spec", json.dumps(spec), "--run-id", "bench"], env)
        results[name] = {"wall_s": round(seconds, 1), "peak_rss_mib": round(mib)}
        return json.loads(out)  # type: ignore[no-any-return]

    ingested = run("ingest", {"source": str(data), "target": "churned"})
    validated = run("validate", {"dataset": ingested, "suite": str(SUITE_PATH)})
    run(
        "train",
        {
            "dataset": ingested,
            "target": "churned",
            "validation": validated,
            "estimator_params": {"max_iter": 100, "learning_rate": 0.1},
        },
    )
    print(json.dumps({"rows": rows, "steps": results}))


if __name__ == "__main__":
    main()
