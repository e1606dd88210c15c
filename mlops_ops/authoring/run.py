"""``mlops-ops run PIPELINE.yaml``: run one pipeline file in the embedded default and print what happened.

The file goes through the loader DAG file, exactly as in a deployment, and Airflow runs the DAG with
``airflow dags test`` (the way ``make demo`` runs ``mlops_training``): SQLite metadata under
``$MLOPS_HOME/airflow``, MLflow in ``$MLOPS_HOME/mlflow.db``, steps as local processes. Local files are
read only under the data roots; when ``MLOPS_DATA_ROOTS`` is unset, the run adds the folders of the
data and the suite to the default roots (and says so).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlops_ops.authoring.parse import PIPELINES_ENV, Parsed, parse_file
from mlops_ops.errors import SpecError
from mlops_ops.settings import DATA_ROOTS_ENV, default_data_roots, mlops_home

if TYPE_CHECKING:
    from mlops_ops.demo.params import Field
    from mlops_ops.demo.runstate import RunState, TaskState

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
    """Run the pipeline file at ``path`` end to end; print a summary; 0 when the run succeeded.

    :param conf: Trigger-form values for this run, checked against the DAG's form before Airflow starts.
    :returns: the exit code: 0 when the run succeeded, 1 when it did not, 128 + N when signal N stopped it.
    """
    from mlops_ops.demo.embedded import migrate, prestart_airflow
    from mlops_ops.demo.params import check_conf
    from mlops_ops.demo.run import run_dag

    parsed = parse_file(path)
    pipeline = parsed.pipeline
    conf = conf or {}
    roots = data_roots_for(local_inputs(pipeline))
    if roots is not None:
        os.environ[DATA_ROOTS_ENV] = roots
    env, dag_file = embedded_env(parsed)
    if conf:
        check_conf(conf, form_fields(dag_file, pipeline.dag_id, env), pipeline.dag_id)
    refuse_approval(parsed, conf)
    if roots is not None:
        click.echo(f"{DATA_ROOTS_ENV} not set: reading local data under {roots}")
    ensure_suite(parsed)
    log = mlops_home() / "run.log"
    click.echo(f"MLOPS_HOME={mlops_home()}  (full Airflow output: {log})")
    prestart_airflow(env)
    with ChildrenStopped() as stopped:
        migrate(env, log, echo=click.echo)
        click.echo(f"Running {pipeline.dag_id} ({pipeline.kind}) from {parsed.display} …")
        started = time.perf_counter()
        run, tasks, output = run_dag(env, pipeline.dag_id, conf, log, click.echo)
    if stopped.signum is not None:
        click.echo(
            f"mlops-ops: stopped by signal {stopped.signum}, and Airflow with it; its output is in {log}", err=True
        )
        return 128 + stopped.signum
    elapsed = time.perf_counter() - started
    click.echo(summary(recorded(env, run, tasks, output), elapsed, type(pipeline).steps))
    return 0 if run.state == "success" else 1


def embedded_env(parsed: Parsed) -> tuple[dict[str, str], Path]:
    """The embedded Airflow's environment for the file, and the loader DAG file of its private DAGs folder.

    The loader names the file and its digest, so the form read from it (cached by the loader's bytes, see
    :func:`mlops_ops.demo.params.load_fields`) is read again when the file or the authoring code changes.
    """
    from mlops_ops.demo.embedded import airflow_env

    dags = mlops_home() / "run" / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    loader = dags / "yaml_pipelines.py"
    loader.write_text(LOADER + f"# {parsed.path.absolute()} {_form_digest(parsed.path)}\n")
    env = airflow_env(dags)
    env[PIPELINES_ENV] = str(parsed.path.absolute())
    return env, loader


def _form_digest(path: Path) -> str:
    """Changes when the pipeline file or a module that builds its DAG from it changes."""
    digest = hashlib.sha256(path.read_bytes())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        stat = source.stat()
        digest.update(f"{source}:{stat.st_mtime_ns}:{stat.st_size}".encode())
    return digest.hexdigest()


def form_fields(dag_file: Path, dag_id: str, env: dict[str, str]) -> dict[str, Field]:
    """The fields of the DAG's trigger form (its Params), as Airflow builds them, read once per file and cached."""
    from mlops_ops.demo.embedded import cache_folder
    from mlops_ops.demo.params import load_fields

    return load_fields(dag_file, dag_id, env, cache_folder())


