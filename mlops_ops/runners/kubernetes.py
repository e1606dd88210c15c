"""Kubernetes runner: each try of a step runs as a pod through the provider's KubernetesPodOperator.

Creation, waiting, log streaming, deferral, reattachment (``durable``), ``on_finish_action`` cleanup and
``on_kill`` are the provider's. This module only decides what the pod looks like (restricted security
profile, read-only root with a scratch ``/tmp``, credentials by Secret reference), holds the pod the
provider built to the deployment's pod policy (:mod:`mlops_ops.runners.pod_policy`), and reads the step's
result manifest back from the artifact store once the pod has succeeded: no XCom sidecar, no
``pods/exec``. A :class:`~mlops_ops.errors.SpecError` (bad settings, a refused pod) fails the task once.

Nothing heavy is imported at module level: the provider (~5 s) and ``kubernetes`` load when a step runs.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from mlops_ops.errors import MlopsError, SpecError, StoreError
from mlops_ops.runners.base import ENTRYPOINT, StepFailed, StepInvocation, error_line
from mlops_ops.runners.pod import (
    CONTAINER_NAME,
    IMAGE_ENV,
    SCRATCH_PATH,
    SCRATCH_VOLUME,
    LogBudget,
    PodSettings,
    resolve_settings,
)

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

#: Annotations the runner puts on every pod; the result URI tells a reattached retry where to read.
RESULT_ANNOTATION = "mlops-ops.io/result-uri"
RUN_ANNOTATION = "mlops-ops.io/run-id"
TRY_ANNOTATION = "mlops-ops.io/try-number"
STEP_LABEL = "mlops-ops.io/step"
PIPELINE_LABEL = "mlops-ops.io/pipeline"
#: Store settings a worker resolves and a pod needs to write where the worker reads.
STORE_ENV = ("MLOPS_ARTIFACT_ROOT", "MLFLOW_TRACKING_URI", "MLOPS_MLFLOW_ARTIFACT_ROOT")
_REASON_HINTS = {
    "OOMKilled": "out of memory: raise resources.limits.memory",
    "DeadlineExceeded": "active_deadline_seconds reached",
}


class KubernetesRunner:
    """Runs ``mlops-ops step ...`` in a pod built from :class:`~mlops_ops.runners.pod.PodSettings`.

    :param options: Pod settings for this step (the operator's ``runner_options``); they override the
        deployment's settings document (``$MLOPS_POD_SETTINGS``) and the environment defaults.
    """

    def __init__(self, **options: Any) -> None:
        self.options = options
        self._operator: KubernetesPodOperator | None = None

    # ---------------------------------------------------------------------------------------- public

    def run(self, invocation: StepInvocation, log: Callable[[str], None], context: Any = None) -> dict[str, Any]:
        """Run the step's pod to completion and return its result manifest."""
        with _spec_errors_are_final():
            return self._drive(invocation, log, context, lambda op: op.execute(context))

    def resume(
        self, invocation: StepInvocation, event: dict[str, Any], log: Callable[[str], None], context: Any
    ) -> dict[str, Any]:
        """Finish a deferred run once the provider's trigger fired (deferrable mode)."""
        with _spec_errors_are_final():
            return self._drive(invocation, log, context, lambda op: op.trigger_reentry(context, event))

    def on_kill(self) -> None:
        """The task was killed or timed out: the provider deletes the pod (``on_kill_action``)."""
        if self._operator is not None:
            self._operator.on_kill()

    # ------------------------------------------------------------------------------------- internals

    def _drive(
        self,
        invocation: StepInvocation,
        log: Callable[[str], None],
        context: Any,
        step: Callable[[KubernetesPodOperator], Any],
    ) -> dict[str, Any]:
        if context is None:
            raise SpecError("the kubernetes runner runs inside an Airflow task and needs its context")
        settings = resolve_settings(invocation.step, self.options)
        budget = LogBudget(settings.log_max_bytes, settings.log_tail_lines)
        operator = pod_operator(invocation, settings, context, budget=budget, log=log)
        self._operator = operator
        try:
            _as_task_runner(operator, step)
        except Exception as exc:
            interrupt = _interruption(exc)
            if interrupt is not None:
                # A timeout or kill hit while the pod was followed; the provider's cleanup then raised its own
                # "pod returned a failure". Let Airflow see what really happened.
                raise interrupt from None
            failure = step_failure(operator, budget)
            if failure is None:
                raise  # not the step's own failure (API error, launch timeout): Airflow retries it
            raise failure from exc
        finally:
            self._operator = None  # the provider has cleaned up; a later on_kill has nothing to stop
            for line in budget.summary():
                log(line)
        return read_result(operator, invocation, log)


@contextlib.contextmanager
def _spec_errors_are_final() -> Iterator[None]:
    """Report a SpecError as a failed step with its exit code (2), which the operator fails without retry."""
    try:
        yield
    except SpecError as exc:
        raise StepFailed(exc.exit_code, str(exc)) from exc


def _interruption(exc: BaseException) -> BaseException | None:
    """A timeout or interrupt (a BaseException, not an Exception) that ``exc`` was raised while handling."""
    seen: set[int] = set()
    current: BaseException | None = exc.__context__
    while current is not None and id(current) not in seen:
        if not isinstance(current, Exception):
            return current
        seen.add(id(current))
        current = current.__context__
    return None


def _as_task_runner(operator: KubernetesPodOperator, step: Callable[[KubernetesPodOperator], Any]) -> Any:
    """Call the pod operator the way the Task Runner calls a task's operator.

    The step's own operator is the task; the pod operator is the machinery it drives. Airflow guards
    ``execute`` against nested calls (``ExecutorSafeguard``); like the Task Runner, we mark the pod
    operator as the one being executed, in a copied context so the mark does not leak.
    """
    try:
        from airflow.sdk.bases.operator import ExecutorSafeguard
    except ImportError:  # pragma: no cover - older or newer SDKs without the guard
        return step(operator)
    ctx = contextvars.copy_context()
    ctx.run(ExecutorSafeguard.tracker.set, operator)
    return ctx.run(step, operator)


# ------------------------------------------------------------------------------------- pod building


def pod_operator(
    invocation: StepInvocation,
    settings: PodSettings,
    context: Any,
    *,
    budget: LogBudget | None = None,
    log: Callable[[str], None] | None = None,
) -> KubernetesPodOperator:
    """The KubernetesPodOperator that runs ``invocation``; its ``build_pod_request_obj`` is the pod."""
    from airflow.providers.cncf.kubernetes.secret import Secret
    from kubernetes.client import models as k8s

    if not settings.image:
        raise SpecError(
            f"no step image for the kubernetes runner: set ${IMAGE_ENV} (e.g. registry.example.com/mlops-ops:0.1.0) "
            "or runner_options={'image': ...}; docker/README.md shows how to build and push it"
        )
    env, dropped = pod_env(invocation, settings)
    if dropped and log is not None:
        log(f"not passing {', '.join(dropped)} to the pod: the value holds a password; give it through a Secret")
    secrets = [Secret("env", None, name) for name in settings.env_from_secrets]
    secrets += credential_refs(invocation, settings)
    task = context.get("task") if hasattr(context, "get") else None
    operator_class = _step_pod_operator_class()
    return operator_class(  # type: ignore[no-any-return]
        budget=budget or LogBudget(settings.log_max_bytes, settings.log_tail_lines),
        pod_policy=settings.pod_policy,
        policy_log=log,
        task_id=invocation.ctx.step,
        name=pod_name(invocation),
        random_name_suffix=True,
        namespace=settings.namespace,
        image=settings.image,
        image_pull_policy=settings.image_pull_policy,
        image_pull_secrets=[k8s.V1LocalObjectReference(name=n) for n in settings.image_pull_secrets] or None,
        cmds=[ENTRYPOINT],
        arguments=invocation.args(),
        env_vars=[k8s.V1EnvVar(name=k, value=v) for k, v in env.items()],
        secrets=secrets,
        configmaps=list(settings.env_from_config_maps),
        labels=pod_labels(invocation, settings),
        annotations=pod_annotations(invocation, settings),
        container_resources=k8s.V1ResourceRequirements(
            requests=settings.resources.requests or None, limits=settings.resources.limits or None
        ),
        node_selector=settings.node_selector,
        tolerations=settings.tolerations or None,
        affinity=settings.affinity,
        priority_class_name=settings.priority_class_name,
        service_account_name=settings.service_account,
        automount_service_account_token=settings.automount_service_account_token,
        security_context=settings.pod_security_context(),
        container_security_context=settings.container_security_context(),
        volumes=[
            k8s.V1Volume(
                name=SCRATCH_VOLUME, empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=settings.scratch_size_limit)
            )
        ],
        volume_mounts=[k8s.V1VolumeMount(name=SCRATCH_VOLUME, mount_path=SCRATCH_PATH)],
        pod_template_file=settings.pod_template_file,
        base_container_name=CONTAINER_NAME,
        termination_message_policy="FallbackToLogsOnError",
        termination_grace_period=settings.termination_grace_period_seconds,
        active_deadline_seconds=settings.active_deadline_seconds,
        kubernetes_conn_id=settings.kubernetes_conn_id,
        config_file=settings.config_file,
        cluster_context=settings.cluster_context,
        in_cluster=settings.in_cluster,
        schedule_timeout_seconds=settings.schedule_timeout_seconds,
        startup_timeout_seconds=settings.startup_timeout_seconds,
        startup_check_interval_seconds=settings.startup_check_interval_seconds,
        log_events_on_startup=settings.log_events_on_startup,
        # The result travels through the artifact store, not a sidecar: no pods/exec, no lost results.
        do_xcom_push=False,
        get_logs=True,
        log_events_on_failure=True,
        log_pod_spec_on_failure=False,  # the spec is in the log already; keep failures to one line
        on_finish_action="delete_pod",
        on_kill_action="delete_pod",
        # A retry reattaches to a pod of an earlier try that still runs, or deletes it if it ended.
        durable=True,
        deferrable=settings.deferrable,
        poll_interval=settings.poll_interval,
        execution_timeout=getattr(task, "execution_timeout", None),
    )


