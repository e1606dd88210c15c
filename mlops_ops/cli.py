"""The ``mlops-ops`` command line: the container entrypoint of every step, plus the user commands.

``mlops-ops step NAME --spec JSON|@file`` is exactly what the local runner and a Kubernetes pod run.
Progress goes to stderr; the result manifest goes to stdout as JSON (and to ``--result`` if given).
A user's mistake ends with one line on stderr and an exit code from ``mlops_ops.errors``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from mlops_ops import __version__
from mlops_ops.context import RunContext
from mlops_ops.errors import MlopsError, SpecError
from mlops_ops.specs import parse_spec
from mlops_ops.steps import STEP_NAMES

F = TypeVar("F", bound=Callable[..., Any])
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _load_json(value: str, what: str) -> Any:
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"cannot read {what} file {value[1:]!r}: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc


def user_errors(func: F) -> F:
    """Turn our errors into one line on stderr and the error's exit code."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MlopsError as exc:
            click.echo(f"mlops-ops: error: {type(exc).__name__}: {exc}", err=True)
            sys.exit(exc.exit_code)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    # Libraries print to stdout; stdout is reserved for the result manifest.
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, stream=sys.stderr, force=True
    )
    for noisy in ("great_expectations", "mlflow", "alembic", "botocore", "urllib3", "matplotlib", "numexpr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="mlops-ops")
def main() -> None:
    """mlops-ops: ML lifecycle steps with lineage in MLflow."""


@main.command()
@click.argument("name", type=click.Choice(STEP_NAMES))
@click.option("--spec", "spec_arg", required=True, help="The step spec as JSON, or @path to a JSON file.")
@click.option("--pipeline", envvar="MLOPS_PIPELINE", default="adhoc", show_default=True, help="Pipeline id.")
@click.option("--run-id", envvar="MLOPS_RUN_ID", default="manual", show_default=True, help="Pipeline run id.")
@click.option("--step-id", envvar="MLOPS_STEP_ID", default=None, help="Step (task) id; defaults to NAME.")
@click.option("--try-number", envvar="MLOPS_TRY_NUMBER", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--artifact-root", envvar="MLOPS_ARTIFACT_ROOT", default=None, help="Artifact store root URI.")
@click.option(
    "--result",
    "result_uri",
    envvar="MLOPS_RESULT_URI",
    default=None,
    help="Also write the result manifest here (path or URI).",
)
@click.option("-v", "--verbose", is_flag=True)
@user_errors
def step(
    name: str,
    spec_arg: str,
    pipeline: str,
    run_id: str,
    step_id: str | None,
    try_number: int,
    artifact_root: str | None,
    result_uri: str | None,
    verbose: bool,
) -> None:
    """Run one step: NAME is ingest, validate, train, evaluate or promote."""
    from mlops_ops.steps import step_function
    from mlops_ops.store import store_for, write_uri

    _configure_logging(verbose)
    raw = _load_json(spec_arg, "--spec")
    spec = parse_spec(name, raw)
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()
    ctx = RunContext(
        pipeline=pipeline,
        run_id=run_id,
        step=step_id or name,
        try_number=try_number,
        spec_digest=hashlib.sha256(canonical).hexdigest(),
    )
    log = logging.getLogger("mlops_ops.cli")
    log.info("step %s: pipeline=%s run=%s try=%d", ctx.step, ctx.pipeline, ctx.run_id, ctx.try_number)
    started = time.perf_counter()
    with _stdout_to_stderr():
        result = step_function(name)(spec, ctx, store_for(artifact_root))
    payload = json.dumps(result.model_dump(mode="json"), sort_keys=True)
    if result_uri:
        write_uri(result_uri, payload.encode())
    log.info("step %s finished in %.1fs", ctx.step, time.perf_counter() - started)
    click.echo(payload)


@main.command()
@click.argument("model")
@click.option("--alias", default=None, help="Follow this alias (default: champion).")
@click.option("--version", "version", default=None, help="A version number instead of an alias.")
@click.option("--json", "as_json", is_flag=True, help="Print the chain as JSON.")
@user_errors
def lineage(model: str, alias: str | None, version: str | None, as_json: bool) -> None:
    """Print the lineage of a registered model version: data, validation, training, evaluation, aliases."""
    from mlops_ops import lineage as lineage_module

    if alias and version:
        raise SpecError("give --alias or --version, not both")
    with _stdout_to_stderr():
        chain = lineage_module.chain(model, alias=alias, version=version)
    if as_json:
        click.echo(json.dumps(chain, indent=2, sort_keys=True))
        return
    click.echo(render_chain(chain))


def render_chain(chain: dict[str, Any]) -> str:
    """The lineage chain as a few readable lines."""
    aliases = ", ".join(chain["aliases"]) or "no alias"
    lines = [
        f"{chain['model']} version {chain['version']} ({aliases}), registered {chain['created']}",
        f"  pipeline      {chain['pipeline']} run {chain['pipeline_run']}",
        f"  dataset       {chain['dataset']['uri']}",
        f"                sha256 {chain['dataset']['digest']}",
        f"  validation    {chain['validation']['result_uri'] or 'not recorded'}",
    ]
    for label, key in (("training", "train_run"), ("evaluation", "evaluate_run")):
        run = chain.get(key)
        if run is None:
            lines.append(f"  {label:<13} not recorded")
            continue
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(run["metrics"].items()))
        lines.append(f"  {label:<13} run {run['run_id']} [{run['status']}] parent {run['parent_run_id']}")
        if metrics:
            lines.append(f"                {metrics}")
    for key, value in chain["alias_history"].items():
        lines.append(f"  alias         {key} = {value}")
    return "\n".join(lines)


@main.group()
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

    _configure_logging(False)
    with _stdout_to_stderr():
        path = suite_module.write_suite(data, out, name=name or Path(out).stem, target=target)
    click.echo(str(path))


if __name__ == "__main__":
    main()
