"""The Python builder: a DAG with the standard chain from typed arguments, the same code the YAML loader runs.

``training_pipeline(...)``, ``retraining_pipeline(...)`` and ``scoring_pipeline(...)`` validate their
arguments with the pipeline file models (the same errors as ``pipeline lint``), then build the DAG. A
YAML file goes through :func:`build`, which calls the very same ``build_*`` function of its kind.

Every value the file gives becomes the default of a trigger-form field, and the tasks read the form
(``{{ params.X }}``), so a run can change them from the UI like ``mlops_training``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param

from mlops_ops.authoring import kinds
from mlops_ops.authoring.models import (
    INBOX_ASSETS,
    RETRAIN_REQUEST,
    Pipeline,
    RetrainingPipeline,
    ScheduleSpec,
    ScoringPipeline,
    TrainingPipeline,
)
from mlops_ops.authoring.source import PipelineFileError, Problem, dotted
from mlops_ops.pipelines import (
    force_param,
    inbox_asset,
    monitoring_params,
    policy_alias,
    retrain_request,
    training_chain,
    training_params,
)
from mlops_ops.pipelines.assets import MACROS

if TYPE_CHECKING:
    from mlops_ops.pipelines import TrainingChain


# ------------------------------------------------------------------------------------- public builders


def training_pipeline(dag_id: str, **settings: Any) -> DAG:
    """A training DAG: ingest -> validate -> train -> evaluate -> promote.

    Takes the keys of a ``kind: training`` file as keyword arguments: ``data``, ``target``, ``task``,
    ``suite``, ``estimator``, ``estimator_params``, ``gates``, ``margin``, ``registered_model``,
    ``promotion``, ``schedule``, ``owner``, ``tags``, ``runner``, ``retries``, ``params``... (see
    docs/authoring.md). A bad argument raises :class:`PipelineFileError` naming the field.
    """
    return build(_validated(TrainingPipeline, {"kind": "training", "dag_id": dag_id, **settings}))


def retraining_pipeline(dag_id: str, **settings: Any) -> DAG:
    """A retraining DAG: gate (cooldown, minimum rows, force) -> the training chain, on the triggering batch."""
    return build(_validated(RetrainingPipeline, {"kind": "retraining", "dag_id": dag_id, **settings}))


def scoring_pipeline(dag_id: str, **settings: Any) -> DAG:
    """A scoring DAG: ingest -> validate (if on) -> score -> drift, which may request a retraining."""
    return build(_validated(ScoringPipeline, {"kind": "scoring", "dag_id": dag_id, **settings}))


def build(pipeline: Pipeline) -> DAG:
    """The DAG of a validated pipeline, by its kind's builder in the registry."""
    kind = kinds.get(pipeline.kind)
    if kind is None:
        raise PipelineFileError([Problem(pipeline.dag_id, 0, 0, "kind", f"unknown kind {pipeline.kind!r}")])
    dag: DAG = kind.build(pipeline)
    return dag


def _validated(model: type[Pipeline], data: dict[str, Any]) -> Pipeline:
    from pydantic import ValidationError

    where = f"{data['kind']}_pipeline({data['dag_id']!r})"

    try:
        pipeline = model.model_validate(data)
    except ValidationError as exc:
        problems = [
            Problem(where, 0, 0, dotted(tuple(e["loc"])), str(e["msg"]).removeprefix("Value error, "))
            for e in exc.errors()
        ]
        raise PipelineFileError(problems) from None
    found = [Problem(where, 0, 0, dotted(loc), message) for loc, message in pipeline.check()]
    if found:
        raise PipelineFileError(found)
    return pipeline


# -------------------------------------------------------------------------------------------- shared


def _asset(name: str, model: str | None) -> Asset:
    if name in INBOX_ASSETS:
        return inbox_asset(name.split("/", 1)[1])
    if name == RETRAIN_REQUEST and model:
        return retrain_request(model)
    return Asset(name=name)


