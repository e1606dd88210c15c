"""Orchestration overhead and step costs, measured on this machine.

    .venv/bin/python benchmarks/pipeline.py compare --rows 10000 --repeat 3
    .venv/bin/python benchmarks/pipeline.py overhead --rows 5000 --rows 1000000
    .venv/bin/python benchmarks/pipeline.py steps --rows 1000000

``compare`` runs, side by side and interleaved in each round, the plain one-process script (the floor),
the same five functions as an Airflow TaskFlow DAG under ``airflow dags test`` (benchmarks/taskflow_dag.py,
the Airflow-native baseline; ``taskflow-migrated`` starts from a database migrated beforehand), and
mlops_training through ``python -m mlops_ops.quickstart`` with cold step processes, with the warm executor starting its parent (``warm-first``), with the parent already up
(``warm``), again on the unchanged data and home (``rerun``: its warm Airflow parent is up too), and once
more there with ``force`` (``forced``: every step runs again, both warm parents up, and evaluate also scores
the champion the earlier run promoted). Every variant starts from a fresh home and Airflow database except
``rerun`` and ``forced``; the demo's template database and form cache are made before the first
round, outside the timings, as the TaskFlow template is. It reports medians with the spread, in wall seconds and in CPU seconds
(the processes' own and their children's, plus what the warm parent and its forks used), with the load.

``overhead`` times mlops_training in Airflow (``python -m mlops_ops.quickstart``, what ``make demo``
runs, excluding environment creation) against one Python process calling the five step functions,
each on a fresh MLOPS_HOME and the same data. ``steps`` runs the five steps through the
CLI under ``/usr/bin/time -v`` and reports wall time and peak memory of each.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import statistics
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
    # Steps may read the benchmark's data (beside the homes, in its work folder) and the demo suite.
    return env | {"MLOPS_HOME": str(home), "MLOPS_DATA_ROOTS": f"{home.parent}:{REPO}"}


def plain(data: str) -> None:
    """The baseline: the five step functions called in one process."""
    from mlops_ops.context import RunContext
    from mlops_ops.demo import SUITE_PATH
    from mlops_ops.specs import EvaluateSpec, IngestSpec, PromoteSpec, TrainSpec, ValidateSpec
    from mlops_ops.steps import registry
    from mlops_ops.store import store_for

    store = store_for()

    def ctx(step: str) -> RunContext:
        return RunContext(pipeline="plain", run_id="bench", step=step)

    ingested = registry.get("ingest").load()(IngestSpec(source=data, target="churned"), ctx("ingest"), store)
    validated = registry.get("validate").load()(
        ValidateSpec(dataset=ingested, suite=str(SUITE_PATH)), ctx("validate"), store
    )
    trained = registry.get("train").load()(
        TrainSpec(dataset=ingested, target="churned", validation=validated,
                  estimator_params={"max_iter": 100, "learning_rate": 0.1}),
        ctx("train"), store)  # fmt: skip
    evaluated = registry.get("evaluate").load()(
        EvaluateSpec(dataset=ingested, candidate=trained, registered_model="bench", gates=["roc_auc >= 0.75"]),
        ctx("evaluate"), store)  # fmt: skip
    registry.get("promote").load()(PromoteSpec(evaluation=evaluated, registered_model="bench"), ctx("promote"), store)


@click.group()
def main() -> None:
    """Benchmarks of mlops-ops."""


@main.command("plain-run", hidden=True)
@click.argument("data")
def plain_run(data: str) -> None:
    plain(data)


def warm_cpu(folder: Path) -> float:
    """CPU seconds used so far by the warm parents under ``folder`` and the step processes they reaped."""
    total = 0.0
    for lock in folder.glob("warm-*.lock"):
        pid = lock.read_text().strip()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ValueError):
            continue
        total += sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
    return total


def stop_warm(folder: Path) -> None:
    """End the warm parents this benchmark started (by their pids, from their lock files)."""
    for lock in folder.glob("warm-*.lock"):
        pid = lock.read_text().strip()
        if pid.isdigit():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)


def measure(argv: list[str], env: dict[str, str], warm_dir: Path, cwd: Path) -> dict[str, object]:
    """Wall and CPU seconds of one command (children and warm parents included), its load and outcome."""
    load = os.getloadavg()[0]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    warm0 = warm_cpu(warm_dir)
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime + warm_cpu(warm_dir) - warm0
    output = done.stdout + done.stderr
    log = Path(env["MLOPS_HOME"]) / "demo.log"  # where the quickstart sends Airflow's output
    if log.exists():
        output += log.read_text(errors="replace").rsplit("DagRun Finished", 1)[-1][:2000]
    ok = done.returncode == 0 and ("state=success" in output or "plain-run" in argv)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load": round(load, 2), "ok": ok}


def airflow_home_env(home: Path, dags: Path) -> dict[str, str]:
    airflow_home = home / "airflow"
    return clean_env(home) | {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }


def taskflow_argv(data: str, *, migrate: bool = True) -> list[str]:
    """``airflow dags test`` of the TaskFlow DAG, after ``airflow db migrate`` unless the home has a database."""
    script = (
        "import subprocess, sys; a = sys.argv[1]; "
        + ("subprocess.run([a, 'db', 'migrate'], check=True, capture_output=True); " if migrate else "")
        + "sys.exit(subprocess.run([a, 'dags', 'test', 'taskflow_bench', '-c', sys.argv[2]]).returncode)"
    )
    return [sys.executable, "-c", script, str(BIN / "airflow"), json.dumps({"data": data})]


def summarise(runs: dict[str, list[dict[str, object]]]) -> list[dict[str, object]]:
    """Per variant: median wall and CPU seconds with their spread, and the ratios to the plain script."""
    rows = []
    floor_wall = statistics.median(float(r["wall_s"]) for r in runs["plain"])  # type: ignore[arg-type]
    floor_cpu = statistics.median(float(r["cpu_s"]) for r in runs["plain"])  # type: ignore[arg-type]
    for name, found in runs.items():
        wall = [float(r["wall_s"]) for r in found]  # type: ignore[arg-type]
        cpu = [float(r["cpu_s"]) for r in found]  # type: ignore[arg-type]
        rows.append({
            "variant": name, "n": len(found), "ok": all(r["ok"] for r in found),
            "wall_median_s": round(statistics.median(wall), 1), "wall_spread_s": [min(wall), max(wall)],
            "cpu_median_s": round(statistics.median(cpu), 1), "cpu_spread_s": [min(cpu), max(cpu)],
            "ratio_wall": round(statistics.median(wall) / floor_wall, 2),
            "ratio_cpu": round(statistics.median(cpu) / floor_cpu, 2),
            "load_median": round(statistics.median(float(r["load"]) for r in found), 2),  # type: ignore[arg-type]
        })  # fmt: skip
    return rows


@main.command()
@click.option("--rows", default=10_000, show_default=True)
@click.option("--repeat", default=3, show_default=True)
def compare(rows: int, repeat: int) -> None:
    """Plain script, Airflow TaskFlow, and mlops-ops cold, warm and rerun: side by side, medians of REPEAT."""
    work = Path(tempfile.mkdtemp(prefix="bench-cmp-"))
    data = str(dataset(rows, work))
    # A copy of the working tree as it is now, so that edits made meanwhile change nothing measured.
    src = work / "src"
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    dags = work / "taskflow_dags"
    dags.mkdir()
    shutil.copy(src / "benchmarks" / "taskflow_dag.py", dags / "taskflow_dag.py")
    runs: dict[str, list[dict[str, object]]] = {}
    quickstart = [sys.executable, "-m", "mlops_ops.quickstart", "--data", data]
    plain_argv = [sys.executable, str(src / "benchmarks" / "pipeline.py"), "plain-run", data]

    def env_of(home: str, **extra: str) -> dict[str, str]:
        return clean_env(work / home) | {"PYTHONPATH": str(src), "MLOPS_DATA_ROOTS": str(work)} | extra

    # A database migrated once, outside the timings, for the TaskFlow variant that does not migrate.
    migrated = airflow_home_env(work / "taskflow-template", dags) | {"PYTHONPATH": str(src)}
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=migrated, check=True, capture_output=True)

    prepare = (
        "import sys; from pathlib import Path; from mlops_ops.demo.conf import form_fields; "
        "from mlops_ops.demo.embedded import airflow_env, migrate; "
        "dags = Path(sys.argv[1]); form_fields(dags); migrate(airflow_env(dags), Path(sys.argv[2]))"
    )
    prepared = env_of("prepare")
    subprocess.run(
        [sys.executable, "-c", prepare, str(src / "dags"), str(work / "prepare.log")],
        cwd=src, env=prepared, check=True, capture_output=True,
    )  # fmt: skip

    for attempt in range(repeat):
        warm_dir = work / f"w{attempt}"
        warm_dir.mkdir(mode=0o700)
        (work / f"taskflowm{attempt}" / "airflow").mkdir(parents=True)
        shutil.copy(work / "taskflow-template" / "airflow" / "airflow.db", work / f"taskflowm{attempt}" / "airflow")
        variants: list[tuple[str, list[str], dict[str, str]]] = [
            ("plain", plain_argv, env_of(f"plain{attempt}")),
            (
                "taskflow",
                taskflow_argv(data),
                airflow_home_env(work / f"taskflow{attempt}", dags)
                | {"PYTHONPATH": str(src), "MLOPS_DATA_ROOTS": str(work)},
            ),
            (
                "taskflow-migrated",
                taskflow_argv(data, migrate=False),
                airflow_home_env(work / f"taskflowm{attempt}", dags)
                | {"PYTHONPATH": str(src), "MLOPS_DATA_ROOTS": str(work)},
            ),
            ("mlops-cold", quickstart, env_of(f"cold{attempt}", MLOPS_WARM_EXECUTOR="0")),
            ("mlops-warm-first", quickstart, env_of(f"warmfirst{attempt}", MLOPS_WARM_DIR=str(warm_dir))),
            ("mlops-warm", quickstart, env_of(f"warm{attempt}", MLOPS_WARM_DIR=str(warm_dir))),
            ("mlops-rerun", quickstart, env_of(f"warm{attempt}", MLOPS_WARM_DIR=str(warm_dir))),
            (
                "mlops-forced",
                [*quickstart, "--conf", '{"force": true}'],
                env_of(f"warm{attempt}", MLOPS_WARM_DIR=str(warm_dir)),
            ),
        ]
        try:
            for name, argv, env in variants:
                result = measure(argv, env, warm_dir, src) | {"variant": name, "round": attempt, "rows": rows}
                runs.setdefault(name, []).append(result)
                print(json.dumps(result), flush=True)
        finally:
            stop_warm(warm_dir)
    print(json.dumps({"rows": rows, "summary": summarise(runs)}, indent=1), flush=True)


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
    """Each of the five steps through the CLI, and the plain script: wall time and peak memory of each."""
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
    trained = run(
        "train",
        {
            "dataset": ingested,
            "target": "churned",
            "validation": validated,
            "estimator_params": {"max_iter": 100, "learning_rate": 0.1},
        },
    )
    evaluated = run(
        "evaluate",
        {"dataset": ingested, "candidate": trained, "registered_model": "bench", "gates": ["roc_auc >= 0.75"]},
    )
    run("promote", {"evaluation": evaluated, "registered_model": "bench"})
    seconds, mib, _ = timed(
        [sys.executable, __file__, "plain-run", str(data)], env | {"MLOPS_HOME": str(work / "plain")}
    )
    results["plain script"] = {"wall_s": round(seconds, 1), "peak_rss_mib": round(mib)}
    print(json.dumps({"rows": rows, "steps": results}))


if __name__ == "__main__":
    main()
