"""The kubernetes runner against a Kubernetes API server on loopback (kmock) with a fake kubelet.

First the runner alone, with a small stand-in step, for what a healthy cluster rarely shows: a retry
reattaching to the pod of its earlier try, a retry cleaning up a failed one, a kill, a timeout, a long
log, deferrable mode. Then the ``mlops_training`` DAG in real Airflow (``airflow dags test``) with
``runner: kubernetes``: the pipeline succeeds with the lineage the local runner records, and a step that
fails fails its task with the pod's error line and leaves no pod behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest

from mlops_ops.context import RunContext
from mlops_ops.demo import DATA_DIR
from mlops_ops.runners.base import StepFailed, StepInvocation
from mlops_ops.runners.kubernetes import KubernetesRunner
from mlops_ops.settings import artifact_root
from tests.conftest import REPO
from tests.servers.kube import KubeCluster, failing, kube_cluster

pytestmark = pytest.mark.integration

IMAGE = "registry.example.com/ml/mlops-ops:e2e"
DAG_ID = "mlops_training"
MODEL = "churn-classifier"
#: A value only a Kubernetes Secret holds; it must reach the step processes and appear nowhere else.
PROBE = "probe-7c1e0f5a-only-in-a-secret"

#: Stands in for ``mlops-ops step``: the same arguments, a manifest written to ``--result``.
FAKE_STEP = r"""
import json, os, pathlib, sys, time
args = sys.argv[1:]
result, attempt = args[args.index("--result") + 1], int(args[args.index("--try-number") + 1])
print(f"fake {args[1]} try {attempt} pid {os.getpid()}", file=sys.stderr, flush=True)
for i in range(int(os.environ.get("FAKE_LINES", "0"))):
    print(f"line {i:05d} " + "." * 60, file=sys.stderr)
hold = os.environ.get("FAKE_HOLD", "").removeprefix("file://")
while hold and not pathlib.Path(hold).exists():
    time.sleep(0.05)
