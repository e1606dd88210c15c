"""The pod each step operator would create, built by the provider's ``build_pod_request_obj``.

No cluster is needed: a kubeconfig on a loopback address lets the provider render the pod. Each pod is
validated against the official Kubernetes OpenAPI schema (``kubernetes-validate``, newest version it
ships) and checked against the "restricted" Pod Security Standard. The RBAC manifest and the step
image's Dockerfile are checked here too.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from packaging.version import Version

from mlops_ops.errors import SpecError
from mlops_ops.runners.base import StepInvocation
from mlops_ops.runners.kubernetes import step_failure
from mlops_ops.runners.pod import STEP_UID, LogBudget, PodSettings, resolve_settings
from mlops_ops.runners.step_pod import PIPELINE_LABEL, RESULT_ANNOTATION, STEP_LABEL, pod_operator
from tests.conftest import REPO
from tests.conftest import STEP_IMAGE as IMAGE

STEPS = ("ingest", "validate", "train", "evaluate", "promote")
SECRET_VALUES = {
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI-K7MDENG-bPxRfiCY-secret",
    "MLFLOW_TRACKING_TOKEN": "tok-3f9a8c",
}
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_REF = {"uri": "file:///d.parquet", "digest": "ab" * 32, "rows": 10, "columns": {"y": "int64"}}
_TRAIN = {
    "step": "train",
    "mlflow_run_id": "run-train",
    "model_uri": "models:/m-1",
    "task": "classification",
    "target": "churned",
    "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
    "dataset_digest": _REF["digest"],
    "dataset_uri": _REF["uri"],
}
#: What each upstream task pushed to XCom, as far as the downstream specs need it.
MANIFESTS: dict[str, dict[str, Any]] = {
    "ingest": {"step": "ingest", "source": "x", "snapshot": _REF, "train": _REF, "eval": _REF},
    "validate": {"step": "validate", "success": True, "dataset_digest": _REF["digest"], "suite": "s", "evaluated": 3,
                 "result_uri": "file:///r.json", "report_uri": "file:///r.md"},
    "train": _TRAIN,
    "evaluate": {"step": "evaluate", "passed": True, "candidate": _TRAIN, "candidate_metrics": {"roc_auc": 0.9},
                 "dataset_digest": _REF["digest"]},
    "approve": {"approved": True, "required": False, "by": "", "comment": ""},  # runs on the worker, no pod
}  # fmt: skip
_SECCOMP = ("RuntimeDefault", "Localhost")
#: Volume types the restricted profile allows.
_RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                       "projected", "secret"}  # fmt: skip


class FakeTI(SimpleNamespace):
    """The task instance fields the operators and the provider read, with XCom from MANIFESTS."""

    def xcom_pull(self, task_ids: str | None = None, **_: Any) -> Any:
        return MANIFESTS[str(task_ids)]

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed = {**getattr(self, "pushed", {}), key: value}


@pytest.fixture(autouse=True)
def _offline_pods(loopback_kubeconfig: Path) -> Path:
    """Every test here renders pods offline (the kubeconfig fixture is in conftest)."""
    return loopback_kubeconfig


@pytest.fixture(scope="module")
def dag() -> Any:
    """The mlops_training DAG, imported from its file as Airflow's parser would."""
    spec = importlib.util.spec_from_file_location("mlops_training_dag", REPO / "dags" / "mlops_training.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def task_context(
    dag: Any, task_id: str, run_id: str = "manual__2026-01-02T03:04:05.678901+00:00", try_number: int = 1
) -> dict[str, Any]:
    """The parts of a task's runtime context that templates, operators and the provider read."""
    ti = FakeTI(dag_id=dag.dag_id, task_id=task_id, map_index=-1, try_number=try_number, run_id=run_id)
    params = dag.params.dump() | {"runner": "kubernetes"}
    return {"params": params, "ti": ti, "run_id": run_id, "dag": dag, "task": dag.get_task(task_id)}


def rendered_invocation(dag: Any, task_id: str, **context_args: Any) -> tuple[StepInvocation, dict[str, Any]]:
    """The invocation the DAG's task would hand its runner, with templates rendered from params and XCom."""
    context = task_context(dag, task_id, **context_args)
    task = context["task"]
    task.render_template_fields(context, jinja_env=dag.get_template_env())
    assert task.runner == "kubernetes"
    return task.invocation(context), context


