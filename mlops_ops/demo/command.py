"""``mlops-ops demo``: run ``mlops_training`` end to end in an embedded Airflow on demo or your own data.

Kept light at import (click and the standard library): ``mlops_ops.cli`` imports it in every step process.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from mlops_ops.demo.embedded import AirflowProcess

from mlops_ops.demo.conf import (
    DAG_ID,
    build_conf,
    check_target,
    default_dags_folder,
    form_fields,
    local_files,
    own_model,
    shown,
    starting_suite,
)


class DemoCommand(click.Command):
    """Lists the DAG's form fields (what ``--conf`` accepts) at the end of ``--help``."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from mlops_ops.demo.params import describe

        folder = Path(ctx.params.get("dags_folder") or default_dags_folder())
        try:
            text = describe(form_fields(folder))
        except Exception as exc:  # help must print even when the DAG cannot be read
            text = f"(cannot read the fields of {DAG_ID} from {folder}: {exc})"
        with formatter.section(f"--conf fields (the {DAG_ID} trigger form)"):
            for line in text.splitlines():
                formatter.write(f"  {line}\n")


def next_steps(model: str, alias: str) -> list[str]:
    """Commands to go on with, each working as printed from this directory without activating anything."""
    from mlops_ops.demo.embedded import HOST, venv_bin
    from mlops_ops.settings import HOME_ENV, mlops_home

    prefix = f"{HOME_ENV}={shlex.quote(str(mlops_home()))} " if os.environ.get(HOME_ENV) else ""
    home = "" if not prefix else f" MLOPS_HOME={shlex.quote(str(mlops_home()))}"
    cli = shown(venv_bin() / "mlops-ops")
    in_project = Path("Makefile").is_file() and Path("dags").is_dir()
    airflow_ui = f"make airflow-ui{home}" if in_project else f"{prefix}{cli} demo --ui airflow"
    mlflow_ui = f"make mlflow-ui{home}" if in_project else f"{prefix}{cli} demo --ui mlflow"
    return [
        "",
        "Next:",
        f"  {prefix}{cli} lineage {model} --alias {alias}   # the recorded chain of the model",
        f"  {prefix}{cli} history {model} --alias {alias}   # every move of the alias",
        f"  {airflow_ui}   # http://{HOST}:8080, log in as admin (the password is printed)",
        f"  {mlflow_ui}   # http://{HOST}:5000",
    ]


def run_demo(batch: str, extra: str, dags_folder: Path) -> int:
    """Run the DAG, print progress and the summary; the exit code is 0 when the run succeeded."""
    from mlops_ops.demo.embedded import airflow_env, migrate, prestart_airflow, with_data_roots
    from mlops_ops.demo.run import outcome, run_dag, warm_mlflow
    from mlops_ops.demo.summary import summary
    from mlops_ops.settings import mlops_home

    conf, defaults = build_conf(batch, extra, dags_folder)
    check_target(conf, defaults)
    plugins = Path("plugins") if Path("plugins").is_dir() else None
    base = airflow_env(dags_folder, plugins)
    env = with_data_roots(base, local_files(conf))
    log = mlops_home() / "demo.log"
    click.echo(f"MLOPS_HOME={mlops_home()}  (Airflow's full output: {log})")
    if env.get(DATA_ROOTS) != base.get(DATA_ROOTS):
        click.echo(f"Steps may read {env[DATA_ROOTS]} in this run (MLOPS_DATA_ROOTS, your file's folder added)")
    conf = starting_suite(own_model(conf), defaults, env)
    prestart_steps(env, conf, defaults)
    prestart_airflow(env)
    migrate(env, log, echo=click.echo)
    click.echo(f"Running {DAG_ID} on {conf['data_uri']} in Airflow (the first step starts in about 10 s) …")
    warm_mlflow()
    with Unpausing(env, log) as unpausing:
        run, tasks, output = run_dag(
            env, DAG_ID, conf, log, click.echo, on_start=unpausing.start, on_finished=unpausing.outlive
        )
        click.echo("")
        click.echo("\n".join(summary(outcome(env, run, tasks, output, conf, defaults))))
    settings = defaults | conf
    click.echo("\n".join(next_steps(str(settings["registered_model"]), str(settings["promotion_policy"]))))
    return 0 if run.state == "success" else 1


