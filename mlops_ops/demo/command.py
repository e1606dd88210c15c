"""``mlops-ops demo``: run ``mlops_training`` end to end in an embedded Airflow on demo or your own data.

Kept light at import (click and the standard library): ``mlops_ops.cli`` imports it in every step process.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

DAG_ID = "mlops_training"
BATCHES = {"base": "churn.csv", "drift": "churn_drift.csv", "corrupt": "churn_corrupt.csv"}
#: Form fields that name local files a step reads; their folders join the data roots for the run.
FILE_FIELDS = ("data_uri", "suite")


def _fields(dags_folder: Path) -> dict[str, Any]:
    from mlops_ops.demo.embedded import airflow_env
    from mlops_ops.demo.params import load_fields

    env = airflow_env(dags_folder)
    return load_fields(dags_folder / f"{DAG_ID}.py", DAG_ID, env, Path(env["AIRFLOW_HOME"]))


class DemoCommand(click.Command):
    """Lists the DAG's form fields (what ``--conf`` accepts) at the end of ``--help``."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from mlops_ops.demo.params import describe

        folder = Path(ctx.params.get("dags_folder") or default_dags_folder())
        try:
            text = describe(_fields(folder))
        except Exception as exc:  # help must print even when the DAG cannot be read
            text = f"(cannot read the fields of {DAG_ID} from {folder}: {exc})"
        with formatter.section(f"--conf fields (the {DAG_ID} trigger form)"):
            for line in text.splitlines():
                formatter.write(f"  {line}\n")


def default_dags_folder() -> Path:
    """``dags/`` in the working directory, else the project's own (a checkout with an editable install)."""
    here = Path("dags")
    if (here / f"{DAG_ID}.py").is_file():
        return here
    return Path(__file__).resolve().parents[2] / "dags"


def data_uri(batch: str) -> str:
    """A demo batch's file, or the user's path made absolute (URIs as given)."""
    from mlops_ops.demo import DATA_DIR
    from mlops_ops.demo.embedded import local_path

    if batch in BATCHES:
        return str(DATA_DIR / BATCHES[batch])
    path = local_path(batch)
    return str(path) if path is not None and "://" not in batch else batch


def build_conf(batch: str, extra: str, dags_folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's conf (``--data`` and ``--conf`` checked against the DAG's params) and the params' defaults."""
    from mlops_ops.demo.params import check_conf, parse_conf
    from mlops_ops.errors import SpecError

    extra_conf = parse_conf(extra)
    fields = _fields(dags_folder)
    conf = {"data_uri": data_uri(batch)} | extra_conf
    check_conf(conf, fields, DAG_ID)
    from mlops_ops.demo.embedded import local_path

    if conf.get("promotion_policy") == "approval":
        raise SpecError(
            "--conf promotion_policy 'approval' waits for a reviewer in Airflow's UI, which the demo runs without: "
            "trigger mlops_training from `make airflow-ui` for it, or use 'champion' or 'challenger' here"
        )
    path = local_path(conf["data_uri"])
    if path is not None and not path.is_file():
        raise SpecError(
            f"--data {conf['data_uri']!r}: no such file; give a CSV or Parquet file, or base, drift, corrupt"
        )
    return conf, {name: f.default for name, f in fields.items()}


