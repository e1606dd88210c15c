"""Monitoring steps on large inputs: drift time, scoring overhead, scoring peak memory.

    .venv/bin/python benchmarks/monitoring.py all
    .venv/bin/python benchmarks/monitoring.py drift --rows 1000000 --columns 20
    .venv/bin/python benchmarks/monitoring.py score --rows 1000000
    .venv/bin/python benchmarks/monitoring.py memory --rows 1000000 --rows 10000000

``drift`` times ``drift.run`` in-step (imports, MLflow set-up and a warm-up run excluded) on a
reference and a current table of ROWS x COLUMNS (continuous floats, integers and categories, a few
shifted), and the statistics alone. ``score`` times ``score.run`` on ROWS rows of the demo schema
against a bare ``model.predict`` (and ``predict`` + ``predict_proba``) on the same rows, already in
memory. ``memory`` scores each size in a fresh subprocess and reads its peak RSS (``ru_maxrss``).
Every command works on a fresh MLOPS_HOME in a temporary folder.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

REPO = Path(__file__).resolve().parent.parent
CHUNK_ROWS = 1_000_000


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _ctx(step: str, run_id: str = "bench") -> Any:
    from mlops_ops.context import RunContext

    return RunContext(pipeline="bench-monitoring", run_id=run_id, step=step)


def _put(path: Path) -> Any:
    """Store a Parquet file content-addressed and return its DatasetRef."""
    import pyarrow.parquet as pq

    from mlops_ops.specs import DatasetRef
    from mlops_ops.steps.ingest import pandas_dtypes
    from mlops_ops.store import store_for

    uri, digest = store_for().put_content_addressed(path)
    meta = pq.ParquetFile(path)
    return DatasetRef(
        uri=uri, digest=digest, rows=meta.metadata.num_rows, columns=pandas_dtypes(meta.schema_arrow.empty_table())
    )


# --------------------------------------------------------------------------------------------- drift


def drift_table(rows: int, columns: int, seed: int, shifted: bool) -> Any:
    """ROWS x COLUMNS: half continuous floats, a quarter integers, a quarter categories; some shifted."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    n_float, n_int = columns // 2, columns // 4
    data: dict[str, Any] = {}
    for i in range(n_float):
        shift = 0.5 if shifted and i < 3 else 0.0
        data[f"f{i}"] = rng.normal(10 + shift * 3, 3, rows)
    for i in range(n_int):
        data[f"i{i}"] = rng.poisson(3 + (1.5 if shifted and i == 0 else 0), rows).astype(np.int64)
    labels = np.array(["north", "south", "east", "west", "centre"])
    for i in range(columns - n_float - n_int):
        p = [0.4, 0.2, 0.2, 0.1, 0.1] if shifted and i == 0 else [0.2] * 5
        data[f"c{i}"] = pa.array(labels[rng.choice(5, rows, p=p)])
    return pa.table(data)


