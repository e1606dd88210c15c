"""DAG parse time: for each file in dags/, Airflow's own DagBag parse, median of 5, airflow pre-imported.

Then the YAML loader (dags/yaml_pipelines.py) over 50 pipeline files, one DAG each, the budget being 1 s.

.venv/bin/python benchmarks/parse_time.py [--pipelines 50]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="parse-bench-"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"


def parse(path: Path, label: str, dags: int | None = None) -> None:
    from airflow.dag_processing.dagbag import DagBag

    times = []
    for _ in range(5):
        # A new module name each time, so the file is really executed again (as the processor does).
        for name in [m for m in sys.modules if m.startswith("unusual_prefix_")]:
            del sys.modules[name]
        started = time.perf_counter()
        bag = DagBag(str(path))
        times.append(time.perf_counter() - started)
        assert not bag.import_errors, bag.import_errors
        assert dags is None or len(bag.dags) == dags, len(bag.dags)
    print(f"{label:<32} median {statistics.median(times):.3f}s  runs {', '.join(f'{t:.3f}' for t in times)}")


def pipeline_files(folder: Path, count: int) -> None:
    """``count`` pipeline files: the three example kinds in turn, each with its own DAG id."""
    examples = sorted((REPO / "dags" / "pipelines").glob("*.yaml"))
    for i in range(count):
        source = examples[i % len(examples)]
        text = source.read_text().replace("../../mlops_ops", str(REPO / "mlops_ops"))
        text = text.replace("dag_id: churn_yaml_", f"dag_id: bench_{i:03d}_").replace("churn-yaml", f"bench-{i:03d}")
        (folder / f"p{i:03d}.yaml").write_text(text)


def main() -> None:
    import airflow  # noqa: F401  (the DAG processor has it imported already)

    count = int(sys.argv[sys.argv.index("--pipelines") + 1]) if "--pipelines" in sys.argv else 50
    for path in sorted((REPO / "dags").glob("*.py")):
        parse(path, path.name)
    with tempfile.TemporaryDirectory(prefix="parse-bench-pipelines-") as folder:
        pipeline_files(Path(folder), count)
        os.environ["MLOPS_PIPELINES_DIR"] = folder
        parse(REPO / "dags" / "yaml_pipelines.py", f"yaml_pipelines.py ({count} files)", dags=count)


if __name__ == "__main__":
    main()