def pod_env(invocation: StepInvocation, settings: PodSettings) -> tuple[dict[str, str], list[str]]:
    """Plain environment of the step container, and the forwarded names dropped because they hold a password.

    Later sources win: scratch locations, the worker's store settings, ``settings.env``, the invocation's
    own environment. Credentials (``invocation.secret_env``) are never here: see :func:`credential_refs`.
    """
    from mlops_ops import settings as worker

    env = settings.scratch_env()
    dropped: list[str] = []
    if settings.forward_store_env:
        resolved = {
            "MLOPS_ARTIFACT_ROOT": _root_of(invocation) or worker.artifact_root(),
            "MLFLOW_TRACKING_URI": worker.tracking_uri(),
            "MLOPS_MLFLOW_ARTIFACT_ROOT": worker.mlflow_artifact_root(),
        }
        for name, value in resolved.items():
            if has_password(value):
                dropped.append(name)
            else:
                env[name] = value
    env |= settings.env
    env |= invocation.env
    for name, value in {**settings.env, **invocation.env}.items():
        if has_password(value):
            raise SpecError(
                f"environment variable {name} holds a URI with a password; pods get credentials only from "
                "Kubernetes Secrets (credentials_secret or env_from_secrets)"
            )
    for name in invocation.secret_env:
        env.pop(name, None)
    return env, dropped