manifest = {"step": args[1], "try": attempt, "pid": os.getpid(), "home": os.environ["HOME"]}
path = pathlib.Path(result.removeprefix("file://"))
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(json.dumps(manifest))
print(json.dumps(manifest), flush=True)
"""


# ------------------------------------------------------------------------------------ runner level


class FakeTI(SimpleNamespace):
    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed = {**getattr(self, "pushed", {}), key: value}


@pytest.fixture
def fake_step(tmp_path: Path) -> Path:
    path = tmp_path / "fake_step.py"
    path.write_text(FAKE_STEP)
    return path


@pytest.fixture
def cluster(tmp_path: Path, fake_step: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeCluster]:
    """kmock and a kubelet that runs the stand-in step (or what ``cluster.fail`` says) for each pod."""
    failures: dict[str, list[str]] = {}

    def override(pod: dict[str, Any]) -> list[str]:
        labels = pod["metadata"]["labels"]
        if labels.get("try_number") in failures:
            return failures[labels["try_number"]]
        return [sys.executable, str(fake_step), *pod["spec"]["containers"][0]["args"]]

    with kube_cluster(tmp_path / "kube", override=override) as kube:
        # The kubernetes client reads $KUBECONFIG once, when first imported: name the file explicitly.
        monkeypatch.setenv("MLOPS_POD_SETTINGS", json.dumps({"config_file": str(kube.kubeconfig)}))
        monkeypatch.setenv("MLOPS_STEP_IMAGE", IMAGE)
        monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "mlops"))
        for name in ("MLOPS_ARTIFACT_ROOT", "MLFLOW_TRACKING_URI", "MLOPS_K8S_NAMESPACE"):
            monkeypatch.delenv(name, raising=False)
        kube.fail = failures  # type: ignore[attr-defined]
        yield kube


def hold_env(path: Path) -> dict[str, str]:
    """Environment that keeps the stand-in step running until ``path`` exists.

    A URI, not a path: the kubelet maps plain ``/tmp/...`` values into the pod's scratch volume, as a
    real pod sees them, and the test's folder is under ``/tmp``.
    """
    return {"FAKE_HOLD": path.as_uri()}


def invocation(try_number: int, run_id: str = "manual__e2e", step: str = "ingest") -> tuple[StepInvocation, dict]:
    ctx = RunContext(pipeline=DAG_ID, run_id=run_id, step=step, try_number=try_number)
    inv = StepInvocation(
        step=step,
        spec={"source": "unused"},
        ctx=ctx,
        env={"AIRFLOW_CTX_DAG_ID": DAG_ID},
        result_uri=f"{artifact_root()}/{ctx.result_key()}",
    )
    ti = FakeTI(dag_id=DAG_ID, task_id=step, map_index=-1, try_number=try_number, run_id=run_id)
    return inv, {"ti": ti, "run_id": run_id, "dag": SimpleNamespace(dag_id=DAG_ID)}


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def running_pods(cluster: KubeCluster) -> list[dict[str, Any]]:
    return [p for p in cluster.api.raw_pods() if (p.get("status") or {}).get("phase") == "Running"]


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = target()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_step_runs_in_a_pod_and_its_manifest_comes_back_through_the_store(cluster: KubeCluster) -> None:
    inv, context = invocation(1)
    lines: list[str] = []
    result = KubernetesRunner().run(inv, log=lines.append, context=context)

    assert result["step"] == "ingest" and result["try"] == 1
    assert result["home"].startswith(str(cluster.kubelet.root))  # HOME=/tmp, the scratch volume
    [created] = cluster.api.created
    assert created["metadata"]["labels"]["try_number"] == "1"
    assert cluster.api.raw_pods() == []  # deleted on success
    assert context["ti"].pushed["pod_name"] == created["metadata"]["name"]
    assert cluster.kubelet.errors == []


def test_retry_reattaches_to_the_running_pod_of_its_earlier_try(cluster: KubeCluster, tmp_path: Path) -> None:
    from mlops_ops.runners.pod import resolve_settings
    from mlops_ops.runners.step_pod import pod_operator

    hold = tmp_path / "release"
    settings = resolve_settings("ingest", {"env": hold_env(hold)})
    # Try 1's worker created its pod and died: the pod runs on without anyone watching it.
    first, first_context = invocation(1)
    orphan = pod_operator(first, settings, first_context).build_pod_request_obj(first_context)
    cluster.api.client().create_namespaced_pod(orphan.metadata.namespace, orphan)
    wait_for(lambda: running_pods(cluster), "the orphaned pod to run")

    second, second_context = invocation(2)
    lines: list[str] = []
    thread, outcome = in_thread(
        lambda: KubernetesRunner(env=hold_env(hold)).run(second, log=lines.append, context=second_context)
    )
    time.sleep(3)  # try 2 is following the orphan's log by now, and must not have started a pod of its own
    assert len(cluster.api.created) == 1
    hold.touch()
    thread.join(timeout=120)

    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"]["try"] == 1  # the manifest of the pod it reattached to, read where that pod wrote it
    assert any("reattached" in line for line in lines)
    assert len(cluster.api.created) == 1 and len(cluster.kubelet.runs) == 1
    assert cluster.api.raw_pods() == []


def test_retry_deletes_the_failed_pod_of_its_earlier_try_before_starting_its_own(cluster: KubeCluster) -> None:
    from mlops_ops.runners.pod import resolve_settings
    from mlops_ops.runners.step_pod import pod_operator

    cluster.fail["1"] = failing(1, "mlops-ops: error: StoreError: S3 was unreachable")  # type: ignore[attr-defined]
    first, first_context = invocation(1)
    orphan = pod_operator(first, resolve_settings("ingest"), first_context).build_pod_request_obj(first_context)
    cluster.api.client().create_namespaced_pod(orphan.metadata.namespace, orphan)
    wait_for(lambda: [r for r in cluster.kubelet.runs.values() if r.exit_code == 1], "try 1 to fail")

    second, second_context = invocation(2)
    result = KubernetesRunner().run(second, log=lambda _: None, context=second_context)

    assert result["try"] == 2
    runs = sorted(cluster.kubelet.runs.values(), key=lambda r: r.started or 0)
    assert [r.labels["try_number"] for r in runs] == ["1", "2"]
    assert runs[0].ended is not None and runs[1].started is not None and runs[0].ended <= runs[1].started
    assert cluster.api.raw_pods() == []  # both gone


def test_a_failing_step_raises_its_own_error_line_and_its_pod_is_deleted(cluster: KubeCluster) -> None:
    line = "mlops-ops: error: DataError: source 's3://b/missing.csv' not found: no such key; check the path or URI"
    cluster.fail["1"] = failing(3, line)  # type: ignore[attr-defined]
    inv, context = invocation(1)
    with pytest.raises(StepFailed) as caught:
        KubernetesRunner().run(inv, log=lambda _: None, context=context)
    assert caught.value.exit_code == 3
    assert caught.value.message == line.removeprefix("mlops-ops: error: ")
    assert cluster.api.raw_pods() == []


def test_killing_the_task_deletes_its_pod_and_stops_the_step(cluster: KubeCluster, tmp_path: Path) -> None:
    inv, context = invocation(1)
    runner = KubernetesRunner(env=hold_env(tmp_path / "never"), termination_grace_period_seconds=1)
    thread, _ = in_thread(lambda: runner.run(inv, log=lambda _: None, context=context))
    wait_for(lambda: running_pods(cluster), "the pod to run")
    time.sleep(1)

    runner.on_kill()  # what the task runner calls on SIGTERM, a UI "mark failed" or a timeout

    run = wait_for(
        lambda: next((r for r in cluster.kubelet.runs.values() if r.exit_code is not None), None),
        "the step process to stop",
    )
    assert run.killed and run.exit_code != 0
    assert cluster.api.raw_pods() == []
    thread.join(timeout=180)
    assert not thread.is_alive()
    assert not (Path(str(inv.result_uri).removeprefix("file://"))).exists()


def test_timed_out_task_deletes_its_pod(cluster: KubeCluster, tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowTaskTimeout
    from airflow.sdk.execution_time.timeout import timeout

    inv, context = invocation(1)
    runner = KubernetesRunner(env=hold_env(tmp_path / "never"))
    # The task's execution_timeout, applied as the task runner applies it; the timeout reaches Airflow as such.
    with pytest.raises(AirflowTaskTimeout), timeout(20):
        try:
            runner.run(inv, log=lambda _: None, context=context)
        finally:
            runner.on_kill()  # the task runner calls on_kill after a timeout; the pod is already gone
    assert cluster.api.raw_pods() == []
    wait_for(lambda: all(r.exit_code is not None for r in cluster.kubelet.runs.values()), "the process to stop")
    assert [r.killed for r in cluster.kubelet.runs.values()] == [True]


def test_a_long_pod_log_is_cut_in_the_task_log(cluster: KubeCluster) -> None:
    inv, context = invocation(1)
    lines: list[str] = []
    runner = KubernetesRunner(env={"FAKE_LINES": "3000"}, log_max_bytes=20_000, log_tail_lines=5)
    result = runner.run(inv, log=lines.append, context=context)

    assert result["try"] == 1
    notice = next(line for line in lines if "pod log cut" in line)
    cut = re.search(r"cut after (\d+) bytes .*?: (\d+) lines not shown", notice)
    assert cut is not None, notice
    assert int(cut[1]) <= 20_000 and int(cut[2]) > 2500
    assert lines[-1].startswith("{")  # the tail: the step's last line (its manifest) is still shown


def test_deferrable_mode_waits_in_the_trigger_and_finishes_on_reentry(cluster: KubeCluster) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    inv, context = invocation(1)
    runner = KubernetesRunner(deferrable=True, poll_interval=0.5)
    with pytest.raises(TaskDeferred) as deferred:
        runner.run(inv, log=lambda _: None, context=context)
    assert deferred.value.method_name == "trigger_reentry"  # MlopsStepOperator.trigger_reentry resumes it

    async def first_event() -> Any:
        async for event in deferred.value.trigger.run():
            return event

    event = asyncio.run(asyncio.wait_for(first_event(), timeout=120))
    assert event.payload["status"] == "success"
    result = KubernetesRunner(deferrable=True).resume(inv, event.payload, log=lambda _: None, context=context)
    assert result["try"] == 1
    assert cluster.api.raw_pods() == []


# ------------------------------------------------------------------------------- the DAG in Airflow


@pytest.fixture(scope="module")
def airflow_on_kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeCluster, dict[str, str]]]:
    """kmock and the kubelet (running the real ``mlops-ops``), and an Airflow home migrated to use them."""
    from mlops_ops.quickstart import airflow_env

    root = tmp_path_factory.mktemp("kube-e2e")
    home = root / "mlops"
    with kube_cluster(root / "kube") as cluster, mock.patch.dict(os.environ, {"MLOPS_HOME": str(home)}):
        for name in (
            "MLOPS_ARTIFACT_ROOT",
            "MLFLOW_TRACKING_URI",
            "MLOPS_MLFLOW_ARTIFACT_ROOT",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        ):
            os.environ.pop(name, None)
        cluster.api.create_secret("mlops", "mlops-step-env", {"MLOPS_E2E_PROBE": PROBE})
        env = airflow_env(REPO / "dags")
        env.update({
            "KUBECONFIG": str(cluster.kubeconfig),
            "MLOPS_STEP_IMAGE": IMAGE,
            "MLOPS_POD_SETTINGS": json.dumps({"namespace": "mlops", "env_from_secrets": ["mlops-step-env"]}),
        })  # fmt: skip
        migrated = airflow(env, "db", "migrate")
        assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
        yield cluster, env


def airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).with_name("airflow")), *args], env=env, text=True,
                          capture_output=True, check=False)  # fmt: skip


def dags_test(env: dict[str, str], conf: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, str]]:
    """Run the DAG once in Airflow; its output, the run (id and state) and its task states."""
    done = airflow(env, "dags", "test", DAG_ID, "-c", json.dumps(conf))
    output = done.stdout + done.stderr
    with open(Path(env["MLOPS_HOME"]) / "dags-test.log", "a") as log:  # kept with the test's tmp folder
        log.write(output)
    finished = re.search(r"DagRun Finished: .*?run_id=(?P<run_id>[^,]+), .*?state=(?P<state>\w+)", output)
    assert finished is not None, output[-6000:]
    listed = airflow(env, "tasks", "states-for-dag-run", DAG_ID, finished["run_id"], "-o", "json")
    states = {row["task_id"]: str(row["state"]) for row in json.loads(listed.stdout or "[]")}
    return output, {"run_id": finished["run_id"], "state": finished["state"]}, states


def pods_of(cluster: KubeCluster, run_id: str) -> list[dict[str, Any]]:
    from airflow.providers.cncf.kubernetes.pod_generator import make_safe_label_value

    label = make_safe_label_value(run_id)
    return [p for p in cluster.api.created if p["metadata"]["labels"].get("run_id") == label]


def test_pipeline_on_kubernetes_records_the_same_lineage_as_local(
    airflow_on_kube: tuple[KubeCluster, dict[str, str]],
) -> None:
    cluster, env = airflow_on_kube
    started = time.perf_counter()
    output, run, states = dags_test(env, {"runner": "kubernetes"})
    elapsed = time.perf_counter() - started

    assert run["state"] == "success", (states, output[-6000:])
    assert states == dict.fromkeys(("ingest", "validate", "train", "evaluate", "approve", "promote"), "success")
    print(f"mlops_training on kubernetes (kmock) took {elapsed:.1f}s")

    # One pod per step, labelled by run, task and try, each deleted when it ended; no sidecar.
    pods = pods_of(cluster, run["run_id"])
    # One pod per step; the approval (no reviewer under the default policy) runs on the worker.
    assert sorted(p["metadata"]["labels"]["task_id"] for p in pods) == sorted(set(states) - {"approve"})
    for pod in pods:
        labels = pod["metadata"]["labels"]
        assert labels["dag_id"] == DAG_ID and labels["try_number"] == "1"
        assert labels["mlops-ops.io/step"] == labels["task_id"]
        assert [c["name"] for c in pod["spec"]["containers"]] == ["step"]
        assert pod["metadata"]["annotations"]["mlops-ops.io/run-id"] == run["run_id"]
    assert cluster.api.raw_pods() == []
    runs = [cluster.kubelet.runs[(p["metadata"]["namespace"], p["metadata"]["name"])] for p in pods]
    assert [r.exit_code for r in runs] == [0] * 5
    # The Secret's value reached every step process, and never the pod spec or the task log.
    assert all(r.env.get("MLOPS_E2E_PROBE") == PROBE for r in runs)
    assert PROBE not in json.dumps(cluster.api.created) and PROBE not in output
    assert cluster.kubelet.errors == []

    # The lineage the local runner records: a version with the champion alias, its training and
    # evaluation runs, the validation result and the data of this run.
    done = subprocess.run(
        [str(Path(sys.executable).with_name("mlops-ops")), "lineage", MODEL, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    chain = json.loads(done.stdout)
    assert "champion" in chain["aliases"]
    assert (chain["pipeline"], chain["pipeline_run"]) == (DAG_ID, run["run_id"])
    assert chain["train_run"]["run_id"] and chain["train_run"]["metrics"]
    assert chain["evaluate_run"]["run_id"] and chain["evaluate_run"]["metrics"]
    assert chain["validation"]["result_uri"]
    from mlops_ops.quickstart import manifests

    with mock.patch.dict(os.environ, {"MLOPS_ARTIFACT_ROOT": env["MLOPS_ARTIFACT_ROOT"]}):
        results = manifests(run["run_id"])
    # The version records the data it was trained on: the train partition this run's ingest froze.
    assert chain["dataset"]["digest"] == results["train"]["dataset_digest"] == results["ingest"]["train"]["digest"]
    assert chain["version"] == results["promote"]["version"]


def test_a_failing_pod_fails_its_task_with_the_pods_error_and_is_cleaned_up(
    airflow_on_kube: tuple[KubeCluster, dict[str, str]],
) -> None:
    cluster, env = airflow_on_kube
    missing = str(DATA_DIR / "no-such-batch.csv")  # under a data root every pod has: refused as missing
    output, run, states = dags_test(env, {"runner": "kubernetes", "data_uri": missing})

    assert run["state"] == "failed"
    assert states["ingest"] == "failed"
    assert all(
        states[t] in ("upstream_failed", None, "None") for t in ("validate", "train", "evaluate", "approve", "promote")
    )
    # The pod's own one-line error is in the task log, and became the task's failure message.
    assert f"mlops-ops: error: DataError: source '{missing}' not found" in output
    assert f"step ingest failed: DataError: source '{missing}' not found" in output
    # A data error is final: one pod, no retry; and it was deleted.
    [pod] = pods_of(cluster, run["run_id"])
    assert pod["metadata"]["labels"]["task_id"] == "ingest"
    assert cluster.kubelet.runs[(pod["metadata"]["namespace"], pod["metadata"]["name"])].exit_code == 3
    assert cluster.api.raw_pods() == []
