"""DAG parse time: for each file in dags/, Airflow's own DagBag parse, median of 5, airflow pre-imported.

.venv/bin/python benchmarks/parse_time.py
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


def main() -> None:
    import airflow  # noqa: F401  (the DAG processor has it imported already)
    from airflow.dag_processing.dagbag import DagBag

    for path in sorted((REPO / "dags").glob("*.py")):
        times = []
        for _ in range(5):
            # A new module name each time, so the file is really executed again (as the processor does).
            for name in [m for m in sys.modules if m.startswith("unusual_prefix_")]:
                del sys.modules[name]
            started = time.perf_counter()
            bag = DagBag(str(path))
            times.append(time.perf_counter() - started)
            assert not bag.import_errors, bag.import_errors
        print(f"{path.name:<32} median {statistics.median(times):.3f}s  runs {', '.join(f'{t:.3f}' for t in times)}")


if __name__ == "__main__":
    main()