def build_pod(invocation: StepInvocation, context: dict[str, Any], **options: Any) -> dict[str, Any]:
    """The pod the runner's KubernetesPodOperator would create, as the JSON sent to the API server."""
    from kubernetes.client import ApiClient

    settings = resolve_settings(invocation.step, options)
    operator = pod_operator(invocation, settings, context)
    pod = operator.build_pod_request_obj(context)
    return dict(ApiClient().sanitize_for_serialization(pod))


def validate(manifest: dict[str, Any]) -> str:
    """Validate against the newest Kubernetes schema kubernetes-validate ships (strict: no unknown fields)."""
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    version = latest_version()
    kubernetes_validate.validate(manifest, version, strict=True)
    return version


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What in ``pod`` breaks the Kubernetes "restricted" Pod Security Standard (baseline included)."""
    spec, problems = pod["spec"], []
    pod_sc = spec.get("securityContext") or {}
    problems += [f"{flag} is set" for flag in ("hostNetwork", "hostPID", "hostIPC") if spec.get(flag)]
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= _RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']} is of a disallowed type {kinds}")
    if (pod_sc.get("seccompProfile") or {}).get("type") not in _SECCOMP:
        problems.append("pod seccompProfile is not RuntimeDefault")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runs as uid 0")
    for step in [*spec.get("initContainers", []), *spec["containers"]]:
        problems += [f"{step['name']}: {problem}" for problem in _container_violations(step, pod_sc)]
    return problems


def _container_violations(step: dict[str, Any], pod_sc: dict[str, Any]) -> list[str]:
    sc, caps = step.get("securityContext") or {}, (step.get("securityContext") or {}).get("capabilities") or {}
    checks = {
        "privileged": bool(sc.get("privileged")),
        "allowPrivilegeEscalation is not false": sc.get("allowPrivilegeEscalation") is not False,
        "runAsNonRoot is not true": not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")),
        "runAsUser is unset or 0": sc.get("runAsUser", pod_sc.get("runAsUser")) in (0, None),
        "capabilities do not drop ALL": "ALL" not in (caps.get("drop") or [])
        or bool(set(caps.get("add") or []) - {"NET_BIND_SERVICE"}),
        "seccompProfile is not RuntimeDefault": (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get(
            "type"
        )
        not in _SECCOMP,
        "hostPort": any(port.get("hostPort") for port in step.get("ports") or []),
    }
    return [problem for problem, broken in checks.items() if broken]


def container(pod: dict[str, Any]) -> dict[str, Any]:
    [step] = pod["spec"]["containers"]
    return step  # type: ignore[no-any-return]


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {var["name"]: var.get("value", var.get("valueFrom")) for var in container(pod).get("env") or []}


# ---------------------------------------------------------------------------------- the five pods


@pytest.mark.parametrize("task_id", STEPS)
def test_each_step_pod_is_a_valid_restricted_pod_running_the_invocation(dag: Any, task_id: str) -> None:
    invocation, context = rendered_invocation(dag, task_id)
    pod = build_pod(invocation, context)

    assert Version(validate(pod)) >= Version("1.33")
    assert restricted_violations(pod) == []
    step = container(pod)
    assert step["image"] == IMAGE
    assert step["command"] == ["mlops-ops"]
    assert step["args"] == invocation.args()
    assert step["args"][:2] == ["step", task_id]
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert [c["name"] for c in pod["spec"]["containers"]] == ["step"]  # no XCom sidecar


def test_restricted_profile_fields_and_scratch_volume(dag: Any) -> None:
    invocation, context = rendered_invocation(dag, "train")
    pod = build_pod(invocation, context)

    pod_sc = pod["spec"]["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == STEP_UID != 0
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(pod)["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == STEP_UID
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # The only writable place is an emptyDir at /tmp, where every write of the step goes.
    [volume] = pod["spec"]["volumes"]
    assert "emptyDir" in volume
    assert container(pod)["volumeMounts"] == [{"mountPath": "/tmp", "name": volume["name"]}]
    env = env_of(pod)
    for name in ("HOME", "MLOPS_HOME", "TMPDIR", "MPLCONFIGDIR", "XDG_CACHE_HOME"):
        assert env[name] == "/tmp" or env[name].startswith("/tmp/"), name


def test_labels_key_the_pod_by_run_task_and_try_and_are_valid(dag: Any) -> None:
    long_run = "scheduled__2026-01-02T03:04:05.678901+00:00" + "-with-a-very-long-suffix" * 4
    invocation, context = rendered_invocation(dag, "evaluate", run_id=long_run, try_number=3)
    pod = build_pod(invocation, context)

    labels = pod["metadata"]["labels"]
    assert labels["dag_id"] == "mlops_training"
    assert labels["task_id"] == "evaluate"
    assert labels["try_number"] == "3"
    assert labels["run_id"] != long_run and len(labels["run_id"]) <= 63  # made safe, with a hash
    assert labels[STEP_LABEL] == "evaluate"
    assert labels[PIPELINE_LABEL] == "mlops_training"
    for key, value in labels.items():
        assert len(value) <= 63 and _LABEL_VALUE.match(value), (key, value)
    # The exact run id and the result key travel as annotations, where any characters are allowed.
    annotations = pod["metadata"]["annotations"]
    assert annotations["mlops-ops.io/run-id"] == long_run
    assert annotations[RESULT_ANNOTATION] == invocation.result_uri
    assert invocation.result_uri is not None and invocation.result_uri.endswith("/try-3/result.json")
    assert (
        re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", pod["metadata"]["name"]) and len(pod["metadata"]["name"]) <= 63
    )


# ----------------------------------------------------------------------------------- credentials


def test_credentials_reach_the_pod_only_as_secret_references(dag: Any) -> None:
    invocation, context = rendered_invocation(dag, "train")
    invocation = StepInvocation(**{**invocation.__dict__, "secret_env": SECRET_VALUES})
    pod = build_pod(
        invocation,
        context,
        credentials_secret="mlops-credentials",
        env_from_secrets=["mlops-s3"],
        env_from_config_maps=["mlops-endpoints"],
    )

    validate(pod)
    text = json.dumps(pod)
    for value in SECRET_VALUES.values():
        assert value not in text
    env = env_of(pod)
    for name in SECRET_VALUES:
        assert env[name] == {"secretKeyRef": {"name": "mlops-credentials", "key": name}}
    assert {"secretRef": {"name": "mlops-s3"}} in container(pod)["envFrom"]
    assert {"configMapRef": {"name": "mlops-endpoints"}} in container(pod)["envFrom"]
    assert SECRET_VALUES["AWS_SECRET_ACCESS_KEY"] not in repr(invocation)


def test_credentials_without_a_secret_to_hold_them_are_refused(dag: Any) -> None:
    invocation, context = rendered_invocation(dag, "train")
    invocation = StepInvocation(**{**invocation.__dict__, "secret_env": SECRET_VALUES})
    with pytest.raises(SpecError, match="credentials_secret") as caught:
        build_pod(invocation, context)
    assert SECRET_VALUES["AWS_SECRET_ACCESS_KEY"] not in str(caught.value)


def test_a_uri_with_a_password_never_becomes_a_plain_env_value(dag: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    invocation, context = rendered_invocation(dag, "train")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://ml:hunter2@mlflow.example.com")
    pod = build_pod(invocation, context)
    assert "hunter2" not in json.dumps(pod)
    assert "MLFLOW_TRACKING_URI" not in env_of(pod)  # dropped from forwarding; give it through a Secret

    explicit = StepInvocation(**{**invocation.__dict__, "env": {"MLFLOW_TRACKING_URI": "https://ml:hunter2@x"}})
    with pytest.raises(SpecError, match="password"):
        build_pod(explicit, context)


def test_worker_store_settings_are_forwarded_unless_turned_off(dag: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_ARTIFACT_ROOT", "s3://bucket/mlops")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.mlops.svc:5000")
    invocation, context = rendered_invocation(dag, "ingest")
    env = env_of(build_pod(invocation, context))
    assert env["MLOPS_ARTIFACT_ROOT"] == "s3://bucket/mlops"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.mlops.svc:5000"
    assert invocation.result_uri is not None and invocation.result_uri.startswith("s3://bucket/mlops/runs/")

    env = env_of(build_pod(invocation, context, forward_store_env=False, env_from_config_maps=["mlops-store"]))
    assert "MLOPS_ARTIFACT_ROOT" not in env and "MLFLOW_TRACKING_URI" not in env


# -------------------------------------------------------------------------------------- settings


def test_pod_settings_reach_the_pod(dag: Any, tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"labels": {"team": "ml"}},
        "spec": {"priorityClassName": "batch-low", "dnsPolicy": "ClusterFirst",
                 "securityContext": {"runAsUser": 0},  # a template cannot weaken the profile
                 "containers": [{"name": "step", "securityContext": {"privileged": True}}]},
    }))  # fmt: skip
    invocation, context = rendered_invocation(dag, "train")
    pod = build_pod(
        invocation,
        context,
        namespace="ml-jobs",
        service_account="mlops-ops-step",
        image_pull_secrets="regcred, mirror",
        resources={"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "16Gi", "nvidia.com/gpu": 1}},
        node_selector={"nvidia.com/gpu.present": "true"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]}]}]
                }
            }
        },
        labels={"cost-center": "ml"},
        annotations={"example.com/owner": "ml-platform"},
        pod_template_file=str(template),
        active_deadline_seconds=3600,
    )

    validate(pod)
    assert restricted_violations(pod) == []
    spec, step = pod["spec"], container(pod)
    assert pod["metadata"]["namespace"] == "ml-jobs"
    assert spec["serviceAccountName"] == "mlops-ops-step"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]
    assert step["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"},
    }
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert pod["metadata"]["labels"]["cost-center"] == "ml"
    assert pod["metadata"]["labels"]["team"] == "ml"  # from the template
    assert pod["metadata"]["annotations"]["example.com/owner"] == "ml-platform"
    assert spec["priorityClassName"] == "batch-low"  # from the template
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["securityContext"]["runAsUser"] == STEP_UID
    assert step["securityContext"]["privileged"] is False


def test_image_is_a_setting_never_a_constant(dag: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    invocation, context = rendered_invocation(dag, "ingest")
    assert container(build_pod(invocation, context, image="other.example/mlops:2"))["image"] == "other.example/mlops:2"
    monkeypatch.delenv("MLOPS_STEP_IMAGE")
    with pytest.raises(SpecError, match="MLOPS_STEP_IMAGE"):
        build_pod(invocation, context)
    source = "".join(
        (REPO / "mlops_ops" / "runners" / name).read_text() for name in ("kubernetes.py", "step_pod.py", "pod.py")
    )
    assert not re.search(
        r"""["'][\w./-]+:[\w.-]+["']""",
        re.sub(r'"""[\s\S]*?"""|#.*', "", source).replace('"Always", "IfNotPresent", "Never"', ""),
    ), "an image reference is hard-coded"


