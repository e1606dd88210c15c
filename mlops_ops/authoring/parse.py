"""From pipeline files to validated pipelines: one file, or a folder of them with DAG ids unique across files.

Relative paths in a file (``data``, ``suite``) are resolved against the file's folder, so a pipeline and
its data or suite can move together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from mlops_ops.authoring import kinds
from mlops_ops.authoring.models import FormParam, Pipeline, RunnerSpec, ScheduleSpec
from mlops_ops.authoring.source import Document, Loc, PipelineFileError, Problem, from_validation, read

#: Deployment setting: the folder of pipeline files (or one file) the loader DAG file reads.
PIPELINES_ENV = "MLOPS_PIPELINES_DIR"
SUFFIXES = (".yaml", ".yml")
#: What ``suite`` may say instead of a path: the suite ``pipeline init`` or ``run`` infers beside the file.
INFER = "infer"
_NAMED = {("runner", "steps"), ("params",)}


@dataclass
class Parsed:
    """A valid pipeline file: the model and where it came from."""

    path: Path
    display: str
    pipeline: Pipeline
    doc: Document


def _fields(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _known_keys(model: type[Pipeline], data: dict[str, Any]) -> dict[Loc, list[str]]:
    known: dict[Loc, list[str]] = {
        (): _fields(model),
        ("schedule",): _fields(ScheduleSpec),
        ("runner",): _fields(RunnerSpec),
    }
    for name in data.get("params") or {} if isinstance(data.get("params"), dict) else {}:
        known[("params", name)] = _fields(FormParam)
    return known


def suite_beside(path: Path) -> Path:
    """Where an inferred suite of the pipeline file ``path`` is kept: ``NAME.suite.json`` beside it."""
    return path.with_name(f"{path.stem}.suite.json")


def _resolved(value: str, base: Path) -> str:
    if "://" in value or "{{" in value or Path(value).is_absolute():
        return value
    return str((base / value).resolve())


def parse_file(path: str | Path, display: str | None = None) -> Parsed:
    """Read and validate one pipeline file; a PipelineFileError listing every problem found."""
    path = Path(path)
    doc = read(path, display or str(path))
    kind_name = doc.data.get("kind")
    kind = kinds.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        expected = ", ".join(kinds.names())
        where: Loc = ("kind",) if "kind" in doc.data else ()
        message = (
            f"unknown kind {kind_name!r}; expected one of {expected}"
            if where
            else f"missing required key 'kind' ({expected})"
        )
        raise PipelineFileError([doc.problem(where, message, key=not where)])
    try:
        pipeline = kind.model.model_validate(doc.data)
    except ValidationError as exc:
        raise PipelineFileError(from_validation(doc, exc.errors(), _known_keys(kind.model, doc.data))) from None
    # A problem with a name (a step in runner.steps, a form field in params) points at the name.
    problems = [doc.problem(loc, message, key=loc[:-1] in _NAMED) for loc, message in pipeline.check()]
    if problems:
        raise PipelineFileError(problems)
    base = path.absolute().parent
    updates: dict[str, Any] = {"data": _resolved(pipeline.data, base)} if hasattr(pipeline, "data") else {}
    suite = getattr(pipeline, "suite", None)
    if suite:
        updates["suite"] = str(suite_beside(path.absolute())) if suite == INFER else _resolved(suite, base)
    return Parsed(path, doc.file, pipeline.model_copy(update=updates), doc)


def discover(location: str | Path) -> list[Path]:
    """The pipeline files of a folder (sorted, not recursive), or the one file ``location`` names."""
    location = Path(location)
    if location.is_file():
        return [location]
    if not location.is_dir():
        return []
    return sorted(p for p in location.iterdir() if p.suffix.lower() in SUFFIXES and not p.name.startswith("."))


def default_location(loader_dir: Path) -> Path:
    """``$MLOPS_PIPELINES_DIR``, else ``pipelines/`` beside the loader DAG file."""
    configured = os.environ.get(PIPELINES_ENV)
    return Path(configured) if configured else loader_dir / "pipelines"


def parse_many(paths: list[Path], root: Path | None = None) -> tuple[list[Parsed], dict[Path, list[Problem]]]:
    """Parse every file; a DAG id used twice is an error of each later file. Files shown relative to ``root``."""
    good: list[Parsed] = []
    bad: dict[Path, list[Problem]] = {}
    seen: dict[str, Parsed] = {}
    for path in paths:
        display = _display(path, root)
        try:
            parsed = parse_file(path, display)
        except PipelineFileError as exc:
            bad[path] = exc.problems
            continue
        first = seen.get(parsed.pipeline.dag_id)
        if first is not None:
            line, col = first.doc.position(("dag_id",))
            bad[path] = [
                parsed.doc.problem(
                    ("dag_id",),
                    f"DAG id {parsed.pipeline.dag_id!r} is already defined in {first.display}:{line}:{col}; DAG ids must be unique",
                )
            ]
            continue
        seen[parsed.pipeline.dag_id] = parsed
        good.append(parsed)
    return good, bad


def _display(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.absolute().relative_to(root.absolute()))
        except ValueError:
            pass
    return str(path)
