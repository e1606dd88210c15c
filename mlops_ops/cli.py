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
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from mlops_ops import __version__
from mlops_ops.context import RunContext
from mlops_ops.demo.command import demo as demo_command
from mlops_ops.errors import ERROR_PREFIX, MlopsError, SpecError
from mlops_ops.steps import registry

F = TypeVar("F", bound=Callable[..., Any])
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _load_json(value: str, what: str) -> Any:
    """Parse a JSON argument, inline or ``@path``, within the limits of ``mlops_ops.settings``.

    Anything a library would raise on hostile input (bad UTF-8, a huge number, nesting deeper than the
    interpreter's recursion limit) becomes a SpecError, so a bad spec always ends with exit code 2.
    """
    from mlops_ops.settings import MAX_SPEC_BYTES, MAX_SPEC_DEPTH

    text = _read_spec_file(value[1:], what) if value.startswith("@") else value
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # argv bytes that are not UTF-8 arrive as lone surrogates
        raise SpecError(f"{what} is not valid UTF-8 (at character {exc.start}); pass UTF-8 text") from None
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"{what} is {size} bytes, more than the {MAX_SPEC_BYTES} a spec may have")
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise SpecError(
            f"{what} nests lists and objects too deeply to parse; at most {MAX_SPEC_DEPTH} levels"
        ) from None
    except ValueError as exc:  # an integer of more than 4300 digits, NaN or Infinity
        raise SpecError(f"{what} is not valid JSON ({exc})") from None
    _check_values(data, what)
    return data


def _read_spec_file(path: str, what: str) -> str:
    from mlops_ops.settings import MAX_SPEC_BYTES

    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise SpecError(f"cannot read {what} file {path!r}: {reason}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{what} file {path!r} is larger than the {MAX_SPEC_BYTES} bytes a spec may have")
    try:
        return data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is allowed
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{what} file {path!r} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _check_values(data: Any, what: str) -> None:
    """Refuse nesting deeper than MAX_SPEC_DEPTH, and strings no file, URI or name can hold."""
    from mlops_ops.settings import MAX_SPEC_DEPTH

    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise SpecError(f"{what} has a string with a NUL character (\\u0000); no field accepts one")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise SpecError(
                    f"{what} has a string with a lone surrogate (\\ud800-\\udfff), which is not text"
                ) from None
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_SPEC_DEPTH:
            raise SpecError(f"{what} nests lists and objects more than {MAX_SPEC_DEPTH} levels deep")
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        stack.extend((item, depth + 1) for item in items)


def user_errors(func: F) -> F:
    """Turn every error into one bounded line on stderr and an exit code (the top-level guard of a command).

    Our errors exit with their own code. Anything else is a bug: it exits 1 with the exception's type and
    message, and its traceback is printed only with ``--verbose``.
    """

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MlopsError as exc:
            click.echo(_error_line(f"{type(exc).__name__}: ", _text(exc)), err=True)
            sys.exit(exc.exit_code)
        except click.ClickException:
            raise
        except Exception as exc:  # the guard: an exception no step turned into one of ours is a bug
            verbose = bool(kwargs.get("verbose"))
            if verbose:
                traceback.print_exc(file=sys.stderr)
            hint = "" if verbose or "verbose" not in kwargs else "; rerun with --verbose for the traceback"
            line = _error_line(f"{type(exc).__name__}: ", _text(exc), f" (unexpected, a bug in mlops-ops{hint})")
            click.echo(line, err=True)
            sys.exit(1)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper  # type: ignore[return-value]


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # an exception whose __str__ fails must not hide the original one
        return "(the message could not be printed)"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _error_line(kind: str, message: str, suffix: str = "") -> str:
    """``mlops-ops: error: KIND MESSAGE SUFFIX`` on one line of at most MAX_ERROR_LINE characters.

    Whitespace runs (newlines too) become one space, other control characters are escaped, and a long
    message is cut with an ellipsis and the count of characters cut.
    """
    from mlops_ops.settings import MAX_ERROR_LINE

    message = _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", " ".join(message.split()))
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    head = f"{ERROR_PREFIX}{kind}"
    room = MAX_ERROR_LINE - len(head) - len(suffix)
    if len(message) > room:
        room -= 32  # the marker: " … (1234567 more characters)"
        message = f"{message[:room]} … ({len(message) - room} more characters)"
    return f"{head}{message}{suffix}"


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

    _configure_logging(verbose)
    declared = registry.get(name)
    raw = _load_json(spec_arg, "--spec")
    spec = declared.parse(raw)
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
        result = declared.load()(spec, ctx, store_for(artifact_root))
    payload = json.dumps(result.model_dump(mode="json"), sort_keys=True)
    if result_uri:
        write_uri(result_uri, payload.encode())
    log.info("step %s finished in %.1fs", ctx.step, time.perf_counter() - started)
    click.echo(payload)