def test_settings_document_and_step_sections(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    document = tmp_path / "pods.yaml"
    document.write_text(yaml.safe_dump({
        "namespace": "ml-jobs", "image": "reg.example/mlops:7",
        "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "2Gi"}},
        "steps": {"train": {"resources": {"limits": {"memory": "8Gi", "nvidia.com/gpu": "1"}}}},
    }))  # fmt: skip
    monkeypatch.setenv("MLOPS_POD_SETTINGS", str(document))
    assert resolve_settings("ingest").resources.limits == {"memory": "2Gi"}
    train = resolve_settings("train", {"namespace": "override"})
    assert train.resources.limits == {"memory": "8Gi", "nvidia.com/gpu": "1"}
    assert (train.namespace, train.image) == ("override", "reg.example/mlops:7")

    monkeypatch.setenv("MLOPS_POD_SETTINGS", '{"image_pull_policy": "Always"}')
    assert resolve_settings("promote").image_pull_policy == "Always"
    with pytest.raises(SpecError, match=r"resources.limits.*'lots'"):
        resolve_settings("train", {"resources": {"limits": {"memory": "lots"}}})
    with pytest.raises(SpecError, match="unknown_field"):
        resolve_settings("train", {"unknown_field": 1})


# ------------------------------------------------------------------------------ failures and logs


def _pod_with(terminated: dict[str, Any] | None) -> Any:
    state = SimpleNamespace(terminated=SimpleNamespace(**terminated) if terminated else None)
    status = SimpleNamespace(container_statuses=[SimpleNamespace(name="step", state=state)])
    return SimpleNamespace(status=status)


def test_step_failure_takes_the_steps_own_error_line() -> None:
    budget = LogBudget(max_bytes=100, tail_lines=5)
    for line in ["starting", "x" * 200, "mlops-ops: error: DataError: column 'age' is missing; check the source\n"]:
        budget.admit(line)
    operator = SimpleNamespace(remote_pod=_pod_with({"exit_code": 3, "reason": "Error", "message": None}), pod=None)
    failure = step_failure(operator, budget)  # type: ignore[arg-type]
    assert failure is not None
    assert (failure.exit_code, failure.message) == (3, "DataError: column 'age' is missing; check the source")


def test_step_failure_falls_back_to_termination_message_and_reason() -> None:
    message = "log line\nmlops-ops: error: StoreError: cannot write s3://b/k: AccessDenied"
    operator = SimpleNamespace(remote_pod=None, pod=_pod_with({"exit_code": 6, "reason": "Error", "message": message}))
    failure = step_failure(operator, LogBudget(10, 5))  # type: ignore[arg-type]
    assert failure is not None and failure.message == "StoreError: cannot write s3://b/k: AccessDenied"

    oom = SimpleNamespace(remote_pod=_pod_with({"exit_code": 137, "reason": "OOMKilled", "message": None}), pod=None)
    failure = step_failure(oom, LogBudget(10, 5))  # type: ignore[arg-type]
    assert failure is not None and failure.exit_code == 137 and "resources.limits.memory" in failure.message

    for pod in (_pod_with(None), _pod_with({"exit_code": 0, "reason": "Completed", "message": None})):
        assert step_failure(SimpleNamespace(remote_pod=pod, pod=None), LogBudget(10, 5)) is None  # type: ignore[arg-type]


def test_log_budget_keeps_the_head_and_reports_the_tail() -> None:
    budget = LogBudget(max_bytes=50, tail_lines=3)
    admitted = [budget.admit(f"line {i:02d} " + "." * 10) for i in range(10)]
    assert admitted == [True, True, False, False, False, False, False, False, False, False]
    summary = budget.summary()
    assert "8 lines not shown" in summary[0]
    assert summary[1:] == [f"line {i:02d} " + "." * 10 for i in (7, 8, 9)]
    assert LogBudget(10, 3).summary() == []


# ------------------------------------------------------------------------------- image and RBAC


def test_dockerfile_entrypoint_user_and_locked_install_match_the_pod(dag: Any) -> None:
    text = (REPO / "docker" / "Dockerfile").read_text()
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    final_stage = instructions[max(i for i, line in enumerate(instructions) if line.startswith("FROM ")) :]
    [entrypoint] = [line for line in final_stage if line.startswith("ENTRYPOINT")]
    assert json.loads(entrypoint.removeprefix("ENTRYPOINT")) == ["mlops-ops"]
    [user] = [line for line in final_stage if line.startswith("USER ")]
    uid, _, gid = user.removeprefix("USER ").partition(":")
    invocation, context = rendered_invocation(dag, "train")
    pod = build_pod(invocation, context)
    assert int(uid) == pod["spec"]["securityContext"]["runAsUser"] == PodSettings().run_as_user
    assert int(gid) == pod["spec"]["securityContext"]["runAsGroup"]
    assert re.search(r"useradd [^\n]*--uid 10001", text)
    assert container(pod)["command"] == json.loads(entrypoint.removeprefix("ENTRYPOINT"))
    installs = re.findall(r"uv sync ([^\n]*)", text)
    assert installs and all({"--frozen", "--no-dev", "--extra step"} <= {*i.split(), "--extra step"} for i in installs)
    assert all("--extra step" in i for i in installs)
    assert "apache-airflow" not in text


def test_rbac_manifest_is_valid_and_minimal() -> None:
    documents = [d for d in yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "rbac.yaml").read_text()) if d]
    for document in documents:
        validate(document)
    kinds = {d["kind"]: d for d in documents}
    assert set(kinds) == {"ServiceAccount", "Role", "RoleBinding"}
    rules = {(resource, verb) for rule in kinds["Role"]["rules"] for resource in rule["resources"]
             for verb in rule["verbs"] if rule["apiGroups"] == [""]}  # fmt: skip
    assert {("pods", v) for v in ("create", "get", "list", "watch", "delete")} <= rules
    assert ("pods/log", "get") in rules
    assert not any(resource in ("pods/exec", "secrets", "*") for resource, _ in rules)
    assert not any(verb == "*" for _, verb in rules)
    assert rules <= {*(("pods", v) for v in ("create", "get", "list", "watch", "delete", "patch")),
                     ("pods/log", "get"), ("events", "list")}  # fmt: skip
    binding = kinds["RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": kinds["Role"]["metadata"]["name"]}  # fmt: skip
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": kinds["ServiceAccount"]["metadata"]["name"],
                                    "namespace": kinds["ServiceAccount"]["metadata"]["namespace"]}]  # fmt: skip


