"""The pipeline file models (pydantic v2, no Airflow, nothing heavy): one model per pipeline kind.

A file is validated in two passes: the model (keys, types, cron, gate syntax) and :meth:`Pipeline.check`
(what needs several fields at once: a gate's metric against the task, the estimator against the task,
the per-step runner options against the kind's steps). Both report the field path, so an error points
at the line that is wrong.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlops_ops.authoring import estimators
from mlops_ops.specs import DEFAULT_ESTIMATORS, METRICS, Gate, TaskType

Loc = tuple[str | int, ...]

PRESETS = ("@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")
_NAME = r"^[A-Za-z0-9_.-]+$"
_ALIAS = r"^[A-Za-z_][A-Za-z0-9_-]*$"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Asset references a schedule may name besides any other Asset name.
INBOX_ASSETS = ("inbox/batches", "inbox/labelled")
RETRAIN_REQUEST = "retrain-request"


class Strict(BaseModel):
    """Unknown keys are refused, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


def check_cron(expression: str) -> str | None:
    """Why ``expression`` is not a schedule Airflow accepts (a preset or a 5-field cron), or None."""
    if expression in PRESETS:
        return None
    if expression.startswith("@"):
        return f"{expression!r} is not a schedule preset; expected one of {', '.join(PRESETS)} or a cron expression"
    fields = expression.split()
    if len(fields) != 5:
        return f"{expression!r} is not a cron expression: expected 5 fields (minute hour day month weekday), got {len(fields)}"
    try:
        from croniter import croniter
    except ImportError:  # the step image has no Airflow, hence no croniter: the field count is all we check
        return None
    if not croniter.is_valid(expression):
        return f"{expression!r} is not a valid cron expression (minute hour day month weekday)"
    return None


