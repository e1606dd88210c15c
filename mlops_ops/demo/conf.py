"""What ``mlops-ops demo`` runs on: the demo batches or the user's own file, and ``--conf`` checked before Airflow starts.

The conf is checked against the DAG's real trigger form; a local CSV's header or Parquet file's schema is
checked for the target; a table that is not the demo's gets a model name and a suite of its own. Light at
import (click and the standard library), like :mod:`mlops_ops.demo.command`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from mlops_ops.errors import MlopsError

DAG_ID = "mlops_training"
BATCHES = {"base": "churn.csv", "drift": "churn_drift.csv", "corrupt": "churn_corrupt.csv"}
#: Form fields that name local files a step reads; their folders join the data roots for the run.
FILE_FIELDS = ("data_uri", "suite")


def form_fields(dags_folder: Path) -> dict[str, Any]:
    from mlops_ops.demo.embedded import airflow_env, cache_folder
    from mlops_ops.demo.params import load_fields

    # The form is read once per DAG file and Airflow version, for every home (the key says which).
    return load_fields(dags_folder / f"{DAG_ID}.py", DAG_ID, airflow_env(dags_folder), cache_folder())


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
    fields = form_fields(dags_folder)
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
    """Refuse a local CSV or Parquet file that lacks the target column, naming the columns it has."""
    import difflib

    from mlops_ops.demo.embedded import local_path
    from mlops_ops.errors import SpecError

    path = local_path(str(conf["data_uri"]))
    if path is None or not path.is_file():
        return
    header = columns_of(path)
    if header is None:
        return
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
    """The column names of a local CSV (its header) or Parquet file (its schema), as ingest reads them.

    None for other files, and for a Parquet file whose schema cannot be read: ingest says why.
    """
    if path.suffix.lower() == ".csv":
        return csv_header(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except (pa.ArrowInvalid, OSError):
            return None
    return None


def csv_header(path: Path) -> list[str]:
    """The first row of a local CSV file, split on the delimiter ingest uses and without a byte order mark."""
    import csv

    from mlops_ops.steps.ingest import csv_delimiter

    # utf-8-sig: Arrow drops a UTF-8 byte order mark, so the first column's name must not keep it here.
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        return next(csv.reader(handle, delimiter=csv_delimiter(path)), [])


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
            raise child_error(done.stderr, "suite infer failed")
    click.echo(f"Validating with the suite inferred from your data: {shown(out)} (review it; pass it as suite)")
    return conf | {"suite": str(out)}


def child_error(stderr: str, fallback: str) -> MlopsError:
    """The error a failed ``mlops-ops`` process printed last on stderr, as that kind of error of ours.

    The line reads ``mlops-ops: error: KIND: MESSAGE``: the message alone becomes the new error's text,
    so the demo prints the kind once. A kind that is not one of ours becomes a DataError quoting the line.
    """
    from mlops_ops import errors

    line = (stderr.strip().splitlines() or [fallback])[-1].removeprefix(errors.ERROR_PREFIX)
    kind, _, message = line.partition(": ")
    found = getattr(errors, kind, None) if kind.isidentifier() else None
    if isinstance(found, type) and issubclass(found, errors.MlopsError) and message:
        return found(message)
    return errors.DataError(line)


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