def check_target(conf: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Refuse a local CSV whose header lacks the target column, naming the columns it has."""
    import csv
    import difflib

    from mlops_ops.demo.embedded import local_path
    from mlops_ops.errors import SpecError

    path = local_path(str(conf["data_uri"]))
    if path is None or path.suffix.lower() != ".csv":
        return
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        header = next(csv.reader(handle), [])
    target = str(conf.get("target", defaults.get("target")))
    if target in header:
        return
    near = difflib.get_close_matches(target, header, n=1)
    hint = f"did you mean {near[0]!r}? " if near else ""
    columns = ", ".join(header[:20]) + (" …" if len(header) > 20 else "")
    raise SpecError(
        f"the target column {target!r} is not in {path.name} ({columns}); {hint}"
        f"""name yours with --conf '{{"target": "COLUMN"}}' (make demo ... CONF='{{"target": "COLUMN"}}')"""
    )


def columns_of(path: Path) -> list[str] | None:
    """The column names of a local CSV (its header) or Parquet file (its schema); None for other files."""
    import csv

    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8", errors="replace") as handle:
            return next(csv.reader(handle), [])
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    return None


def is_demo_table(conf: dict[str, Any]) -> bool:
    """Whether the data has the demo table's columns, so the churn suite and the churn model fit it."""
    from mlops_ops.demo import SUITE_PATH
    from mlops_ops.demo.embedded import local_path

    path = local_path(str(conf["data_uri"]))
    if path is None or not path.is_file():
        return True  # an s3:// batch: as given
    suite = json.loads(SUITE_PATH.read_text())
    ordered = [e["kwargs"]["column_list"] for e in suite["expectations"] if "column_list" in e["kwargs"]]
    return columns_of(path) == (ordered[0] if ordered else None)


def own_model(conf: dict[str, Any]) -> dict[str, Any]:
    """For your own table (not the demo's columns) without a ``registered_model``: a model named after the file.

    Evaluating your candidate against the churn champion would score that model on columns it never saw.
    """
    import re

    from mlops_ops.demo.embedded import local_path

    path = local_path(str(conf["data_uri"]))
    if "registered_model" in conf or is_demo_table(conf):
        return conf
    stem = path.stem if path is not None else str(conf["data_uri"]).rstrip("/").rsplit("/", 1)[-1].split(".")[0]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "my"
    click.echo(f"Registering your model as {name}-model (set registered_model in --conf to choose)")
    return conf | {"registered_model": f"{name}-model"}


def starting_suite(conf: dict[str, Any], defaults: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """For your own table (not the demo's columns) without a ``suite``: infer a starting suite (once per content).

    The demo's suite describes the churn table, so it would fail any other data. The inferred suite is
    written under ``$MLOPS_HOME/suites/`` and its path printed, to review and pass as ``suite`` later.
    """
    import hashlib

    from mlops_ops.demo.embedded import local_path, venv_bin
    from mlops_ops.errors import DataError
    from mlops_ops.settings import mlops_home

    path = local_path(str(conf["data_uri"]))
    if "suite" in conf or path is None or is_demo_table(conf):
        return conf
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    out = mlops_home() / "suites" / f"{path.stem}-{digest}.json"
    if not out.exists():
        click.echo(f"No suite given for {path.name}: inferring a starting suite from it …")
        target = str(conf.get("target", defaults.get("target")))
        done = subprocess.run(
            [str(venv_bin() / "mlops-ops"), "suite", "infer", str(path), "--out", str(out), "--target", target],
            env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise DataError((done.stderr.strip().splitlines() or ["suite infer failed"])[-1].removeprefix(_PREFIX))
    click.echo(f"Validating with the suite inferred from your data: {shown(out)} (review it; pass it as suite)")
    return conf | {"suite": str(out)}


_PREFIX = "mlops-ops: error: "


def local_files(conf: dict[str, Any]) -> list[Path]:
    """The local files the conf names (data and suite), to admit their folders as data roots."""
    from mlops_ops.demo.embedded import local_path

    found = [local_path(str(conf[key])) for key in FILE_FIELDS if conf.get(key)]
    return [path for path in found if path is not None and path.exists()]


def shown(path: Path) -> str:
    """A path as short as it can be printed and still work from the working directory."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


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
    from mlops_ops.demo.embedded import airflow_env, migrate, with_data_roots
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
    migrate(env, log, echo=click.echo)
    click.echo(f"Running {DAG_ID} on {conf['data_uri']} in Airflow (about 15 s before the first step) …")
    warm_mlflow()
    with Unpausing(env, log) as unpausing:
        run, tasks, output = run_dag(env, DAG_ID, conf, log, click.echo, on_start=unpausing.start)
        click.echo("")
        click.echo("\n".join(summary(outcome(env, run, tasks, output, conf, defaults))))
    settings = defaults | conf
    click.echo("\n".join(next_steps(str(settings["registered_model"]), str(settings["promotion_policy"]))))
    return 0 if run.state == "success" else 1


class Unpausing:
    """Unpause the demo's DAGs while the run goes on, so Trigger in the UI runs them afterwards.

    They start no run of their own when they appear; any other DAG in the folder keeps Airflow's default,
    paused. ``airflow dags unpause`` starts once the run is recorded (the DAGs are in the database then)
    and is waited for on leaving the block, so its start-up overlaps the run instead of following it.
    """

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from mlops_ops.demo.embedded import airflow_command
        from mlops_ops.demo.runstate import MetadataDB

        paused = MetadataDB(self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).paused(list(_DEMO_DAGS))
        if paused:
            argv = airflow_command("dags", "unpause", "--treat-dag-id-as-regex", "-y", f"^({'|'.join(paused)})$")
            with self.log.open("a") as out:
                self.process = subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def __enter__(self) -> Unpausing:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.wait()


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
