"""Kubernetes runner: each try of a step runs as a pod through the provider's KubernetesPodOperator.

Creation, waiting, log streaming, deferral, reattachment (``durable``), ``on_finish_action`` cleanup and
``on_kill`` are the provider's. This module drives the operator that :mod:`mlops_ops.runners.step_pod`
builds (what the pod looks like, held to the deployment's pod policy), turns a failed container into the
step's failure, and reads the step's result manifest back from the artifact store once the pod has
succeeded: no XCom sidecar, no ``pods/exec``. A :class:`~mlops_ops.errors.SpecError` (bad settings, a
refused pod) fails the task once.

Nothing heavy is imported at module level: the provider (~5 s) and ``kubernetes`` load when a step runs.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from mlops_ops.errors import MlopsError, SpecError, StoreError
from mlops_ops.runners.base import StepFailed, StepInvocation, error_line
from mlops_ops.runners.pod import CONTAINER_NAME, LogBudget, resolve_settings
from mlops_ops.runners.step_pod import RESULT_ANNOTATION, pod_operator

if TYPE_CHECKING:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

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
