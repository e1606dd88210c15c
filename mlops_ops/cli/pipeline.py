"""YAML pipelines: ``pipeline lint|schema|init`` to write and check them, ``run`` to run one end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mlops_ops.cli.console import configure_logging, stdout_to_stderr
from mlops_ops.cli.errors import user_errors
from mlops_ops.errors import SpecError


@click.group()
def pipeline() -> None:
    """Pipeline files (YAML): check them, write the JSON Schema, start one for your data."""


@pipeline.command("lint")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@user_errors
def pipeline_lint(files: tuple[Path, ...]) -> None:
    """Check pipeline FILES (or folders of them): one `file:line:col: field: message` per problem."""
    from mlops_ops.authoring.parse import discover, parse_many

    paths = [found for given in files for found in discover(given)]
    if not paths:
        raise SpecError(f"no pipeline files (*.yaml, *.yml) in {', '.join(map(str, files))}")
    good, bad = parse_many(paths)
    for problems in bad.values():
        for problem in sorted(problems, key=lambda p: (p.line, p.column)):
            click.echo(str(problem))
    for parsed in good:
        click.echo(f"{parsed.display}: ok ({parsed.pipeline.kind} {parsed.pipeline.dag_id})", err=True)
    if bad:
        click.echo(f"{len(bad)} of {len(paths)} pipeline files have problems", err=True)
        sys.exit(1)


@pipeline.command("schema")
@click.option(
    "--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write here (default: stdout)."
)
@user_errors
def pipeline_schema(out: Path | None) -> None:
    """Write the JSON Schema of pipeline files (for editors and CI)."""
    from mlops_ops.authoring.schema import json_schema

    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if out is None:
        click.echo(text, nl=False)
        return
    out.write_text(text)
    click.echo(str(out), err=True)


@pipeline.command("init")
@click.option("--data", "data", required=True, help="Your CSV or Parquet: a path, file:// or s3:// URI.")
@click.option("--target", required=True, help="The column to predict.")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Pipeline file (default: DATA's name .yaml).",
)
@click.option("--force", is_flag=True, help="Overwrite the pipeline file and its suite.")
@user_errors
def pipeline_init(data: str, target: str, out: Path | None, force: bool) -> None:
    """Write a starting training pipeline for DATA: task guessed, suite inferred beside it, estimator and gate chosen."""
    import os

    from mlops_ops.authoring.init import init_pipeline
    from mlops_ops.authoring.run import data_roots_for
    from mlops_ops.settings import DATA_ROOTS_ENV

    configure_logging(False)
    roots = data_roots_for([data])
    if roots is not None:
        os.environ[DATA_ROOTS_ENV] = roots
    with stdout_to_stderr():
        started = init_pipeline(data, target, out, force=force)
    click.echo(
        f"task       {started.guess.task}  (guessed: {target!r} has {started.guess.reason}; edit 'task' if wrong)"
    )
    click.echo(f"suite      {started.suite}  (inferred from {started.rows} rows; review it)")
    click.echo(f"estimator  {started.estimator} {json.dumps(started.estimator_params)}")
    click.echo(f"gate       {started.gate}")
    click.echo(f"wrote      {started.pipeline}")
    click.echo(f"next       {_cli_shown()} run {started.pipeline}")


def _cli_shown() -> str:
    """This command as it can be typed from the working directory without activating anything."""
    from mlops_ops.demo.conf import shown
    from mlops_ops.demo.embedded import venv_bin

    return shown(venv_bin() / "mlops-ops")


@click.command("run")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--conf", "conf", default="{}", help="Trigger-form fields for this run, as a JSON object.")
@user_errors
def run_pipeline(file: Path, conf: str) -> None:
    """Run pipeline FILE end to end in the embedded Airflow and print a summary.

    --conf is checked against the DAG's trigger form before Airflow starts. Exit code 0 when the run
    succeeded, 1 when it did not, 2 for a bad file or --conf (and for promotion 'approval', which needs
    Airflow's UI).
    """
    from mlops_ops.authoring.run import run_file
    from mlops_ops.demo.params import parse_conf

    sys.exit(run_file(file, parse_conf(conf)))
