"""The ``mlops-ops`` group: its options, and every subcommand from the modules of this package."""

from __future__ import annotations

import click

from mlops_ops import __version__
from mlops_ops.cli.models import history, lineage, rollback
from mlops_ops.cli.pipeline import pipeline, run_pipeline
from mlops_ops.cli.step import list_steps, step
from mlops_ops.cli.suite import suite
from mlops_ops.demo.command import demo


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="mlops-ops")
def main() -> None:
    """mlops-ops: ML lifecycle steps with lineage in MLflow."""


# The demo runs mlops_training in an embedded Airflow (click and the standard library at import).
for _command in (step, list_steps, lineage, suite, rollback, history, pipeline, run_pipeline, demo):
    main.add_command(_command)