def schedule_of(spec: ScheduleSpec | None, model: str | None = None) -> Any:
    """What ``DAG(schedule=...)`` takes for a file's schedule: None, a cron/preset, Assets, or either."""
    if spec is None:
        return None
    assets = [_asset(name, model) for name in spec.assets]
    condition: Any = None
    for asset in assets:
        condition = asset if condition is None else condition | asset
    if spec.cron is None:
        return condition
    if spec.cron.startswith("@"):
        if condition is not None:
            raise PipelineFileError(
                [Problem("schedule", 0, 0, "cron", "combine Assets with a cron expression, not a preset")]
            )
        return spec.cron
    timetable = CronTriggerTimetable(spec.cron, timezone=spec.timezone)
    return timetable if condition is None else AssetOrTimeSchedule(timetable=timetable, assets=condition)


class Form:
    """A pipeline's trigger form: the settings it shows are read from params, the others are fixed values.

    Each form field costs every DAG parse a JSON Schema check and a copy per task, so the form shows
    what the file asks for (``form:``), not every setting.
    """

    def __init__(self, pipeline: Pipeline, catalogue: dict[str, Any], values: dict[str, Any]) -> None:
        self.pipeline, self.catalogue, self.values = pipeline, catalogue, values
        self.shown = set(pipeline.shown)

    def value(self, name: str) -> Any:
        """What a templated argument gets: ``{{ params.NAME }}`` when the form shows it, else the file's value."""
        return f"{{{{ params.{name} }}}}" if name in self.shown else self.values[name]

    def expr(self, name: str) -> str:
        """The setting as a Jinja expression, for use inside a larger template."""
        return f"params.{name}" if name in self.shown else json.dumps(self.values[name])

    def params(self) -> dict[str, Any]:
        form = {}
        for name, param in self.catalogue.items():
            if name in self.shown:
                form[name] = Param(self.values[name], description=param.description, **param.schema)
        for name, field in self.pipeline.params.items():
            form[name] = Param(field.default, description=field.description, **field.form_schema())
        return form


def _dag(pipeline: Pipeline, form: Form, doc: str) -> DAG:
    model = getattr(pipeline, "registered_model", None)
    return DAG(
        dag_id=pipeline.dag_id,
        description=pipeline.description or doc.splitlines()[0],
        schedule=schedule_of(pipeline.schedule, model),
        catchup=False,
        doc_md=pipeline.description or doc,
        tags=list(dict.fromkeys(["mlops", pipeline.kind, *pipeline.tags])),
        render_template_as_native_obj=True,
        max_active_runs=pipeline.max_active_runs,
        default_args={"retries": pipeline.retries, "owner": pipeline.owner},
        user_defined_macros=MACROS,
        params=form.params(),
    )


def _training_form(p: TrainingPipeline, extra: dict[str, Any] | None = None) -> Form:
    first = p.gates[0]
    values = {
        "data_uri": p.data,
        "target": p.target,
        "task": p.task,
        "estimator": p.estimator_path,
        "estimator_params": p.estimator_params,
        "suite": p.suite,
        "gate_metric": first.metric,
        "gate_threshold": first.value,
        "min_improvement": p.margin,
        "registered_model": p.registered_model,
        "promotion_policy": p.promotion,
        "runner": p.runner.kind,
        "force": getattr(p, "force", False),
    }
    catalogue = training_params(data_uri=p.data, registered_model=p.registered_model) | (extra or {})
    return Form(p, catalogue, values | {name: param.value for name, param in (extra or {}).items()})


def _chain(p: TrainingPipeline, form: Form, data_uri: str) -> TrainingChain:
    editable = "gate_metric" in form.shown
    chain = training_chain(
        data_uri=data_uri,
        target=form.value("target"),
        task=form.value("task"),
        estimator=form.value("estimator"),
        estimator_params=form.value("estimator_params"),
        suite=form.value("suite"),
        gate_metric=form.value("gate_metric"),
        gate_threshold=str(form.value("gate_threshold")),
        min_improvement=str(form.value("min_improvement")),
        registered_model=form.value("registered_model"),
        alias=policy_alias(form.value("promotion_policy")),
        approval=form.value("promotion_policy"),
        runner=form.value("runner"),
        force=form.value("force"),
    )
    # The form edits the first gate; the file's further gates (all of them, without a form) hold for every run.
    fixed = [str(g) for g in (p.gates[1:] if editable else p.gates)]
    chain.evaluate.gates = [*(chain.evaluate.gates if editable else []), *fixed]  # type: ignore[misc]
    for step in TrainingPipeline.steps:
        getattr(chain, step).runner_options = p.runner.for_step(step)
    return chain


