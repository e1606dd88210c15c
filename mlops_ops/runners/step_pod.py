"""The step pod: the KubernetesPodOperator that runs one step try, and what its pod carries.

It decides what the pod looks like (restricted security profile, read-only root with a scratch ``/tmp``,
credentials by Secret reference, labels and annotations a retry finds it by) and builds it with a
subclass of the provider's operator that holds the pod to the deployment's pod policy
(:mod:`mlops_ops.runners.pod_policy`) and copies at most a budget of its log to the task log.
:mod:`mlops_ops.runners.kubernetes` drives the operator and reads the outcome.

Nothing heavy is imported at module level: the provider (~5 s) and ``kubernetes`` load when a pod is built.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from mlops_ops.errors import SpecError
from mlops_ops.runners.base import ENTRYPOINT, StepInvocation
from mlops_ops.runners.pod import (
    CONTAINER_NAME,
    IMAGE_ENV,
    SCRATCH_PATH,
    SCRATCH_VOLUME,
    LogBudget,
    PodSettings,
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
