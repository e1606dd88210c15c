"""The pod policy holds on the pod the provider builds, whatever a pod template or the settings put in it.

Each pod is the real one: ``build_pod_request_obj`` of the runner's KubernetesPodOperator, rendered
offline with the loopback kubeconfig of ``tests/test_kubernetes_pod.py``, then checked with that
module's independent reading of the "restricted" Pod Security Standard.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from mlops_ops.context import RunContext
from mlops_ops.errors import SpecError
from mlops_ops.runners.base import StepFailed, StepInvocation
from mlops_ops.runners.kubernetes import KubernetesRunner
from mlops_ops.runners.pod import resolve_settings
from mlops_ops.runners.pod_policy import BASELINE, RESTRICTED, enforce
from mlops_ops.runners.step_pod import pod_operator
from tests.test_kubernetes_pod import FakeTI, restricted_violations, validate

pytestmark = pytest.mark.usefixtures("loopback_kubeconfig")  # pods render offline


def with_proxy(security_context: dict[str, Any]) -> dict[str, Any]:
    """A template whose second container (a sidecar) has ``security_context``."""
    return {"containers": [{"name": "step"}, {"name": "proxy", "image": "p", "securityContext": security_context}]}


#: Templates that must be refused, with the field the error must name.
REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "host namespaces": ({"hostNetwork": True, "hostPID": True, "hostIPC": True}, "spec.hostNetwork=true"),
    "hostPath /": (
        {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]},
        'spec.volumes[root].hostPath={"path":"/"}',
    ),
    "privileged sidecar": (with_proxy({"privileged": True}), "spec.containers[proxy].securityContext.privileged=true"),
    "privileged init container": (
        {"initContainers": [{"name": "setup", "image": "p", "securityContext": {"privileged": True}}]},
        "spec.initContainers[setup].securityContext.privileged=true",
    ),
    "root user": (with_proxy({"runAsUser": 0}), "spec.containers[proxy].securityContext.runAsUser=0"),
    "added capability": (
        with_proxy({"capabilities": {"add": ["SYS_ADMIN"]}}),
        'spec.containers[proxy].securityContext.capabilities.add=["SYS_ADMIN"]',
    ),
    "hostPort on the step container": (
        {"containers": [{"name": "step", "ports": [{"containerPort": 80, "hostPort": 80}]}]},
        "spec.containers[step].ports[0].hostPort=80",
    ),
    "procMount Unmasked": (
        with_proxy({"procMount": "Unmasked"}),
        'spec.containers[proxy].securityContext.procMount="Unmasked"',
    ),
    "nfs volume": (
        {"volumes": [{"name": "shared", "nfs": {"server": "nfs.example", "path": "/x"}}]},
        "spec.volumes[shared].nfs=",
    ),
}


def invocation(step: str = "train") -> StepInvocation:
    ctx = RunContext(pipeline="mlops_training", run_id="manual__2026-01-02", step=step)
    return StepInvocation(step=step, spec={"step": step}, ctx=ctx, result_uri=f"file:///r/{ctx.result_key()}")


def task_context(inv: StepInvocation) -> dict[str, Any]:
    ti = FakeTI(dag_id=inv.ctx.pipeline, task_id=inv.ctx.step, map_index=-1, try_number=1, run_id=inv.ctx.run_id)
    return {"ti": ti, "run_id": inv.ctx.run_id, "dag": SimpleNamespace(dag_id=inv.ctx.pipeline), "task": None}


def template(tmp_path: Path, spec: dict[str, Any]) -> str:
    path = tmp_path / "template.yaml"
    spec = {"containers": [{"name": "step"}], **spec}  # a pod template names at least its base container
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": spec}))
    return str(path)


def build(
    tmp_path: Path, spec: dict[str, Any] | None = None, log: list[str] | None = None, **options: Any
) -> dict[str, Any]:
    """The pod the runner would create from a template with ``spec``, as the JSON sent to the API server."""
    from kubernetes.client import ApiClient

    inv = invocation()
    if spec is not None:
        options["pod_template_file"] = template(tmp_path, spec)
    lines = log if log is not None else []
    operator = pod_operator(inv, resolve_settings(inv.step, options), task_context(inv), log=lines.append)
    return dict(ApiClient().sanitize_for_serialization(operator.build_pod_request_obj(task_context(inv))))


def deployment_settings(monkeypatch: pytest.MonkeyPatch, **settings: Any) -> None:
    """Add to the deployment's settings document (it already names the loopback kubeconfig)."""
    document = json.loads(os.environ["MLOPS_POD_SETTINGS"]) | settings
    monkeypatch.setenv("MLOPS_POD_SETTINGS", json.dumps(document))