class Unpausing:
    """Unpause the demo's DAGs while the run goes on, so Trigger in the UI runs them afterwards.

    They start no run of their own when they appear; any other DAG in the folder keeps Airflow's default,
    paused. ``airflow dags unpause`` starts once the run is recorded (the DAGs are in the database then)
    and is waited for on leaving the block, so its start-up overlaps the run instead of following it. So
    is ``airflow dags test`` when it is still shutting down after a successful run (:meth:`outlive`): the
    summary is read meanwhile.
    """

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.processes: list[AirflowProcess] = []

    def outlive(self, process: AirflowProcess) -> None:
        """Wait for ``process`` too on leaving the block."""
        self.processes.append(process)

    def start(self) -> None:
        from mlops_ops.demo.embedded import start_airflow
        from mlops_ops.demo.runstate import MetadataDB

        paused = MetadataDB(self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).paused(list(_DEMO_DAGS))
        if paused:
            args = ["dags", "unpause", "--treat-dag-id-as-regex", "-y", f"^({'|'.join(paused)})$"]
            with self.log.open("a") as out:
                self.processes.append(start_airflow(self.env, args, out))

    def __enter__(self) -> Unpausing:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.wait()


def prestart_steps(env: dict[str, str], conf: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Start the warm step parent now, so its imports overlap Airflow's start instead of the first step's."""
    from mlops_ops.demo.embedded import venv_bin
    from mlops_ops.runners import warm

    if (conf.get("runner") or defaults.get("runner")) != "local":
        return
    try:
        warm.prestart(env, str(venv_bin() / "mlops-ops"))
    except (warm.WarmUnavailable, OSError) as exc:  # the first step starts it, or runs cold, and says why
        click.echo(f"(the warm step executor did not start early: {exc})")


def run_loop_demo(dags_folder: Path, model: str = "churn-loop") -> int:
    """The continuous-training loop on the demo batches; prints each decision; 0 when every run succeeded."""
    from mlops_ops.demo.loop import run_loop
    from mlops_ops.settings import mlops_home

    click.echo(f"MLOPS_HOME={mlops_home()}  (Airflow's full output: {mlops_home() / 'demo-loop.log'})")
    loop = run_loop(dags_folder, model=model)
    click.echo("\n".join(["", "The loop's decisions:", *(f"  {d}" for d in loop.decisions)]))
    from mlops_ops.demo.embedded import venv_bin

    click.echo(f"\nAlias history:  {shown(venv_bin() / 'mlops-ops')} history {model}")
    return 0 if loop.ok else 1


_DEMO_DAGS = ("mlops_training", "mlops_scoring", "mlops_retraining")
DATA_ROOTS = "MLOPS_DATA_ROOTS"


@click.command("demo", cls=DemoCommand)
@click.option(
    "--data",
    "batch",
    default="base",
    show_default=True,
    help="A demo batch (base, drift, corrupt), or your own CSV or Parquet: a path anywhere, file:// or s3://.",
)
@click.option("--conf", "extra_conf", default="{}", help="Trigger-form fields as a JSON object (listed below).")
@click.option(
    "--dags-folder",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder with the DAG files [default: ./dags, else the project's dags/].",
)
@click.option("--ui", type=click.Choice(["airflow", "mlflow"]), default=None, help="Instead, start that UI here.")
@click.option(
    "--scenario",
    type=click.Choice(["training", "loop"]),
    default="training",
    show_default=True,
    help="training: one mlops_training run on --data. loop: train on the base batch, score the drifted "
    "batch, detect drift, retrain and decide (mlops_training, mlops_scoring, mlops_retraining).",
)
def demo(batch: str, extra_conf: str, dags_folder: Path | None, ui: str | None, scenario: str) -> None:
    """Run mlops_training end to end in an embedded Airflow (state in $MLOPS_HOME) and report what happened.

    Your own file anywhere works: its folder is added to the data roots for this run (unless you set
    MLOPS_DATA_ROOTS yourself). Exit code 0 when the run succeeded, 1 when it did not, 2 for a bad --conf.
    """
    from mlops_ops.errors import MlopsError

    dags_folder = dags_folder or default_dags_folder()
    try:
        if ui == "airflow":
            from mlops_ops.demo.ui import airflow_ui

            airflow_ui(dags_folder, Path("plugins") if Path("plugins").is_dir() else None, click.echo)
        elif ui == "mlflow":
            from mlops_ops.demo.ui import mlflow_ui

            mlflow_ui(click.echo)
        code = run_demo(batch, extra_conf, dags_folder) if scenario == "training" else run_loop_demo(dags_folder)
    except MlopsError as exc:
        click.echo(f"mlops-ops: error: {type(exc).__name__}: {' '.join(str(exc).split())}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(code)
