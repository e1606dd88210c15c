"""Every DAG file imports cleanly in Airflow's DagBag and loads no heavy library at parse time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

HEAVY = (
    "sklearn",
    "pandas",
    "numpy",
    "mlflow",
    "great_expectations",
    "kubernetes",
    "boto3",
    "pyarrow",
    "matplotlib",
    "kubernetes_asyncio",
)
DAG_FILES = sorted((REPO / "dags").glob("*.py"))

PROBE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("probe_dag", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(json.dumps(sorted(m for m in sys.argv[2:] if m in sys.modules)))
"""


def test_there_are_dags() -> None:
    assert [p.name for p in DAG_FILES if p.name == "mlops_training.py"]


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dagbag_has_no_import_errors(path: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(path))
    assert bag.import_errors == {}
    assert bag.dags, f"{path.name} defines no DAG"


@pytest.mark.parametrize("target", [*DAG_FILES, REPO / "mlops_ops" / "operators" / "__init__.py"], ids=lambda p: p.name)
def test_parse_loads_no_heavy_library(target: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(target), *HEAVY], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_provider_is_registered() -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "providers", "list", "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    start = done.stdout.index("[")
    names = {p["package_name"] for p in json.loads(done.stdout[start:])}
    assert "mlops-ops" in names