# ---------------------------------------------------------------------------------------- the kinds


def build_training(p: TrainingPipeline) -> DAG:
    """The DAG of a ``training`` pipeline."""
    form = _training_form(p)
    with _dag(p, form, "Training: ingest, validate, train, evaluate, promote.") as dag:
        _chain(p, form, form.value("data_uri"))
    return dag


def build_retraining(p: RetrainingPipeline) -> DAG:
    """The DAG of a ``retraining`` pipeline: the gate, then the chain on the newest triggering batch."""
    from mlops_ops.pipelines.tasks import GateOperator

    form = _training_form(p, {
        "cooldown_hours": Param(p.cooldown_hours, type="number", minimum=0, title="Cooldown (hours)"),
        "min_rows": Param(p.min_rows, type="integer", minimum=0, title="Minimum new rows"),
        "force": force_param("Train whatever the gate would say, running every step again.", p.force),
    })  # fmt: skip
    landed = f"{{{{ landed_uri(triggering_asset_events, {form.expr('data_uri')}) }}}}"
    with _dag(p, form, "Retraining: a gate, then ingest, validate, train, evaluate, promote.") as dag:
        gate = GateOperator(
            task_id="gate",
            spec={
                "registered_model": form.value("registered_model"),
                "alias": policy_alias(form.value("promotion_policy")),
                "cooldown_hours": f"{{{{ (dag_run.conf or {{}}).get('cooldown_hours', {form.expr('cooldown_hours')}) }}}}",
                "min_rows": form.value("min_rows"),
                "force": form.value("force"),
                "data_uri": landed,
                "trigger": "{{ trigger_summary(triggering_asset_events) or dag_run.run_type }}",
            },
            runner=form.value("runner"),
            runner_options=p.runner.for_step("gate"),
            retries=0,
        )
        gate >> _chain(p, form, landed).group
    return dag


def build_scoring(p: ScoringPipeline) -> DAG:
    """The DAG of a ``scoring`` pipeline; validation is a switch in the form, or fixed by the file."""
    from airflow.providers.standard.operators.python import ShortCircuitOperator

    from mlops_ops.operators import IngestOperator, StepOperator, ValidateOperator
    from mlops_ops.pipelines.assets import validation_enabled
    from mlops_ops.pipelines.tasks import DriftOperator

    values = {
        "data_uri": p.data,
        "registered_model": p.registered_model,
        "alias": p.alias,
        "target": p.target,
        "validate": p.validate_batch,
        "suite": p.suite or "",
        "drift_share": p.drift_share,
        "runner": p.runner.kind,
    }
    form = Form(p, monitoring_params(data_uri=p.data, registered_model=p.registered_model), values)
    landed = f"{{{{ landed_uri(triggering_asset_events, {form.expr('data_uri')}) }}}}"
    watched = {"registered_model": form.value("registered_model"), "alias": form.value("alias")}
    common: dict[str, Any] = {"runner": form.value("runner")}
    with _dag(p, form, "Scoring: ingest, validate, score, drift.") as dag:
        ingest = IngestOperator(task_id="ingest", source=landed, runner_options=p.runner.for_step("ingest"), **common)
        score = StepOperator(
            task_id="score", step="score", spec={**watched, "dataset": ingest.output}, trigger_rule="none_failed",
            runner_options=p.runner.for_step("score"), **common,
        )  # fmt: skip
        DriftOperator(
            task_id="drift",
            spec={**watched, "current": ingest.output, "current_predictions": score.output,
                  "thresholds": {"drift_share": form.value("drift_share")}},
            data_uri=landed, runner_options=p.runner.for_step("drift"), **common,
        )  # fmt: skip
        if "validate" in form.shown or p.validate_batch:
            validate = ValidateOperator(
                task_id="validate", dataset=ingest.output, suite=form.value("suite"), retries=0,
                runner_options=p.runner.for_step("validate"), **common,
            )  # fmt: skip
            first = ingest
            if "validate" in form.shown:
                first = ingest >> ShortCircuitOperator(
                    task_id="validate_enabled",
                    python_callable=validation_enabled,
                    ignore_downstream_trigger_rules=False,
                )
            first >> validate >> score
    return dag