def credential_refs(invocation: StepInvocation, settings: PodSettings) -> list[Any]:
    """One ``secretKeyRef`` per credential of the invocation, into ``settings.credentials_secret``."""
    from airflow.providers.cncf.kubernetes.secret import Secret

    if not invocation.secret_env:
        return []
    if not settings.credentials_secret:
        names = ", ".join(sorted(invocation.secret_env))
        raise SpecError(
            f"step {invocation.step} needs credentials ({names}) but no Kubernetes Secret holds them: create one "
            f"with these keys and set credentials_secret (or $MLOPS_K8S_CREDENTIALS_SECRET); values are never "
            "written into the pod spec"
        )
    return [Secret("env", name, settings.credentials_secret, name) for name in sorted(invocation.secret_env)]


def pod_labels(invocation: StepInvocation, settings: PodSettings) -> dict[str, str]:
    """Labels of the step pod; the provider adds ``dag_id``, ``task_id``, ``run_id`` and ``try_number``.

    These must be the same for every try of a task: the provider finds an earlier try's pod by them.
    """
    from airflow.providers.cncf.kubernetes.pod_generator import make_safe_label_value

    labels = {
        **settings.labels,
        "app.kubernetes.io/name": "mlops-ops",
        "app.kubernetes.io/component": "step",
        STEP_LABEL: invocation.step,
        PIPELINE_LABEL: invocation.ctx.pipeline,
    }
    return {key: make_safe_label_value(str(value)) for key, value in labels.items()}


def pod_annotations(invocation: StepInvocation, settings: PodSettings) -> dict[str, str]:
    """Annotations: the exact run id and try, and where this try writes its result manifest."""
    annotations = {
        **settings.annotations,
        RUN_ANNOTATION: invocation.ctx.run_id,
        TRY_ANNOTATION: str(invocation.ctx.try_number),
    }
    if invocation.result_uri:
        annotations[RESULT_ANNOTATION] = invocation.result_uri
    return annotations