def bench_drift(rows: int, columns: int, folder: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from mlops_ops.specs.monitoring import DriftSpec
    from mlops_ops.steps import drift, drift_stats

    refs = {}
    for name, seed, shifted in (("reference", 1, False), ("current", 2, True)):
        path = folder / f"drift-{name}.parquet"
        pq.write_table(drift_table(rows, columns, seed, shifted), path, compression="zstd")
        refs[name] = _put(path)
    # Warm-up on a small pair: imports, the MLflow store and experiment, matplotlib's font cache.
    small = {}
    for name, seed in (("reference", 3), ("current", 4)):
        path = folder / f"small-{name}.parquet"
        pq.write_table(drift_table(2000, columns, seed, False), path)
        small[name] = _put(path)
    drift.run(DriftSpec(reference=small["reference"], current=small["current"]), _ctx("drift", "warm"), _store())

    spec = DriftSpec(reference=refs["reference"], current=refs["current"])
    started = time.perf_counter()
    result = drift.run(spec, _ctx("drift"), _store())
    in_step = time.perf_counter() - started

    reference, current = drift.read(_store(), refs["reference"]), drift.read(_store(), refs["current"])
    started = time.perf_counter()
    drift_stats.compare(reference, current, spec.thresholds, sample_rows=spec.sample_rows, seed=spec.seed)
    statistics = time.perf_counter() - started
    started = time.perf_counter()
    drift_stats.compare(reference, current, spec.thresholds, sample_rows=None)
    unsampled = time.perf_counter() - started
    return {
        "rows": rows,
        "columns": columns,
        "in_step_seconds": round(in_step, 2),
        "statistics_seconds": round(statistics, 2),
        "statistics_unsampled_seconds": round(unsampled, 2),
        "sample": result.sample.model_dump() if result.sample else None,
        "drifted_columns": result.drifted_columns,
        "plots": min(spec.max_plots, len(result.columns)),
    }


def _store() -> Any:
    from mlops_ops.store import store_for

    return store_for()


# --------------------------------------------------------------------------------------------- score


def champion(folder: Path) -> str:
    """Train and promote a model on the demo base batch; return its registered name."""
    from mlops_ops.demo import DATA_DIR
    from mlops_ops.specs import EvaluateSpec, IngestSpec, PromoteSpec, TrainSpec
    from mlops_ops.steps import evaluate, ingest, promote, train

    name, store = "bench-churn", _store()
    ingested = ingest.run(IngestSpec(source=str(DATA_DIR / "churn.csv"), target="churned"), _ctx("ingest"), store)
    trained = train.run(
        TrainSpec(dataset=ingested.train, target="churned", estimator_params={"max_iter": 50}), _ctx("train"), store
    )
    evaluation = evaluate.run(
        EvaluateSpec(dataset=ingested.eval, candidate=trained, registered_model=name), _ctx("evaluate"), store
    )
    promote.run(PromoteSpec(evaluation=evaluation, registered_model=name), _ctx("promote"), store)
    return name


def scoring_input(rows: int, folder: Path) -> Any:
    """ROWS rows of the demo schema without the target, written 1,000,000 rows at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlops_ops.demo.generate import generate

    path = folder / f"score-{rows}.parquet"
    writer = None
    done = 0
    while done < rows:
        part = generate(min(CHUNK_ROWS, rows - done), seed=100 + done // CHUNK_ROWS).drop(columns="churned")
        part.insert(0, "customer_id", range(done, done + len(part)))
        chunk = pa.Table.from_pandas(part, preserve_index=False).replace_schema_metadata(None)
        writer = writer or pq.ParquetWriter(path, chunk.schema, compression="zstd")
        writer.write_table(chunk, row_group_size=256 * 1024)
        done += len(part)
    if writer is not None:
        writer.close()
    return _put(path)


def bench_score(rows: int, folder: Path) -> dict[str, Any]:
    import pandas as pd

    from mlops_ops import lineage
    from mlops_ops.specs.monitoring import ScoreSpec
    from mlops_ops.steps import score
    from mlops_ops.store import local_path

    name = champion(folder)
    data = scoring_input(rows, folder)
    model = lineage.load_model(f"models:/{name}/1")
    path = local_path(data.uri)
    frame = pd.read_parquet(path)[list(model.feature_names_in_)]
    started = time.perf_counter()
    model.predict(frame)
    bare = time.perf_counter() - started
    started = time.perf_counter()
    model.predict(frame)
    model.predict_proba(frame)
    bare_both = time.perf_counter() - started
    del frame
    timings = {}
    for probabilities in (True, False):
        spec = ScoreSpec(registered_model=name, dataset=data, keys=["customer_id"], probabilities=probabilities)
        started = time.perf_counter()
        score.run(spec, _ctx("score", f"p{probabilities}"), _store())
        timings[probabilities] = time.perf_counter() - started
    return {
        "rows": rows,
        "score_seconds": round(timings[True], 2),
        "score_no_proba_seconds": round(timings[False], 2),
        "bare_predict_seconds": round(bare, 2),
        "bare_predict_and_proba_seconds": round(bare_both, 2),
        "ratio_vs_bare_predict": round(timings[True] / bare, 2),
        "ratio_no_proba_vs_bare_predict": round(timings[False] / bare, 2),
        "ratio_vs_bare_predict_and_proba": round(timings[True] / bare_both, 2),
    }


def bench_memory(sizes: list[int]) -> list[dict[str, Any]]:
    """Score each size in a fresh process; this process stays small (no heavy imports) while it forks.

    Linux carries a process's peak RSS across ``exec`` into ``ru_maxrss``, so a child forked from a big
    parent would report the parent's size: the model and the data are made in another child first.
    """
    prepared = _child("prepare", *[f"--rows={rows}" for rows in sizes])
    found = []
    for data in prepared["datasets"]:
        found.append(_child("score-child", "--model", prepared["model"], "--dataset", json.dumps(data)))
        Path(data["uri"].removeprefix("file://")).unlink()
    return found


def _child(command: str, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, __file__, command, *args],
        cwd=REPO, env=os.environ.copy(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise click.ClickException(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


@click.group()
def main() -> None:
    """Benchmarks of the score and drift steps."""


def _home() -> tempfile.TemporaryDirectory[str]:
    tmp = tempfile.TemporaryDirectory(prefix="mlops-bench-monitoring-")
    os.environ["MLOPS_HOME"] = str(Path(tmp.name) / "home")
    for var in ("MLOPS_ARTIFACT_ROOT", "MLFLOW_TRACKING_URI", "MLOPS_MLFLOW_ARTIFACT_ROOT"):
        os.environ.pop(var, None)
    return tmp


@main.command("drift")
@click.option("--rows", default=1_000_000, show_default=True)
@click.option("--columns", default=20, show_default=True)
def drift_command(rows: int, columns: int) -> None:
    """In-step time of drift on ROWS x COLUMNS."""
    with _home() as tmp:
        click.echo(json.dumps({"drift": bench_drift(rows, columns, Path(tmp)), "machine": _load()}, indent=2))


@main.command("score")
@click.option("--rows", default=1_000_000, show_default=True)
def score_command(rows: int) -> None:
    """score.run against a bare model.predict on the same rows."""
    with _home() as tmp:
        click.echo(json.dumps({"score": bench_score(rows, Path(tmp)), "machine": _load()}, indent=2))


@main.command("memory")
@click.option("--rows", "sizes", multiple=True, type=int, default=[1_000_000, 10_000_000], show_default=True)
def memory_command(sizes: list[int]) -> None:
    """Peak RSS of scoring each size, each in a fresh process."""
    with _home() as tmp:
        click.echo(json.dumps({"memory": bench_memory(list(sizes)), "machine": _load(), "home": tmp}, indent=2))


@main.command("all")
def all_command() -> None:
    """Everything, at the sizes the issue asks for."""
    out: dict[str, Any] = {"machine_before": _load()}
    with _home():  # first, while this process is still small (see bench_memory)
        out["memory"] = bench_memory([1_000_000, 10_000_000])
    with _home() as tmp:
        out["drift"] = bench_drift(1_000_000, 20, Path(tmp))
    with _home() as tmp:
        out["score"] = bench_score(1_000_000, Path(tmp))
    out["machine_after"] = _load()
    click.echo(json.dumps(out, indent=2))


@main.command("prepare", hidden=True)
@click.option("--rows", "sizes", multiple=True, type=int, required=True)
def prepare(sizes: list[int]) -> None:
    """Promote a champion and write the scoring inputs (run by ``memory``)."""
    folder = Path(os.environ["MLOPS_HOME"]).parent
    name = champion(folder)
    datasets = [scoring_input(rows, folder).model_dump(mode="json") for rows in sizes]
    click.echo(json.dumps({"model": name, "datasets": datasets}))


@main.command("score-child", hidden=True)
@click.option("--model", required=True)
@click.option("--dataset", required=True)
def score_child(model: str, dataset: str) -> None:
    """Score in this process and print its peak RSS (run by ``memory``)."""
    from mlops_ops import lineage
    from mlops_ops.specs import DatasetRef
    from mlops_ops.specs.monitoring import ScoreSpec
    from mlops_ops.steps import score

    data = DatasetRef.model_validate_json(dataset)
    lineage.load_model(f"models:/{model}/1")  # imports and the registry, so the baseline includes them
    before = _maxrss_mb()
    started = time.perf_counter()
    score.run(ScoreSpec(registered_model=model, dataset=data, keys=["customer_id"]), _ctx("score", "mem"), _store())
    seconds = time.perf_counter() - started
    result = {
        "rows": data.rows,
        "seconds": round(seconds, 1),
        "maxrss_before_mb": round(before),
        "maxrss_mb": round(_maxrss_mb()),
    }
    click.echo(json.dumps(result))


if __name__ == "__main__":
    main()