def refuse_approval(parsed: Parsed, conf: dict[str, Any]) -> None:
    """Refuse a run whose promotion is ``approval``: it waits for a reviewer in Airflow's UI, which this run has not."""
    pipeline = parsed.pipeline
    promotion = conf.get("promotion_policy", getattr(pipeline, "promotion", None))
    if promotion != "approval":
        return
    said = "--conf promotion_policy" if "promotion_policy" in conf else f"{parsed.display}: promotion"
    here = (
        """here run it with --conf '{"promotion_policy": "champion"}' (or challenger)"""
        if "promotion_policy" in pipeline.shown
        else "here set 'promotion: champion' (or challenger) in the file"
    )
    raise SpecError(
        f"{said} 'approval' waits for a reviewer in Airflow's UI, which `mlops-ops run` runs without: "
        f"trigger {pipeline.dag_id} in Airflow's UI (the file in dags/pipelines/ and `make airflow-ui`, or a "
        f"deployed Airflow); {here}"
    )


class ChildrenStopped:
    """SIGTERM ends the block as Ctrl-C does, and either stops every process started in it (Airflow, its steps).

    ``airflow dags test`` would otherwise go on without this process, its approval task waiting for days.
    :attr:`signum` says which signal ended the block (None: it ended by itself).
    """

    #: Seconds the processes get to exit after SIGTERM before they are killed.
    GRACE = 5.0

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: Any = None

    def _interrupt(self, signum: int, frame: object) -> None:
        self.signum = signum
        raise KeyboardInterrupt

    def __enter__(self) -> ChildrenStopped:
        if threading.current_thread() is threading.main_thread():  # signal handlers belong to the main thread
            self._previous = signal.signal(signal.SIGTERM, self._interrupt)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        if not isinstance(exc, KeyboardInterrupt):
            return False
        self.signum = self.signum or signal.SIGINT
        stop_children(self.GRACE)
        return True


def stop_children(grace: float) -> None:
    """Terminate every descendant of this process, and kill those still there after ``grace`` seconds."""
    import psutil  # imported here only: a process that started Airflow gets here

    children = psutil.Process().children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(alive, timeout=grace)


@dataclass(frozen=True)
class Recorded:
    """What Airflow recorded about the run: its state, each task's state, result manifest and error."""

    run: RunState
    tasks: dict[str, TaskState]
    results: dict[str, dict[str, Any]]
    reused: set[str]
    errors: dict[str, str]

    def state(self, task_id: str) -> str:
        """The task's recorded state; ``reused`` for a success that reused an earlier run's result."""
        task = self.tasks.get(task_id)
        if task is None or task.state is None:
            return "not run"
        return "reused" if task_id in self.reused else task.state


def recorded(env: dict[str, str], run: RunState, tasks: dict[str, TaskState], output: str) -> Recorded:
    """The run's task states and result manifests from Airflow's metadata database, failed tasks' errors from ``output``."""
    from mlops_ops.context import REUSED_XCOM
    from mlops_ops.demo.run import task_error
    from mlops_ops.demo.runstate import MetadataDB

    db = MetadataDB(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    done = [t for t, task in tasks.items() if task.state == "success"]
    results = {t: r for t in done if (r := db.result(run.dag_id, run.run_id, t)) is not None}
    reused = {t for t in done if db.xcom(run.dag_id, run.run_id, t, REUSED_XCOM)}
    errors = {t: e for t, task in tasks.items() if task.state == "failed" and (e := task_error(output, t)) is not None}
    return Recorded(run, tasks, results, reused, errors)


_SHOWN = ("roc_auc", "accuracy", "f1", "rmse", "mae", "r2")


def _metrics(values: dict[str, float]) -> str:
    return ", ".join(f"{k}={values[k]:.4f}" for k in _SHOWN if k in values)


def summary(rec: Recorded, elapsed: float, steps: tuple[str, ...]) -> str:
    """What the run did, in a few lines: each task's recorded state, data, metrics, the decision, the model."""
    run, results = rec.run, rec.results
    order = {step: i for i, step in enumerate(steps)}
    # In the order they ran (Airflow's start dates); those that never started after them, steps first.
    tasks = sorted(
        rec.tasks.values(), key=lambda t: (t.start_date is None, str(t.start_date or ""), order.get(t.task_id, 99))
    )
    lines = [
        f"Run {run.run_id}: {run.state} in {elapsed:.1f}s",
        "  steps       " + ", ".join(f"{t.task_id}={rec.state(t.task_id)}" for t in tasks),
    ]
    lines += [f"  error       step {t} failed: {e}" for t, e in rec.errors.items()]
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