class ScheduleSpec(Strict):
    """When the DAG runs: a cron expression or preset, Assets, or both (whichever comes first)."""

    cron: str | None = Field(default=None, description="Cron expression or preset such as '@daily'.")
    timezone: str = Field(default="UTC", description="Time zone of the cron expression.")
    assets: list[str] = Field(
        default_factory=list,
        description="Assets that trigger a run: 'inbox/batches', 'inbox/labelled', 'retrain-request' "
        "(this pipeline's model), or any other Asset name.",
    )

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and (problem := check_cron(value)):
            raise ValueError(problem)
        return value

    @field_validator("assets")
    @classmethod
    def _assets(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name.strip() or len(name) > 1500:
                raise ValueError(f"asset {name[:50]!r} must be a non-empty name of at most 1500 characters")
        return value


class RunnerSpec(Strict):
    """Where steps run, with the runner's options, and options per step (e.g. the train pod's resources)."""

    kind: Literal["local", "kubernetes"] = "local"
    options: dict[str, Any] = Field(default_factory=dict, description="Runner options for every step.")
    steps: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Runner options per step, merged over 'options'."
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    def for_step(self, step: str) -> dict[str, Any] | None:
        merged = {**self.options, **self.steps.get(step, {})}
        return merged or None


class FormParam(Strict):
    """An extra field of the trigger form, usable in templated values as ``{{ params.NAME }}``."""

    default: Any = None
    type: Literal["string", "number", "integer", "boolean", "object", "array"] | None = None
    title: str | None = None
    description: str | None = None
    enum: list[Any] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def form_schema(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump(exclude={"default", "description"}).items() if v is not None}


class Pipeline(Strict):
    """What every kind of pipeline file has: identity, schedule, ownership, runner, retries, form."""

    kind: str
    #: The steps of this kind, which per-step runner options may name.
    steps: ClassVar[tuple[str, ...]] = ()
    #: The file's keys the trigger form can show, each with the form fields (DAG params) it becomes.
    form_keys: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: What the form shows when the file does not say.
    default_form: ClassVar[tuple[str, ...]] = ()

    dag_id: str = Field(pattern=_NAME, max_length=200, description="The DAG's id, unique across pipeline files.")
    description: str = Field(default="", max_length=2000)
    schedule: ScheduleSpec | None = Field(default=None, description="A cron string or preset, or a mapping.")
    owner: str = Field(default="airflow", min_length=1)
    tags: list[str] = Field(default_factory=list)
    runner: RunnerSpec = Field(default_factory=RunnerSpec)
    retries: int = Field(default=1, ge=0, le=10, description="Retries of each step (infrastructure failures).")
    max_active_runs: int = Field(default=4, ge=1, le=64)
    form: list[str] | None = Field(
        default=None,
        description="Keys of this file the trigger form shows, with this file's values as defaults; the others "
        "are fixed. Default per kind (training: data, gates, promotion).",
    )
    params: dict[str, FormParam] = Field(default_factory=dict, description="Extra fields of the trigger form.")

    @property
    def shown(self) -> tuple[str, ...]:
        """The form fields (DAG params) the trigger form shows."""
        keys = self.default_form if self.form is None else self.form
        return tuple(name for key in keys for name in self.form_keys.get(key, ()))

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule(cls, value: Any) -> Any:
        if isinstance(value, str):
            if problem := check_cron(value.strip()):
                raise ValueError(problem)
            return {"cron": value.strip()}
        return value

    def check(self) -> list[tuple[Loc, str]]:
        """Problems that involve several fields; each with its field path."""
        found: list[tuple[Loc, str]] = []
        for step in self.runner.steps:
            if step not in self.steps:
                found.append(
                    (
                        ("runner", "steps", step),
                        f"no step {step!r} in a {self.kind} pipeline; its steps: {', '.join(self.steps)}",
                    )
                )
        for i, key in enumerate(self.form or []):
            if key not in self.form_keys:
                found.append(
                    (("form", i), f"{key!r} cannot be in the form; expected one of {', '.join(self.form_keys)}")
                )
        taken = {name for names in self.form_keys.values() for name in names}
        for name in self.params:
            if not _IDENT.match(name):
                found.append((("params", name), f"param name {name!r} must be letters, digits and '_'"))
            elif name in taken:
                found.append((("params", name), f"{name!r} is already a field of the form; pick another name"))
        return found


def _gate_problems(task: str, gates: list[Gate], at: str) -> list[tuple[Loc, str]]:
    known = METRICS[task]
    found: list[tuple[Loc, str]] = []
    for i, gate in enumerate(gates):
        if gate.metric not in known:
            found.append(
                ((at, i), f"metric {gate.metric!r} is not computed for {task}; expected one of {', '.join(known)}")
            )
            continue
        higher = known[gate.metric]
        if higher != (gate.op in (">=", ">")):
            better = "higher" if higher else "lower"
            op = ">=" if higher else "<="
            found.append(
                (
                    (at, i),
                    f"a {better} {gate.metric} is better, so its gate is '{gate.metric} {op} {gate.value:g}', not '{gate}'",
                )
            )
    return found


class TrainingPipeline(Pipeline):
    """ingest -> validate -> train -> evaluate -> promote, on a schedule, on Assets or by hand."""

    kind: Literal["training"] = "training"
    steps: ClassVar[tuple[str, ...]] = ("ingest", "validate", "train", "evaluate", "promote")
    form_keys: ClassVar[dict[str, tuple[str, ...]]] = {
        "data": ("data_uri",), "target": ("target",), "task": ("task",), "estimator": ("estimator",),
        "estimator_params": ("estimator_params",), "suite": ("suite",), "gates": ("gate_metric", "gate_threshold"),
        "margin": ("min_improvement",), "registered_model": ("registered_model",), "promotion": ("promotion_policy",),
        "runner": ("runner",),
    }  # fmt: skip
    default_form: ClassVar[tuple[str, ...]] = ("data", "gates", "promotion")

    data: str = Field(min_length=1, description="CSV or Parquet: a path (relative to this file), file:// or s3://.")
    target: str = Field(min_length=1, description="The target column.")
    task: TaskType = "classification"
    suite: str = Field(min_length=1, description="Expectation suite (JSON), relative to this file; or 'infer'.")
    estimator: str | None = Field(default=None, description="Import path; default per task.")
    estimator_params: dict[str, Any] = Field(default_factory=dict)
    gates: list[Gate] = Field(min_length=1, description="Absolute thresholds such as 'roc_auc >= 0.8'.")
    margin: float = Field(default=0.0, ge=0, description="How much the candidate must beat the champion by.")
    registered_model: str = Field(pattern=_NAME, max_length=200)
    promotion: Literal["champion", "challenger", "approval"] = "champion"

    @field_validator("gates", mode="before")
    @classmethod
    def _one_gate(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @property
    def estimator_path(self) -> str:
        return self.estimator or DEFAULT_ESTIMATORS[self.task]

    def check(self) -> list[tuple[Loc, str]]:
        found = super().check()
        found += _gate_problems(self.task, self.gates, "gates")
        if self.estimator is not None:
            from mlops_ops.steps.estimators import check_allowed

            try:
                check_allowed(self.estimator)
            except ValueError as exc:
                found.append((("estimator",), str(exc)))
            else:
                if problem := estimators.problem(self.estimator, self.task):
                    found.append((("estimator",), problem))
        return found


class RetrainingPipeline(TrainingPipeline):
    """A gate (cooldown, new rows, force) and then the training chain; data from the triggering event."""

    kind: Literal["retraining"] = "retraining"  # type: ignore[assignment]
    steps: ClassVar[tuple[str, ...]] = ("gate", *TrainingPipeline.steps)
    form_keys: ClassVar[dict[str, tuple[str, ...]]] = {
        **TrainingPipeline.form_keys, "cooldown_hours": ("cooldown_hours",), "min_rows": ("min_rows",), "force": ("force",),
    }  # fmt: skip
    default_form: ClassVar[tuple[str, ...]] = ("data", "gates", "force")

    cooldown_hours: float = Field(default=6.0, ge=0, description="No training this soon after the last one.")
    min_rows: int = Field(default=0, ge=0, description="Rows a new batch must hold; 0: no minimum.")
    force: bool = Field(default=False, description="Train whatever the gate says (usually ticked in the form).")


class ScoringPipeline(Pipeline):
    """ingest -> (validate) -> score -> drift; drift asks for retraining through an Asset event."""

    kind: Literal["scoring"] = "scoring"
    steps: ClassVar[tuple[str, ...]] = ("ingest", "validate", "score", "drift")
    form_keys: ClassVar[dict[str, tuple[str, ...]]] = {
        "data": ("data_uri",), "registered_model": ("registered_model",), "alias": ("alias",), "target": ("target",),
        "validate": ("validate",), "suite": ("suite",), "drift_share": ("drift_share",), "runner": ("runner",),
    }  # fmt: skip
    default_form: ClassVar[tuple[str, ...]] = ("data", "drift_share")

    data: str = Field(min_length=1, description="Batch scored when no landed batch triggered the run.")
    registered_model: str = Field(pattern=_NAME, max_length=200)
    alias: str = Field(default="champion", pattern=_ALIAS)
    target: str = Field(default="", description="Left out of scoring and drift when the batch has it.")
    validate_batch: bool = Field(default=False, alias="validate", description="Run the suite before scoring.")
    suite: str | None = Field(default=None, description="Expectation suite, needed when validate is true.")
    drift_share: float = Field(default=0.5, gt=0, le=1)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def check(self) -> list[tuple[Loc, str]]:
        found = super().check()
        if self.validate_batch and not self.suite:
            found.append((("validate",), "validate is true but no suite is given; add 'suite: path.json'"))
        return found
