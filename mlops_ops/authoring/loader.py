"""What the loader DAG file runs: one DAG per valid pipeline file; broken files become an import error.

Airflow's DagBag records an exception raised while it validates one DAG of a file as that file's import
error, and still loads the file's other DAGs (``DagBag.process_file``). The loader uses that: every
valid pipeline file becomes its DAG, and when some files are broken, one more object,
:class:`BrokenPipelines`, fails its validation with the problems of the broken files only, one line
each (``pipelines/x.yaml:3:11: schedule: ...``). No traceback, no pydantic dump; the other pipelines load.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from airflow.sdk import DAG

from mlops_ops.authoring.builder import build
from mlops_ops.authoring.parse import default_location, discover, parse_many
from mlops_ops.authoring.source import PipelineFileError, Problem

log = logging.getLogger(__name__)
BROKEN_DAG_ID = "mlops_broken_pipeline_files"


class BrokenPipelines(DAG):
    """A stand-in that never loads: its validation raises the broken files' problems, one line per file."""

    problems: list[Problem]

    def validate(self) -> None:
        raise InvalidPipelineFile(self.problems)


def summary(bad: dict[Path, list[Problem]]) -> list[Problem]:
    """The first problem of each broken file (a file's further problems: ``pipeline lint``)."""
    return [problems[0] for problems in bad.values()]


def message(problems: list[Problem]) -> str:
    return "\n".join(str(p) for p in problems)


class InvalidPipelineFile(PipelineFileError):
    """Pipeline files could not be loaded; one line each: ``file:line:col: field: what was expected``."""

    def __str__(self) -> str:
        return message(self.problems)


def load(namespace: dict[str, Any], loader_file: str, location: str | Path | None = None) -> list[DAG]:
    """Build the DAG of every pipeline file into ``namespace`` (a DAG file's ``globals()``).

    :param namespace: Where the DAGs go, so Airflow finds them as the module's globals.
    :param loader_file: The loader DAG file (``__file__``); files are shown relative to its folder and
        ``pipelines/`` beside it is the default location.
    :param location: The folder of pipeline files, or one file; default ``$MLOPS_PIPELINES_DIR``.
    """
    root = Path(loader_file).absolute().parent
    paths = discover(location if location is not None else default_location(root))
    good, bad = parse_many(paths, root=root)
    dags = []
    for parsed in good:
        try:
            dag = build(parsed.pipeline)
        except PipelineFileError as exc:
            bad[parsed.path] = [Problem(parsed.display, p.line, p.column, p.path, p.message) for p in exc.problems]
            continue
        except Exception as exc:  # a builder's bug must not take the other pipelines down
            log.exception("building %s failed", parsed.display)
            bad[parsed.path] = [
                Problem(parsed.display, 1, 1, "", f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
            ]
            continue
        namespace[f"pipeline__{parsed.pipeline.dag_id}"] = dag
        dags.append(dag)
    if bad:
        stand_in = BrokenPipelines(dag_id=BROKEN_DAG_ID, schedule=None)
        stand_in.problems = summary(bad)
        namespace["broken_pipeline_files"] = stand_in
        for problem in stand_in.problems:
            log.error("pipeline file not loaded: %s", problem)
    return dags
