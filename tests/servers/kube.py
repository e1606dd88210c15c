"""A Kubernetes API server on loopback (kmock) and a fake kubelet that runs each pod as a local process.

``KubeAPI`` serves the Kubernetes API from memory in a background thread with its own event loop. On
top of kmock's emulator it adds what the KubernetesPodOperator relies on and kmock leaves out: a
created pod gets a uid, a creation time and phase ``Pending``; lists honour label and field selectors;
``pods/log`` serves the container's log (follow, timestamps, sinceSeconds, tailLines); events list empty.

``FakeKubelet`` plays the node: it polls for pods, resolves their environment (``value``, ``secretKeyRef``,
``configMapKeyRef``, ``envFrom``) from objects stored in the API, runs ``command + args`` as a local process
with that environment, reports phase, exit code and termination message through the pods' status, and
kills the process when its pod is deleted. Each ``emptyDir`` becomes a fresh folder, and environment
values that point into its mount path are rewritten to that folder (the process shares the host
filesystem otherwise).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers._proc import unavailable

POLL_SECONDS = 0.1
#: Grace between SIGTERM and SIGKILL when a pod is deleted under a running process.
KILL_GRACE_SECONDS = 5.0
#: What the kubelet keeps of a failed container's log as its termination message (FallbackToLogsOnError).
TERMINATION_LOG_LINES = 80
TERMINATION_LOG_BYTES = 2048


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _flag(value: str | None) -> bool:
    # The Python client sends booleans as "True"; kubectl and Go clients as "true".
    return (value or "").lower() in ("true", "1")


def _seconds(stamp: str) -> float:
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC).timestamp()


# ------------------------------------------------------------------------------------------ selectors


def _split_terms(selector: str) -> list[str]:
    """Split a selector on commas that are not inside ``in (a,b)`` sets."""
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current.strip())
    return terms


_SET_TERM = re.compile(r"^([^\s!=]+)\s+(in|notin)\s+\((.*)\)$")


def label_selector_matches(selector: str | None, labels: dict[str, str]) -> bool:
    """Whether ``labels`` satisfy a Kubernetes label selector (=, ==, !=, in, notin, key, !key)."""
    return all(_label_term_matches(term, labels) for term in _split_terms(selector or ""))


def _label_term_matches(term: str, labels: dict[str, str]) -> bool:
    if match := _SET_TERM.match(term):
        values = {v.strip() for v in match[3].split(",")}
        return (labels.get(match[1]) in values) == (match[2] == "in")
    if "!=" in term:
        key, value = (part.strip() for part in term.split("!=", 1))
        return labels.get(key) != value
    if "=" in term:
        key, value = (part.strip() for part in term.replace("==", "=").split("=", 1))
        return labels.get(key) == value
    if term.startswith("!"):
        return term[1:].strip() not in labels
    return term in labels


def field_selector_matches(selector: str | None, obj: dict[str, Any]) -> bool:
    """Whether ``obj`` satisfies a field selector over dotted paths (``metadata.name=x``, ``status.phase!=y``)."""
    for term in _split_terms(selector or ""):
        negate = "!=" in term
        path, value = (part.strip() for part in term.replace("==", "=").replace("!=", "=").split("=", 1))
        actual: Any = obj
        for part in path.split("."):
            actual = actual.get(part) if isinstance(actual, dict) else None
        if (str(actual) == value) == negate:
            return False
    return True


# ------------------------------------------------------------------------------------------ pod logs


class LogBuffer:
    """One container's log: timestamped lines, appended by the kubelet and read by API followers."""

    def __init__(self) -> None:
        self._lines: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.closed = False

    def append(self, text: str) -> None:
        with self._lock:
            self._lines.append((_now(), text))

    def close(self) -> None:
        self.closed = True

    def since(self, index: int) -> tuple[list[tuple[str, str]], bool]:
        """Lines from ``index`` on, and whether the container has ended (nothing more will come)."""
        closed = self.closed  # read before the lines, so no line appended before closing is missed
        with self._lock:
            return self._lines[index:], closed

    def text(self) -> str:
        with self._lock:
            return "\n".join(text for _, text in self._lines)


# ---------------------------------------------------------------------------------------------- API