def _cli_shown() -> str:
    """This command as it can be typed from the working directory without activating anything."""
    from mlops_ops.demo.command import shown
    from mlops_ops.demo.embedded import venv_bin

    return shown(venv_bin() / "mlops-ops")


@main.command("steps")
@user_errors
def list_steps() -> None:
    """List the registered steps (built-in and installed by packages) with their spec fields."""
    for name in registry.names():
        declared = registry.get(name)
        fields = ", ".join(declared.spec.model_fields)
        click.echo(f"{name:<10} {declared.summary}\n{'':<10} spec: {fields}")


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
    """The lineage chain as labelled lines: data, validation, training, Airflow, evaluation, aliases."""
    aliases = ", ".join(chain["aliases"]) or "no alias"
    data, val = chain.get("data") or {}, chain["validation"]
    snapshot, train, held = (
        data.get("snapshot") or {},
        data.get("train_partition") or {},
        data.get("eval_partition") or {},
    )
    lines = [
        f"{chain['model']} version {chain['version']} ({aliases}), registered {chain['created']}",
        f"  pipeline         {chain['pipeline']} run {chain['pipeline_run']} (mlops-ops {chain.get('package_version') or '?'})",
        f"  source           {data.get('source_uri') or 'not recorded'}",
        f"  snapshot         sha256 {snapshot.get('sha256') or '?'}  (the whole source, as ingested)",
        f"  train partition  sha256 {train.get('sha256') or chain['dataset']['digest']}  (the rows trained on)",
        f"  eval partition   sha256 {held.get('sha256') or '?'}  (the rows evaluated on)",
        f"  validation       {_validation_text(val)}",
        f"                   result {val['result_uri'] or 'not recorded'}",
    ]
    lines += _training_lines(chain)
    lines += _evaluation_lines(chain)
    for key, value in chain["alias_history"].items():
        lines.append(f"  alias            {key} = {value}")
    return "\n".join(lines)


def _validation_text(val: dict[str, Any]) -> str:
    if val.get("expectations") is None:
        return f"suite {val.get('suite') or 'not recorded'}"
    passed = val["expectations"] - (val.get("failed") or 0)
    return f"{passed} of {val['expectations']} expectations passed, suite {val['suite']} (sha256 {val['suite_sha256']})"


def _training_lines(chain: dict[str, Any]) -> list[str]:
    training, af, run = chain.get("training") or {}, chain.get("airflow") or {}, chain.get("train_run")
    if run is None:
        return ["  training         not recorded"]
    params = json.dumps(training.get("params") or {}, sort_keys=True)
    return [
        f"  estimator        {training.get('estimator')} ({training.get('task')}, target {training.get('target')!r})",
        f"  parameters       {params}, seed {training.get('seed')}",
        f"  training run     {run['run_id']} [{run['status']}]",
        f"  airflow          DAG {af.get('dag_id')}, run {af.get('run_id')}, task {af.get('task_id')}, "
        f"try {af.get('try_number')}",
    ]


def _evaluation_lines(chain: dict[str, Any]) -> list[str]:
    ev, run = chain.get("evaluation") or {}, chain.get("evaluate_run")
    if run is None:
        return ["  evaluation       not recorded"]
    gates = "; ".join(ev.get("gates") or []) or "no gate"
    champion = f"against v{ev['champion_version']}" if ev.get("champion_version") else "no champion to beat"
    passed = ev.get("passed")
    decision = "not recorded" if passed is None else ("PASS" if passed else "REJECT")
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted((ev.get("candidate_metrics") or {}).items()))
    return [
        f"  evaluation       run {run['run_id']}: gates {gates}, margin {ev.get('min_improvement')} "
        f"on {ev.get('compare_metric')} {champion}",
        f"  decision         {decision}: {metrics}",
    ]