def by_name(pod: dict[str, Any], kind: str = "containers") -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod["spec"].get(kind) or []}


# ------------------------------------------------------------------------------------ restricted


@pytest.mark.parametrize("case", REFUSED)
def test_a_template_that_breaks_the_restricted_profile_is_refused_in_one_line(case: str, tmp_path: Path) -> None:
    spec, field = REFUSED[case]
    log: list[str] = []
    with pytest.raises(SpecError) as caught:
        build(tmp_path, spec, log)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith('the step pod breaks the "restricted" pod policy: ')
    assert field in message
    assert "pod_template_file" in message  # says what to change
    assert log == [f"refused to create the step pod: {message}"]


def test_every_host_namespace_is_named(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        build(tmp_path, REFUSED["host namespaces"][0])
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        assert f"spec.{flag}=true" in str(caught.value)
    assert BASELINE not in str(caught.value)  # relaxing would not help: no hint to do it


def test_a_clean_template_gets_restricted_settings_on_every_container(tmp_path: Path) -> None:
    spec = {
        "priorityClassName": "batch-low",
        "initContainers": [{"name": "setup", "image": "busybox", "command": ["true"]}],
        "containers": [
            {"name": "step"},
            {"name": "proxy", "image": "proxy", "ports": [{"containerPort": 8080}],
             "securityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["NET_RAW"]}}},
        ],
        "volumes": [{"name": "config", "configMap": {"name": "c"}}, {"name": "cache", "emptyDir": {}}],
    }  # fmt: skip
    log: list[str] = []
    pod = build(tmp_path, spec, log)

    validate(pod)
    assert restricted_violations(pod) == []
    for container in [*by_name(pod, "initContainers").values(), *by_name(pod).values()]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert "ALL" in sc["capabilities"]["drop"], container["name"]
    assert by_name(pod)["proxy"]["securityContext"]["capabilities"] == {
        "add": ["NET_BIND_SERVICE"],
        "drop": ["NET_RAW", "ALL"],
    }
    assert pod["spec"]["priorityClassName"] == "batch-low"
    [forced] = [line for line in log if line.startswith("pod policy restricted: set ")]
    assert "spec.initContainers[setup].securityContext.allowPrivilegeEscalation" in forced
    assert "spec.containers[step]" not in forced  # the runner's own container already meets the profile


def test_the_template_cannot_weaken_the_step_container_or_the_pod(tmp_path: Path) -> None:
    spec = {
        "securityContext": {"runAsUser": 0, "runAsNonRoot": False},
        "containers": [{"name": "step", "securityContext": {"privileged": True, "allowPrivilegeEscalation": True}}],
    }
    pod = build(tmp_path, spec)  # the runner's settings win over both
    assert restricted_violations(pod) == []
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    assert by_name(pod)["step"]["securityContext"]["privileged"] is False


def test_unsafe_sysctls_and_unconfined_profiles_are_refused_wherever_they_come_from(tmp_path: Path) -> None:
    # A pod_mutation_hook or a later provider may put these on the pod: the policy reads the pod itself.
    pod = build(tmp_path)
    pod["spec"]["securityContext"]["sysctls"] = [{"name": "kernel.msgmax", "value": "65536"},
                                                 {"name": "net.ipv4.tcp_syncookies", "value": "1"}]  # fmt: skip
    pod["spec"]["containers"][0]["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
    with pytest.raises(SpecError) as caught:
        enforce(pod, BASELINE)
    assert 'spec.securityContext.sysctls[kernel.msgmax]="65536"' in str(caught.value)
    assert "tcp_syncookies" not in str(caught.value)
    assert 'spec.containers[step].securityContext.seccompProfile.type="Unconfined"' in str(caught.value)


# --------------------------------------------------------------------------- who may relax it


RELAXED = {
    "containers": [{"name": "step"},
                   {"name": "legacy", "image": "l", "securityContext": {"runAsUser": 0, "runAsNonRoot": False,
                                                                        "allowPrivilegeEscalation": True}}],
    "volumes": [{"name": "shared", "nfs": {"server": "nfs.example", "path": "/x"}}],
}  # fmt: skip


def test_the_deployment_may_relax_the_policy_to_baseline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SpecError, match=r"set pod_policy: baseline in its pod settings \(a run's runner_options"):
        build(tmp_path, RELAXED)

    deployment_settings(monkeypatch, pod_policy=BASELINE)
    pod = build(tmp_path, RELAXED)
    validate(pod)
    legacy = by_name(pod)["legacy"]["securityContext"]
    assert (legacy["runAsUser"], legacy["allowPrivilegeEscalation"]) == (0, True)  # as the template says
    assert restricted_violations(pod) != []  # only the deployment's choice allows this
    assert by_name(pod)["step"]["securityContext"]["allowPrivilegeEscalation"] is False  # the step stays restricted
    # Baseline still refuses what it forbids.
    for case in (
        "host namespaces",
        "hostPath /",
        "privileged sidecar",
        "added capability",
        "hostPort on the step container",
    ):
        spec, field = REFUSED[case]
        with pytest.raises(SpecError, match='breaks the "baseline" pod policy') as caught:
            build(tmp_path, spec)
        assert field in str(caught.value)


def test_the_policy_can_be_set_per_step_or_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deployment_settings(monkeypatch, steps={"train": {"pod_policy": BASELINE}})
    assert resolve_settings("train").pod_policy == BASELINE
    assert resolve_settings("ingest").pod_policy == RESTRICTED

    monkeypatch.setenv("MLOPS_POD_POLICY", BASELINE)
    assert resolve_settings("ingest").pod_policy == BASELINE
    build(tmp_path, RELAXED)
    monkeypatch.setenv("MLOPS_POD_POLICY", "privileged")
    with pytest.raises(SpecError, match=r"pod_policy: Input should be 'restricted' or 'baseline'"):
        resolve_settings("ingest")


def test_runner_options_cannot_set_the_policy(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        resolve_settings("train", {"pod_policy": BASELINE})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("runner_options may not set pod_policy ('baseline'): a run cannot relax the pod policy")
    assert "$MLOPS_POD_SETTINGS" in message

    # Through the runner, as a DAG run's conf would reach it: a final failure (exit code 2), no pod.
    inv = invocation()
    runner = KubernetesRunner(pod_policy=BASELINE, pod_template_file=template(tmp_path, RELAXED))
    with pytest.raises(StepFailed) as failed:
        runner.run(inv, log=lambda line: None, context=task_context(inv))
    assert failed.value.exit_code == SpecError.exit_code
    assert failed.value.message == message


def test_a_refused_pod_fails_the_step_finally_and_is_never_created(tmp_path: Path) -> None:
    # The loopback kubeconfig points at a closed port: reaching the API would raise a retriable error instead.
    inv = invocation()
    lines: list[str] = []
    runner = KubernetesRunner(pod_template_file=template(tmp_path, REFUSED["hostPath /"][0]))
    with pytest.raises(StepFailed) as failed:
        runner.run(inv, log=lines.append, context=task_context(inv))
    assert failed.value.exit_code == SpecError.exit_code
    assert failed.value.message.startswith(
        'the step pod breaks the "restricted" pod policy: spec.volumes[root].hostPath'
    )
