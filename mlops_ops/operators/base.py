"""The base of the step operators: render a spec, validate it, hand it to a runner, return the manifest.

Operators are declarative: ``__init__`` records arguments and nothing else, and this module imports
nothing heavy, because Airflow imports it every time it parses a DAG file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from mlops_ops.context import REUSED_XCOM, RunContext
from mlops_ops.errors import DataError, PromotionRejected, SpecError, ValidationFailed
from mlops_ops.operators.links import STEP_LINKS
from mlops_ops.runners import Runner, StepFailed, StepInvocation, get_runner
from mlops_ops.settings import artifact_root
from mlops_ops.steps.registry import get as get_step
from mlops_ops.steps.registry import parse_spec

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import Context
    from pydantic import BaseModel

    from mlops_ops.connections import StepEnvironment

#: Exit codes of user mistakes: retrying cannot help, so the task fails at once.
_FINAL = {SpecError.exit_code, DataError.exit_code, ValidationFailed.exit_code}
_TEXT: tuple[Any, ...] = (str, str | None)
_COMMON_FIELDS = ("runner", "artifact_root", "tracking_uri", "pipeline", "mlflow_conn_id", "s3_conn_id")


class MlopsStepOperator(BaseOperator):
    """Runs one mlops-ops step through a runner and pushes its result manifest to XCom.

    :param runner: ``local`` (a child process) or ``kubernetes`` (a pod). (templated)
    :param runner_options: Settings for the runner, e.g. pod resources for ``kubernetes``. (templated)
    :param artifact_root: Artifact store root URI; default ``$MLOPS_ARTIFACT_ROOT`` or the embedded folder. (templated)
    :param tracking_uri: MLflow tracking URI; default ``$MLFLOW_TRACKING_URI`` or the embedded database. (templated)
    :param pipeline: Pipeline id used for lineage; default the DAG id. (templated)
    :param mlflow_conn_id: Airflow connection of the MLflow server (tracking URI, user and password or token);
        the default ``mlflow_default`` is used only if it exists; None to use the environment. (templated)
    :param s3_conn_id: Airflow connection of the S3 endpoint (type ``aws``: keys, ``endpoint_url`` and
        ``region_name`` in extra); the default ``s3_default`` is used only if it exists. (templated)
    :param force: Run the step even when an identical earlier run's result could be reused
        (ingest, validate and train on the local runner; see ``mlops_ops.cache``). (templated)
    """

    step_name: str
    spec_fields: ClassVar[Sequence[str]] = ()
    template_fields: Sequence[str] = (*_COMMON_FIELDS, "runner_options", "force")
    ui_color = "#dbeafe"
    operator_extra_links = STEP_LINKS  # buttons to the run, version and reports the step made

    def __init__(
        self,
        *,
        runner: str = "local",
        runner_options: dict[str, Any] | None = None,
        artifact_root: str | None = None,
        tracking_uri: str | None = None,
        pipeline: str | None = None,
        mlflow_conn_id: str | None = "mlflow_default",
        s3_conn_id: str | None = "s3_default",
        force: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.runner = runner
        self.runner_options = runner_options
        self.artifact_root = artifact_root
        self.tracking_uri = tracking_uri
        self.pipeline = pipeline
        self.mlflow_conn_id = mlflow_conn_id
        self.s3_conn_id = s3_conn_id
        self.force = force

    # ----------------------------------------------------------------------------------------- spec

    def build_spec(self) -> dict[str, Any]:
        """The rendered spec fields, dropping the ones left unset."""
        # Rendered values are taken as they are: a DAG that passes objects through templates renders them
        # natively (render_template_as_native_obj=True); the spec model converts or refuses each field.
        values = {name: getattr(self, name) for name in self.spec_fields}
        return {name: value for name, value in values.items() if value is not None}

    # ------------------------------------------------------------------------------------ rendering

    def text_fields(self) -> set[str]:
        """Spec fields typed as text: they render as strings even when the DAG renders natively, so a
        ``reason`` of ``"[1, 2]"`` stays that string instead of becoming a list."""
        model = get_step(self.step_name).spec
        return {name for name, info in model.model_fields.items() if info.annotation in _TEXT}

    def render_template_fields(self, context: Context, jinja_env: jinja2.Environment | None = None) -> None:
        env = jinja_env or self.get_template_env()
        text = self.text_fields() & set(self.template_fields)
        self._do_render_template_fields(self, [f for f in self.template_fields if f not in text], context, env, set())
        with self.rendering_text():
            self._do_render_template_fields(self, sorted(text), context, env, set())

    @contextlib.contextmanager
    def rendering_text(self) -> Iterator[None]:
        """Render as strings inside the block, whatever the DAG's ``render_template_as_native_obj``."""
        saved = getattr(self, "render_template_as_native_obj", None)
        self.render_template_as_native_obj = False
        try:
            yield
        finally:
            self.render_template_as_native_obj = saved

    def check(self, spec: BaseModel) -> None:
        """Last check before the step runs; subclasses may skip or fail the task here."""

    def step_env(self, context: Context) -> dict[str, str]:
        """Non-secret environment of the step process or pod."""
        env = {
            "AIRFLOW_CTX_DAG_ID": self.dag_id,
            "AIRFLOW_CTX_TASK_ID": self.task_id,
            "AIRFLOW_CTX_DAG_RUN_ID": str(context["run_id"]),
        }
        env |= self._connections().env
        if self.artifact_root:
            env["MLOPS_ARTIFACT_ROOT"] = self.artifact_root
        if self.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = self.tracking_uri
        return env

    def secret_env(self, context: Context) -> dict[str, str]:
        """Credentials for the step; handed to pods through a Kubernetes Secret, never in the spec."""
        secrets = dict(self._connections().secrets)
        if self.tracking_uri:
            secrets.pop("MLFLOW_TRACKING_URI", None)
        return secrets

    def _connections(self) -> StepEnvironment:
        """The environment the MLflow and S3 connections give, read once per task try (masked in logs)."""
        found: StepEnvironment | None = getattr(self, "_connection_env", None)
        if found is None:
            from mlops_ops.connections import step_environment

            try:
                found = step_environment(self.mlflow_conn_id, self.s3_conn_id)
            except SpecError as exc:
                raise AirflowFailException(str(exc)) from None
            self._connection_env = found
        return found

    def _force(self) -> bool:
        if isinstance(self.force, bool):
            return self.force
        # A DAG that renders templates as text gives "True" or "False".
        if isinstance(self.force, str) and self.force.strip().lower() in ("true", "false"):
            return self.force.strip().lower() == "true"
        raise AirflowFailException(f"force must be true or false, not {self.force!r}")

    def _runner_options(self) -> dict[str, Any]:
        options = self.runner_options or {}
        if not isinstance(options, dict):
            raise AirflowFailException(
                f"runner_options must be a mapping, not {type(options).__name__}; "
                "render templates natively (render_template_as_native_obj=True) or pass a dict"
            )
        return options

    # -------------------------------------------------------------------------------------- execute

    def invocation(self, context: Context) -> StepInvocation:
        """The validated step invocation this task would run."""
        try:
            spec = parse_spec(self.step_name, self.build_spec())
        except SpecError as exc:
            raise AirflowFailException(str(exc)) from None
        self.check(spec)
        ti = context["ti"]
        ctx = RunContext(
            pipeline=self.pipeline or self.dag_id,
            run_id=str(context["run_id"]),
            step=self.task_id,
            try_number=max(int(ti.try_number or 1), 1),
        )
        root = (self.artifact_root or artifact_root()).rstrip("/")
        return StepInvocation(
            step=self.step_name,
            spec=spec.model_dump(mode="json"),
            ctx=ctx,
            env=self.step_env(context),
            secret_env=self.secret_env(context),
            result_uri=f"{root}/{ctx.result_key()}",
        )

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_ops import cache

        invocation = self.invocation(context)
        runner = get_runner(self.runner, **self._runner_options())
        root = (self.artifact_root or artifact_root()).rstrip("/")
        found = cache.lookup(invocation, root, runner, force=self._force(), say=self.log.info)
        if found.result is not None:  # an identical earlier run's result: no process at all
            # Said apart from the manifest (which is the earlier run's, unchanged), for the UI and the demo.
            context["ti"].xcom_push(key=REUSED_XCOM, value=found.origin)
            return cache.reuse(found, invocation, self.log.info)
        self._active_runner = runner  # for on_kill
        self.log.info(
            "running step %s via the %s runner (try %d)", self.step_name, self.runner, invocation.ctx.try_number
        )
        try:
            result = runner.run(invocation, log=self.log.info, context=context)
        except StepFailed as exc:
            raise self._airflow_error(exc) from None
        if result.get("mlflow_run_id"):
            self.log.info("MLflow run id: %s", result["mlflow_run_id"])
        cache.record(found, invocation, root, result)
        return result

    def _airflow_error(self, exc: StepFailed) -> AirflowException:
        message = f"step {self.step_name} failed: {exc.message}"
        if exc.exit_code in _FINAL:
            return AirflowFailException(message)
        if exc.exit_code == PromotionRejected.exit_code:
            return AirflowSkipException(message)
        return AirflowException(message)

    # ------------------------------------------------- kill and deferral (used by the kubernetes runner)

    def on_kill(self) -> None:
        """The task was killed or timed out: the runner stops the step (the kubernetes runner deletes its pod)."""
        runner: Runner | None = getattr(self, "_active_runner", None)
        if runner is not None:
            runner.on_kill()

    def trigger_reentry(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the pod's trigger fired, when ``runner_options`` asked for ``deferrable`` pods."""
        invocation = self.invocation(context)
        runner = get_runner(self.runner, **self._runner_options())
        self._active_runner = runner
        try:
            result: dict[str, Any] = runner.resume(invocation, event, log=self.log.info, context=context)
        except StepFailed as exc:
            raise self._airflow_error(exc) from None
        return result