def pod_name(invocation: StepInvocation) -> str:
    """Base name of the pod (the provider adds a random suffix and keeps it within 63 characters)."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"{invocation.ctx.pipeline}-{invocation.ctx.step}".lower()).strip("-")
    return name[:200] or "mlops-step"


def has_password(value: str) -> bool:
    """Whether ``value`` is a URI that carries a password (``scheme://user:secret@host``)."""
    try:
        return bool(urlparse(value).password)
    except ValueError:
        return False


def _root_of(invocation: StepInvocation) -> str | None:
    """The artifact root the invocation's result URI was derived from."""
    key = "/" + invocation.ctx.result_key()
    if invocation.result_uri and invocation.result_uri.endswith(key):
        return invocation.result_uri[: -len(key)]
    return None


@functools.cache
def _step_pod_operator_class() -> type[KubernetesPodOperator]:
    """KubernetesPodOperator whose pod meets the pod policy and whose log reaches the task log through a budget."""
    from functools import cached_property

    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.cncf.kubernetes.utils.pod_manager import PodManager

    from mlops_ops.runners.pod_policy import apply_policy

    class BoundedPodManager(PodManager):
        """The provider's pod manager, copying at most a budget of log lines to the task log."""

        budget: LogBudget | None = None

        def _log_message(
            self, message: str, container_name: str, container_name_log_prefix_enabled: bool, log_formatter: Any
        ) -> None:
            if self.budget is None or self.budget.admit(message):
                super()._log_message(message, container_name, container_name_log_prefix_enabled, log_formatter)

    class StepPodOperator(KubernetesPodOperator):
        """The provider's pod operator with a pod policy and a bounded task log; everything else is inherited."""

        def __init__(
            self, *, budget: LogBudget, pod_policy: str, policy_log: Callable[[str], None] | None, **kwargs: Any
        ) -> None:
            super().__init__(**kwargs)
            self.budget = budget
            self.pod_policy = pod_policy
            self.policy_log = policy_log

        def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> k8s.V1Pod:
            # Checked here, on the pod the provider is about to create (template, full_pod_spec and
            # pod_mutation_hook applied), in sync and deferrable mode alike.
            pod = super().build_pod_request_obj(context, dry_run=dry_run)
            return apply_policy(pod, self.pod_policy, self.policy_log or self.log.warning)

        @cached_property
        def pod_manager(self) -> PodManager:
            manager = BoundedPodManager(kube_client=self.client, callbacks=self.callbacks)
            manager.budget = self.budget
            return manager

        # The parent's is wrapped in a tenacity retry, which mypy sees as another signature.
        def _write_logs(self, pod: k8s.V1Pod, follow: bool = False, since_time: Any = None) -> None:  # type: ignore[override]
            # Deferrable re-entry reads the log here; route it through the pod manager so the bound holds
            # (the pod manager retries a broken log stream by itself).
            self.pod_manager.fetch_container_logs(pod, self.base_container_name, follow=follow, since_time=since_time)

    # Logger names derive from the qualified name; keep them short and stable.
    BoundedPodManager.__qualname__ = "BoundedPodManager"
    StepPodOperator.__qualname__ = "StepPodOperator"
    return StepPodOperator


# ------------------------------------------------------------------------------------------- outcome


def _terminated(pod: Any) -> Any:
    statuses = getattr(getattr(pod, "status", None), "container_statuses", None) or []
    for status in statuses:
        if status.name == CONTAINER_NAME and status.state is not None and status.state.terminated is not None:
            return status.state.terminated
    return None


def step_failure(operator: KubernetesPodOperator, budget: LogBudget) -> StepFailed | None:
    """The step's failure, if its container ran and exited non-zero; None for any other kind of error."""
    terminated = _terminated(operator.remote_pod) or _terminated(operator.pod)
    if terminated is None or not terminated.exit_code:
        return None
    code = int(terminated.exit_code)
    message = error_line(budget.lines()) or error_line((terminated.message or "").splitlines())
    if message is None:
        reason = terminated.reason or "Error"
        hint = _REASON_HINTS.get(reason, "see the pod log above")
        message = f"the step's container exited with code {code} ({reason}): {hint}"
    return StepFailed(code, message)


def read_result(
    operator: KubernetesPodOperator, invocation: StepInvocation, log: Callable[[str], None]
) -> dict[str, Any]:
    """The result manifest the succeeded pod wrote, read through the artifact store."""
    from mlops_ops.store import store_for

    annotations = (getattr(getattr(operator.pod, "metadata", None), "annotations", None) or {}) if operator.pod else {}
    uri = annotations.get(RESULT_ANNOTATION) or invocation.result_uri
    if not uri:
        raise StepFailed(StoreError.exit_code, "the step has no result URI; the operator must set one")
    if uri != invocation.result_uri:
        log(f"reattached to the pod of an earlier try; reading its result manifest at {uri}")
    try:
        data = json.loads(store_for(uri.rsplit("/", 1)[0]).get_bytes(uri))
    except SpecError as exc:  # the store is misconfigured: retrying will not help
        raise StepFailed(SpecError.exit_code, f"cannot read the result manifest at {uri}: {exc}") from exc
    except MlopsError as exc:  # missing, or the store unreachable: a retry of the task may find it
        raise StepFailed(StoreError.exit_code, f"the pod succeeded but its result manifest is missing: {exc}") from exc
    except ValueError as exc:
        raise StepFailed(StoreError.exit_code, f"the result manifest at {uri} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise StepFailed(StoreError.exit_code, f"the result manifest at {uri} is not a JSON object")
    return data
