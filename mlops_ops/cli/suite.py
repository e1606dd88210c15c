"""``mlops-ops suite infer``: a starting expectation suite from reference data."""

from __future__ import annotations

from pathlib import Path

import click

from mlops_ops.cli.console import configure_logging, stdout_to_stderr
from mlops_ops.cli.errors import user_errors


@click.group()
def suite() -> None:
    """Expectation suites."""


@suite.command("infer")
@click.argument("data")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Where to write the suite (JSON).")
@click.option("--name", default=None, help="Suite name (default: the file's stem).")
@click.option("--target", default=None, help="Target column (kept out of range expectations).")
@user_errors
def infer(data: str, out: str, name: str | None, target: str | None) -> None:
    """Write a starting expectation suite inferred from reference DATA (CSV or Parquet)."""
    from mlops_ops import suite as suite_module

    configure_logging(False)
    with stdout_to_stderr():
        path = suite_module.write_suite(data, out, name=name or Path(out).stem, target=target)
    click.echo(str(path))
