"""Operators of the built-in steps, and :class:`StepOperator` for any registered step. Each argument that names data or settings is templated (Jinja and params).

A step's input can be the upstream operator's output (``ingest.output``): Airflow resolves the XCom
manifest at run time and draws the dependency edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from mlops_ops.errors import SpecError
from mlops_ops.operators.base import MlopsStepOperator
from mlops_ops.steps.estimators import ALLOWED_ENV, check_allowed, deployment_allowed

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import Context
    from pydantic import BaseModel


class IngestOperator(MlopsStepOperator):
    """Snapshot a CSV or Parquet source into the artifact store and split it into train and eval.

    :param source: Local path, ``file://`` or ``s3://`` URI of the data. (templated)
    :param target: Target column, used to stratify the split. (templated)
    :param format: ``auto``, ``csv`` or ``parquet``. (templated)
    :param split: ``{"eval_fraction": 0.2, "seed": 42, "stratify": true}``. (templated)
    """

    step_name = "ingest"
    spec_fields = ("source", "target", "format", "split")
    template_fields: Sequence[str] = (*MlopsStepOperator.template_fields, *spec_fields)

    def __init__(
        self,
        *,
        source: str,
        target: str | None = None,
        format: str = "auto",
        split: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source, self.target, self.format, self.split = source, target, format, split


class ValidateOperator(MlopsStepOperator):
    """Validate the snapshot against a Great Expectations suite; a failure fails the task without retry.

    :param dataset: The ingest result (``ingest.output``) or a dataset reference. (templated)
    :param suite: Path or URI of the expectation suite (JSON). (templated)
    """

    step_name = "validate"
    spec_fields = ("dataset", "suite")
    template_fields: Sequence[str] = (*MlopsStepOperator.template_fields, *spec_fields)
    ui_color = "#dcfce7"

    def __init__(self, *, dataset: Any, suite: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dataset, self.suite = dataset, suite


class TrainOperator(MlopsStepOperator):
    """Train a scikit-learn estimator on the train partition and log it to MLflow.

    :param dataset: The ingest result (``ingest.output``); its train partition is used. (templated)
    :param target: Target column. (templated)
    :param task: ``classification`` or ``regression``. (templated)
    :param estimator: Import path of the estimator, e.g. ``sklearn.linear_model.LogisticRegression``; empty for
        the task's default (``specs.DEFAULT_ESTIMATORS``). (templated)
    :param estimator_params: Estimator parameters. (templated)
    :param features: Feature columns; default all but the target. (templated)
    :param seed: Random seed. (templated)
    :param validation: The validation result (``validate.output``), recorded for lineage. (templated)
    :param allowed_estimators: Estimators allowed besides scikit-learn's: import paths
        (``xgboost.XGBClassifier``) or module prefixes ending in ``.`` (``lightgbm.``). Set by the DAG
        author, never by a run: not templated, handed to the step as ``MLOPS_ALLOWED_ESTIMATORS``.
    """

    step_name = "train"
    spec_fields = (
        "dataset",
        "target",
        "task",
        "estimator",
        "estimator_params",
        "features",
        "seed",
        "validation",
    )
    template_fields: Sequence[str] = (*MlopsStepOperator.template_fields, *spec_fields)
    ui_color = "#fef3c7"

    def __init__(
        self,
        *,
        dataset: Any,
        target: str,
        task: str = "classification",
        estimator: str = "",
        estimator_params: dict[str, Any] | str | None = None,
        features: list[str] | None = None,
        seed: int | str = 42,
        validation: Any = None,
        allowed_estimators: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dataset, self.target, self.task, self.estimator = dataset, target, task, estimator
        self.estimator_params, self.features, self.seed = estimator_params, features, seed
        self.validation = validation
        self.allowed_estimators = tuple(allowed_estimators)

    def build_spec(self) -> dict[str, Any]:
        # force fits again: the step would otherwise reuse an identical training recorded in MLflow.
        return super().build_spec() | ({"refit": True} if self._force() else {})

    def check(self, spec: BaseModel) -> None:
        try:
            check_allowed(spec.estimator, [*deployment_allowed(), *self.allowed_estimators])  # type: ignore[attr-defined]
        except SpecError as exc:
            raise AirflowFailException(str(exc)) from None

    def step_env(self, context: Context) -> dict[str, str]:
        env = super().step_env(context)
        allowed = [*deployment_allowed(), *self.allowed_estimators]
        if allowed:
            env[ALLOWED_ENV] = ",".join(allowed)
        return env


class EvaluateOperator(MlopsStepOperator):
    """Score the candidate and the current champion on the frozen eval partition; decide by the gates.

    :param dataset: The ingest result (``ingest.output``); its eval partition is used. (templated)
    :param candidate: The train result (``train.output``). (templated)
    :param registered_model: Registered model whose champion is compared. (templated)
    :param gates: Absolute thresholds such as ``"roc_auc >= 0.8"``. (templated)
    :param compare_metric: Metric compared with the champion. (templated)
    :param min_improvement: Margin by which the candidate must beat the champion. (templated)
    """

    step_name = "evaluate"
    spec_fields = ("dataset", "candidate", "registered_model", "gates", "compare_metric", "min_improvement")
    template_fields: Sequence[str] = (*MlopsStepOperator.template_fields, *spec_fields)
    ui_color = "#ede9fe"

    def __init__(
        self,
        *,
        dataset: Any,
        candidate: Any,
        registered_model: str,
        gates: list[str] | None = None,
        compare_metric: str | None = None,
        min_improvement: float | str = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dataset, self.candidate, self.registered_model = dataset, candidate, registered_model
        self.gates, self.compare_metric, self.min_improvement = gates, compare_metric, min_improvement


class PromoteOperator(MlopsStepOperator):
    """Register a candidate that passed evaluation and move an alias to it; skipped when it did not pass.

    :param evaluation: The evaluate result (``evaluate.output``). (templated)
    :param registered_model: Registered model name. (templated)
    :param alias: Alias to move: ``champion``, or ``challenger`` for a later approval. (templated)
    :param reason: Reason recorded on the version. (templated)
    """

    step_name = "promote"
    spec_fields = ("evaluation", "registered_model", "alias", "reason")
    template_fields: Sequence[str] = (*MlopsStepOperator.template_fields, *spec_fields)
    ui_color = "#fee2e2"

    def __init__(
        self, *, evaluation: Any, registered_model: str, alias: str = "champion", reason: str = "", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.evaluation, self.registered_model, self.alias, self.reason = evaluation, registered_model, alias, reason

    def check(self, spec: BaseModel) -> None:
        evaluation = spec.evaluation  # type: ignore[attr-defined]
        if not evaluation.passed:
            raise AirflowSkipException(
                "candidate rejected by evaluation, nothing promoted: " + "; ".join(evaluation.reasons)
            )


class StepOperator(MlopsStepOperator):
    """Any registered step (built in, or a user's declared with ``mlops_ops.steps.registry.step``).

    :param step: The step's registered name. Not templated: the DAG author picks the step, never a run.
    :param spec: The step's spec; values may be upstream outputs (``other.output``). (templated)
    """

    template_fields: Sequence[str] = (*MlopsStepOperator.template_fields, "spec")

    def __init__(self, *, step: str, spec: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step_name, self.spec = step, spec

    def render_template_fields(self, context: Context, jinja_env: jinja2.Environment | None = None) -> None:
        env = jinja_env or self.get_template_env()
        self._do_render_template_fields(self, [f for f in self.template_fields if f != "spec"], context, env, set())
        if not isinstance(self.spec, dict):
            return
        text = self.text_fields()
        rendered = {}
        for key, value in self.spec.items():
            if key in text:
                with self.rendering_text():
                    rendered[key] = self.render_template(value, context, env)
            else:
                rendered[key] = self.render_template(value, context, env)
        self.spec = rendered

    def build_spec(self) -> dict[str, Any]:
        if not isinstance(self.spec, dict):
            raise AirflowFailException(f"the spec of step {self.step_name!r} must be a mapping")
        return {name: value for name, value in self.spec.items() if value is not None}
