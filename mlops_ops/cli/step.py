"""``mlops-ops step NAME``, what every runner and pod executes, and ``mlops-ops steps``, which lists them."""

from __future__ import annotations

import hashlib
import json
import logging
import time

import click

from mlops_ops.cli.console import configure_logging, stdout_to_stderr
from mlops_ops.cli.errors import user_errors
from mlops_ops.cli.json_input import load_json
from mlops_ops.context import RunContext
from mlops_ops.steps import registry


@click.command()
@click.argument("name")
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
    """Run one step: NAME is a registered step (`mlops-ops steps` lists them)."""
    from mlops_ops.store import store_for, write_uri

    configure_logging(verbose)
    declared = registry.get(name)
    raw = load_json(spec_arg, "--spec")
    spec = declared.parse(raw)
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()
    ctx = RunContext(
        pipeline=pipeline,
        run_id=run_id,
        step=step_id or name,
        try_number=try_number,
        spec_digest=hashlib.sha256(canonical).hexdigest(),
    )
    # Not __name__: task logs and the runners' tests know a step's first line by this logger's name.
    log = logging.getLogger("mlops_ops.cli")
    log.info("step %s: pipeline=%s run=%s try=%d", ctx.step, ctx.pipeline, ctx.run_id, ctx.try_number)
    started = time.perf_counter()
    with stdout_to_stderr():
        result = declared.load()(spec, ctx, store_for(artifact_root))
    payload = json.dumps(result.model_dump(mode="json"), sort_keys=True)
    if result_uri:
        write_uri(result_uri, payload.encode())
    log.info("step %s finished in %.1fs", ctx.step, time.perf_counter() - started)
    click.echo(payload)


@click.command("steps")
@user_errors
def list_steps() -> None:
    """List the registered steps (built-in and installed by packages) with their spec fields."""
    for name in registry.names():
        declared = registry.get(name)
        fields = ", ".join(declared.spec.model_fields)
        click.echo(f"{name:<10} {declared.summary}\n{'':<10} spec: {fields}")