class KubeAPI:
    """kmock's Kubernetes emulator on a loopback port, served from a background thread."""

    def __init__(self) -> None:
        self.url = ""
        self.logs: dict[tuple[str, str], LogBuffer] = {}
        #: Every pod ever created, as the API stored it (status and later changes aside).
        self.created: list[dict[str, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="kmock", daemon=True)
        self._emulator: Any = None

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 30.0) -> KubeAPI:
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError(f"kmock did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        import kmock

        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # one line per request otherwise
        async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
            self._emulator = emulator
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.url = str(server.url).rstrip("/")
            pods = kmock.resource("v1/pods")
            emulator[kmock.action.CREATE, pods] << self._on_create_pod
            emulator["get", pods, kmock.subresource("log")] << self._on_pod_log
            emulator[kmock.action.LIST, pods] << self._on_list
            emulator[kmock.action.LIST, kmock.resource("v1/events")] << {
                "kind": "EventList",
                "apiVersion": "v1",
                "metadata": {},
                "items": [],
            }
            self._ready.set()
            await self._stop.wait()

    # ------------------------------------------------------------------------------------ reactions

    def _objects(self, resource: Any, namespace: str | None) -> Iterator[tuple[tuple[Any, str, str], Any]]:
        for key, obj in self._emulator.objects.items():
            res, ns, _name = key
            if res == resource and not obj.deleted and (namespace is None or ns == namespace):
                yield key, obj

    def _on_create_pod(self, request: Any) -> dict[str, Any]:
        data = request.data or {}
        namespace = request.namespace or data.get("metadata", {}).get("namespace") or "default"
        name = data.get("metadata", {}).get("name")
        obj = self._emulator.objects[request.resource, namespace, name]
        obj.patch({
            "metadata": {"namespace": namespace, "uid": str(uuid.uuid4()), "creationTimestamp": _now()[:19] + "Z",
                         "resourceVersion": str(time.monotonic_ns())},
            "status": {"phase": "Pending", "conditions": [], "qosClass": "Burstable"},
        })  # fmt: skip
        self.created.append(copy.deepcopy(dict(obj.raw)))
        return dict(obj.raw)

    def _on_list(self, request: Any) -> dict[str, Any]:
        labels = request.params.get("labelSelector")
        fields = request.params.get("fieldSelector")
        items = [
            dict(obj.raw)
            for _key, obj in self._objects(request.resource, request.namespace)
            if label_selector_matches(labels, (obj.raw.get("metadata") or {}).get("labels") or {})
            and field_selector_matches(fields, dict(obj.raw))
        ]
        return {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}

    def _on_pod_log(self, request: Any) -> AsyncIterator[bytes]:
        import kmock

        namespace, name = request.namespace, request.name
        if not any(key[2] == name for key, _ in self._objects(request.resource, namespace)):
            raise kmock.KubernetesObjectNotFoundError()
        buffer = self.logs.get((namespace, name))
        if buffer is None:
            raise kmock.KubernetesError(
                status=400, reason="BadRequest",
                message=f'container "step" in pod "{name}" is waiting to start: ContainerCreating',
            )  # fmt: skip
        return self._stream_log(buffer, dict(request.params))

    async def _stream_log(self, buffer: LogBuffer, params: dict[str, str]) -> AsyncIterator[bytes]:
        follow = _flag(params.get("follow"))
        stamps = _flag(params.get("timestamps"))
        since = float(params["sinceSeconds"]) if params.get("sinceSeconds") else None
        lines, _ = buffer.since(0)
        index = 0
        if since is not None:
            cutoff = time.time() - since
            index = next((i for i, (stamp, _) in enumerate(lines) if _seconds(stamp) >= cutoff), len(lines))
        if params.get("tailLines"):
            index = max(index, len(lines) - int(params["tailLines"]))
        yield b""  # start the response even when nothing has been printed yet
        while True:
            new, closed = buffer.since(index)
            index += len(new)
            if new:
                yield "".join(f"{stamp} {text}\n" if stamps else f"{text}\n" for stamp, text in new).encode()
            if closed or not follow:
                return
            await asyncio.sleep(POLL_SECONDS)

    # ------------------------------------------------------------------------------- test helpers

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """Write a kubeconfig for this server (token auth, plain HTTP on loopback)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "airflow", "user": {"token": "kmock"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "airflow", "namespace": namespace}}],
            "current-context": "kmock",
        }
        path.write_text(json.dumps(config, indent=2))
        return path

    def client(self) -> Any:
        """An official ``kubernetes`` CoreV1Api client for this server."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        return client.CoreV1Api(client.ApiClient(configuration))

    def raw_pods(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """The pods that exist now, as JSON."""
        api = self.client()
        if namespace:
            response = api.list_namespaced_pod(namespace, _preload_content=False)
        else:
            response = api.list_pod_for_all_namespaces(_preload_content=False)
        return list(json.loads(response.data)["items"])

    def create_secret(self, namespace: str, name: str, values: dict[str, str]) -> None:
        data = {key: base64.b64encode(value.encode()).decode() for key, value in values.items()}
        self.client().create_namespaced_secret(
            namespace, {"metadata": {"name": name, "namespace": namespace}, "type": "Opaque", "data": data}
        )

    def create_config_map(self, namespace: str, name: str, values: dict[str, str]) -> None:
        self.client().create_namespaced_config_map(
            namespace, {"metadata": {"name": name, "namespace": namespace}, "data": values}
        )


# ------------------------------------------------------------------------------------------ kubelet


@dataclass
class PodRun:
    """What the fake kubelet did with one pod."""

    namespace: str
    name: str
    pod: dict[str, Any] = field(repr=False)
    env: dict[str, str] = field(default_factory=dict, repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    exit_code: int | None = None
    killed: bool = False
    #: Monotonic clock when the process started and ended, to show that two runs never overlapped.
    started: float | None = None
    ended: float | None = None
    log: LogBuffer = field(default_factory=LogBuffer, repr=False)

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.pod.get("metadata", {}).get("labels") or {})


#: Decides what a pod runs instead of its own command: None to run ``command + args``, or another argv.
Override = Callable[[dict[str, Any]], "list[str] | None"]


def failing(code: int, line: str) -> list[str]:
    """An argv that prints ``line`` on stderr and exits with ``code``: a step failing its own way."""
    return [sys.executable, "-c", f"import sys; print({line!r}, file=sys.stderr); sys.exit({code})"]


class FakeKubelet:
    """Runs every pod the API holds as a local process and reports back through the pod's status."""

    def __init__(self, api: KubeAPI, root: Path, *, path: str | None = None, override: Override | None = None) -> None:
        self.api = api
        self.root = root
        self.path = path or os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"])
        self.override = override
        self.runs: dict[tuple[str, str], PodRun] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fake-kubelet", daemon=True)
        self._workers: list[threading.Thread] = []

    def start(self) -> FakeKubelet:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for run in self.runs.values():
            self._kill(run)
        for worker in self._workers:
            worker.join(timeout=KILL_GRACE_SECONDS + 5)

    # ----------------------------------------------------------------------------------------- loop

    def _loop(self) -> None:
        api = self.api.client()
        while not self._stop.is_set():
            try:
                pods = self.api.raw_pods()
            except Exception as exc:  # keep playing the node; the test sees the error list
                self.errors.append(f"list pods: {exc!r}")
                time.sleep(POLL_SECONDS)
                continue
            present = set()
            for pod in pods:
                key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
                present.add(key)
                if key not in self.runs:
                    run = PodRun(namespace=key[0], name=key[1], pod=pod)
                    self.runs[key] = run
                    worker = threading.Thread(target=self._run_pod, args=(api, run), daemon=True)
                    self._workers.append(worker)
                    worker.start()
            for key, run in self.runs.items():
                if key not in present and run.exit_code is None and not run.killed:
                    run.killed = True  # the pod was deleted under its process (on_kill, cleanup)
                    self._kill(run)
            time.sleep(POLL_SECONDS)

    # -------------------------------------------------------------------------------------- one pod

    def _run_pod(self, api: Any, run: PodRun) -> None:
        try:
            self._start_and_wait(api, run)
        except Exception as exc:
            self.errors.append(f"pod {run.name}: {exc!r}")

    def _start_and_wait(self, api: Any, run: PodRun) -> None:
        container = run.pod["spec"]["containers"][0]
        try:
            env = self._resolve_env(api, run.namespace, container)
        except LookupError as exc:
            self._patch(
                api,
                run,
                {
                    "phase": "Pending",
                    "containerStatuses": [
                        _status(container, {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}})
                    ],
                },
            )
            return
        volumes = self._mount_empty_dirs(run)
        run.env = {name: _remap(value, volumes) for name, value in env.items()}
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        override = self.override(run.pod) if self.override else None
        if override is not None:
            argv = override
        started = _now()
        run.started = time.monotonic()
        run.process = subprocess.Popen(
            argv,
            env={"PATH": self.path, "LANG": "C.UTF-8", **run.env},
            cwd=volumes.get("/tmp", str(self.root)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # a container's log interleaves both streams
            start_new_session=True,
        )
        self.api.logs[(run.namespace, run.name)] = run.log
        self._patch(api, run, {
            "phase": "Running", "startTime": started, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": started}
                           for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [_status(container, {"running": {"startedAt": started}}, ready=True)],
        })  # fmt: skip
        assert run.process.stdout is not None
        for raw in run.process.stdout:
            run.log.append(raw.decode("utf-8", errors="replace").rstrip("\n"))
        code = run.process.wait()
        run.ended = time.monotonic()
        run.exit_code = code
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started,
            "finishedAt": _now(),
        }
        if code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            tail = "\n".join(run.log.text().splitlines()[-TERMINATION_LOG_LINES:])
            terminated["message"] = tail.encode()[-TERMINATION_LOG_BYTES:].decode("utf-8", errors="replace")
        # Report the end before closing the log, as a kubelet does: a follower that sees the stream end
        # finds the container terminated.
        if not run.killed:
            self._patch(api, run, {
                "phase": "Succeeded" if code == 0 else "Failed",
                "containerStatuses": [_status(container, {"terminated": terminated})],
            })  # fmt: skip
        run.log.close()

    def _patch(self, api: Any, run: PodRun, status: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            api.patch_namespaced_pod_status(run.name, run.namespace, {"status": status})
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report to
                raise

    def _mount_empty_dirs(self, run: PodRun) -> dict[str, str]:
        """A fresh folder per emptyDir volume; returns mount path -> folder."""
        spec = run.pod["spec"]
        empty = {v["name"] for v in spec.get("volumes") or [] if "emptyDir" in v}
        mounts: dict[str, str] = {}
        for mount in spec["containers"][0].get("volumeMounts") or []:
            if mount["name"] in empty:
                folder = self.root / run.name / mount["name"]
                folder.mkdir(parents=True, exist_ok=True)
                mounts[mount["mountPath"].rstrip("/") or "/"] = str(folder)
        return mounts

    def _resolve_env(self, api: Any, namespace: str, container: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "secretRef" in source:
                env |= {prefix + k: v for k, v in self._secret(api, namespace, source["secretRef"]["name"]).items()}
            if "configMapRef" in source:
                env |= {
                    prefix + k: v for k, v in self._config_map(api, namespace, source["configMapRef"]["name"]).items()
                }
        for var in container.get("env") or []:
            ref = var.get("valueFrom") or {}
            if "secretKeyRef" in ref:
                values = self._secret(api, namespace, ref["secretKeyRef"]["name"])
                key = ref["secretKeyRef"]["key"]
                if key not in values:
                    raise LookupError(f"couldn't find key {key} in Secret {namespace}/{ref['secretKeyRef']['name']}")
                env[var["name"]] = values[key]
            elif "configMapKeyRef" in ref:
                env[var["name"]] = self._config_map(api, namespace, ref["configMapKeyRef"]["name"])[
                    ref["configMapKeyRef"]["key"]
                ]
            else:
                env[var["name"]] = var.get("value", "")
        return env

    @staticmethod
    def _secret(api: Any, namespace: str, name: str) -> dict[str, str]:
        from kubernetes.client.exceptions import ApiException

        try:
            secret = api.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            raise LookupError(f'secret "{name}" not found') from exc
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    @staticmethod
    def _config_map(api: Any, namespace: str, name: str) -> dict[str, str]:
        from kubernetes.client.exceptions import ApiException

        try:
            return dict(api.read_namespaced_config_map(name, namespace).data or {})
        except ApiException as exc:
            raise LookupError(f'configmap "{name}" not found') from exc

    @staticmethod
    def _kill(run: PodRun) -> None:
        process = run.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _status(container: dict[str, Any], state: dict[str, Any], *, ready: bool = False) -> dict[str, Any]:
    return {
        "name": container["name"],
        "image": container.get("image", ""),
        "imageID": "",
        "ready": ready,
        "restartCount": 0,
        "started": "running" in state,
        "state": state,
    }


def _remap(value: str, mounts: dict[str, str]) -> str:
    """Rewrite a path inside an emptyDir's mount path to the folder standing in for it."""
    for mount, folder in mounts.items():
        if value == mount or value.startswith(mount + "/"):
            return folder + value[len(mount) :]
    return value


# ------------------------------------------------------------------------------------------ fixture


@dataclass
class KubeCluster:
    """The API server and the kubelet of one test session, and a kubeconfig that reaches them."""

    api: KubeAPI
    kubelet: FakeKubelet
    kubeconfig: Path

    def runs(self, **labels: str) -> list[PodRun]:
        """The pods the kubelet ran whose labels include ``labels``."""
        return [run for run in self.kubelet.runs.values() if labels.items() <= run.labels.items()]


@contextlib.contextmanager
def kube_cluster(root: Path, *, override: Override | None = None) -> Iterator[KubeCluster]:
    """Start kmock and the fake kubelet; stop both (and every process still running) on exit."""
    try:
        import kmock  # noqa: F401
    except ImportError as exc:
        unavailable(f"kmock is not installed: {exc}")
    root.mkdir(parents=True, exist_ok=True)
    api = KubeAPI().start()
    kubelet = FakeKubelet(api, root / "kubelet", override=override).start()
    try:
        yield KubeCluster(api=api, kubelet=kubelet, kubeconfig=api.kubeconfig(root / "kubeconfig.json"))
    finally:
        kubelet.stop()
        api.stop()


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[KubeCluster]:
    """A Kubernetes API on loopback with a fake kubelet, for one test."""
    with kube_cluster(tmp_path / "kube") as cluster:
        yield cluster
