"""
### YAML pipelines

One DAG per pipeline file in `dags/pipelines/` (or `$MLOPS_PIPELINES_DIR`: a folder, or one file).
A broken file becomes this file's import error, naming the file, line, column and field; the other
pipelines still load. `mlops-ops pipeline lint FILE...` prints the same errors; docs/authoring.md
describes the keys.
"""

from __future__ import annotations

from mlops_ops.authoring.loader import load

# "DAG" for Airflow's safe-mode file filter: this file defines its DAGs through load().
load(globals(), __file__)