# ---------------------------------------------------------------------------------- parse time


def test_runner_modules_import_nothing_heavy() -> None:
    code = (
        "import sys; import mlops_ops.runners.kubernetes, mlops_ops.runners.step_pod, mlops_ops.runners.pod, "
        "mlops_ops.runners; "
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'kubernetes_asyncio') "
        "or m.startswith('airflow.providers.cncf')]; print(heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# ------------------------------------------------------------------------------- operator seam


class _PodRunner:
    """Stands in for the kubernetes runner at the operator's seam: records kills and re-entries."""

    def __init__(self, fail: bool = False) -> None:
        self.killed, self.resumed, self.fail = 0, [], fail

    def run(self, invocation: StepInvocation, log: Any, context: Any = None) -> dict[str, Any]:
        return {"step": invocation.step}

    def resume(self, invocation: StepInvocation, event: dict[str, Any], log: Any, context: Any) -> dict[str, Any]:
        from mlops_ops.runners.base import StepFailed

        self.resumed.append((invocation.ctx.try_number, event))
        if self.fail:
            raise StepFailed(3, "DataError: no rows")
        return {"step": invocation.step, "resumed": True}

    def on_kill(self) -> None:
        self.killed += 1


def test_operator_hands_kills_and_deferred_reentry_to_the_runner(dag: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from mlops_ops.operators import base as operator_base

    runner = _PodRunner()
    monkeypatch.setattr(operator_base, "get_runner", lambda name, **options: runner)
    context = task_context(dag, "ingest", try_number=2)
    task = context["task"]
    task.render_template_fields(context, jinja_env=dag.get_template_env())

    task.on_kill()  # before execute: nothing runs, nothing to stop
    assert task.execute(context) == {"step": "ingest"}
    task.on_kill()
    assert runner.killed == 1

    event = {"status": "success", "name": "mlops-training-ingest-x", "namespace": "default"}
    assert task.trigger_reentry(context, event) == {"step": "ingest", "resumed": True}
    assert runner.resumed == [(2, event)]
    runner.fail = True
    with pytest.raises(AirflowFailException, match="step ingest failed: DataError: no rows"):
        task.trigger_reentry(context, event)


def test_the_provider_still_offers_what_the_runner_relies_on() -> None:
    """The runner subclasses the provider's operator and pod manager: an upgrade that renames or reshapes
    what it overrides or calls must fail here, loudly, not in a user's task (pyproject pins the range)."""
    import inspect
    from functools import cached_property

    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.cncf.kubernetes.utils.pod_manager import PodManager

    def params(func: Any) -> list[str]:
        return list(inspect.signature(inspect.unwrap(func)).parameters)

    assert params(PodManager._log_message)[:5] == [
        "self",
        "message",
        "container_name",
        "container_name_log_prefix_enabled",
        "log_formatter",
    ]
    assert params(PodManager.fetch_container_logs)[:3] == ["self", "pod", "container_name"]
    assert {"follow", "since_time"} <= set(params(PodManager.fetch_container_logs))
    assert params(KubernetesPodOperator._write_logs)[:2] == ["self", "pod"]
    assert {"follow", "since_time"} <= set(params(KubernetesPodOperator._write_logs))
    assert params(KubernetesPodOperator.build_pod_request_obj)[:2] == ["self", "context"]
    assert "dry_run" in params(KubernetesPodOperator.build_pod_request_obj)
    assert isinstance(inspect.getattr_static(KubernetesPodOperator, "pod_manager"), cached_property)
    assert params(KubernetesPodOperator.trigger_reentry)[:3] == ["self", "context", "event"]
    for name in ("execute", "on_kill", "client", "callbacks", "base_container_name"):
        assert hasattr(KubernetesPodOperator, name) or name in params(KubernetesPodOperator.__init__), name
