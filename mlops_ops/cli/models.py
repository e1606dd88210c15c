"""Registered models: ``lineage`` of a version, ``history`` of an alias's moves, and ``rollback`` of an alias."""

from __future__ import annotations

import json
from typing import Any

import click

from mlops_ops.cli.console import stdout_to_stderr
from mlops_ops.cli.errors import user_errors
from mlops_ops.errors import SpecError


@click.command()
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
    with stdout_to_stderr():
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


@click.command()
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
    with stdout_to_stderr():
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


@click.command()
@click.argument("model")
@click.option("--alias", default="champion", show_default=True, help="The alias whose moves are listed.")
@click.option("--json", "as_json", is_flag=True, help="Print the moves as JSON.")
@user_errors
def history(model: str, alias: str, as_json: bool) -> None:
    """Print every move of MODEL's alias, oldest first: time, from, to, kind, actor, reason."""
    from mlops_ops.lineage import history as history_module

    with stdout_to_stderr():
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