# The demo: mlops_training in an embedded Airflow (click and the standard library at import).
main.add_command(demo_command)


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


# ------------------------------------------------------------------------------------ alias history


@main.command()
@click.argument("model")
@click.option("--reason", required=True, help="Why: recorded with the move, like any alias move.")
@click.option("--to", "to", default=None, help="Version to go back to (default: the previous holder).")
@click.option("--alias", default="champion", show_default=True, help="The alias to move back.")
@user_errors
def rollback(model: str, reason: str, to: str | None, alias: str) -> None:
    """Move MODEL's alias back to an earlier version, recorded with time, actor and reason (idempotent)."""
    import getpass

    from mlops_ops.lineage import history
    from mlops_ops.store import store_for

    if to is not None and not to.isdigit():
        raise SpecError(f"--to {to!r} is not a version number")
    with _stdout_to_stderr():
        done = history.rollback(model, reason, store=store_for(), alias=alias, to=to, actor=_actor(getpass))
    if done.moved:
        click.echo(f"{model}@{alias}: version {done.previous} -> version {done.version} ({done.reason})")
    else:
        click.echo(f"{model}@{alias}: stays on version {done.version} ({done.reason})")


def _actor(getpass: Any) -> str:
    try:
        return f"{getpass.getuser()} (mlops-ops rollback)"
    except (KeyError, OSError):  # no user name in a bare container
        return "mlops-ops rollback"


@main.command()
@click.argument("model")
@click.option("--alias", default="champion", show_default=True, help="The alias whose moves are listed.")
@click.option("--json", "as_json", is_flag=True, help="Print the moves as JSON.")
@user_errors
def history(model: str, alias: str, as_json: bool) -> None:
    """Print every move of MODEL's alias, oldest first: time, from, to, kind, actor, reason."""
    from mlops_ops.lineage import history as history_module

    with _stdout_to_stderr():
        moves = history_module.alias_history(model, alias)
    if not moves:
        raise SpecError(f"registered model {model!r} has no history of alias {alias!r}")
    if as_json:
        click.echo(json.dumps(moves, indent=2, sort_keys=True))
        return
    for move in moves:
        source = f"v{move['from']}" if move["from"] else "none"
        actor = f" by {move['actor']}" if move.get("actor") else ""
        click.echo(f"{move['moved_at']}  {source:>5} -> v{move['to']:<4} {move['kind']:<9}{actor}: {move['reason']}")


# ------------------------------------------------------------------------------------ YAML pipelines


@main.group()
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

    _configure_logging(False)
    roots = data_roots_for([data])
    if roots is not None:
        os.environ[DATA_ROOTS_ENV] = roots
    with _stdout_to_stderr():
        started = init_pipeline(data, target, out, force=force)
    click.echo(
        f"task       {started.guess.task}  (guessed: {target!r} has {started.guess.reason}; edit 'task' if wrong)"
    )
    click.echo(f"suite      {started.suite}  (inferred from {started.rows} rows; review it)")
    click.echo(f"estimator  {started.estimator} {json.dumps(started.estimator_params)}")
    click.echo(f"gate       {started.gate}")
    click.echo(f"wrote      {started.pipeline}")
    click.echo(f"next       {_cli_shown()} run {started.pipeline}")


@main.command("run")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--conf", "conf", default="{}", help="Trigger-form values for this run, as JSON.")
@user_errors
def run_pipeline(file: Path, conf: str) -> None:
    """Run pipeline FILE end to end in the embedded Airflow and print a summary."""
    from mlops_ops.authoring.run import run_file

    values = _load_json(conf, "--conf")
    if not isinstance(values, dict):
        raise SpecError("--conf must be a JSON object of form fields")
    sys.exit(run_file(file, values))


if __name__ == "__main__":
    main()
