"""Pod settings of the Kubernetes runner: a pydantic model with restricted-by-default values, no heavy imports.

Settings come, in increasing precedence, from the field defaults, the environment (``MLOPS_STEP_IMAGE``,
``MLOPS_K8S_NAMESPACE``, ``MLOPS_K8S_CREDENTIALS_SECRET``, ``MLOPS_POD_POLICY``), a settings document named
by ``MLOPS_POD_SETTINGS`` (a YAML/JSON file path, or inline JSON), the document's ``steps.<name>`` section,
and the operator's ``runner_options``. ``pod_policy`` is the deployment's alone: ``runner_options`` come
from a run and may not set it. Everything here is plain data: the runner turns it into Kubernetes objects
when a step runs.
"""

from __future__ import annotations

import json
import os
import re
from collections import deque
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlops_ops.errors import SpecError
from mlops_ops.runners.pod_policy import POLICY_ENV, POLICY_KEY, RESTRICTED, PodPolicy
from mlops_ops.specs import validate_spec

IMAGE_ENV = "MLOPS_STEP_IMAGE"
NAMESPACE_ENV = "MLOPS_K8S_NAMESPACE"
CREDENTIALS_SECRET_ENV = "MLOPS_K8S_CREDENTIALS_SECRET"
SETTINGS_ENV = "MLOPS_POD_SETTINGS"

#: The step image's user (``docker/Dockerfile`` creates it with this uid and gid).
STEP_UID = 10001
#: Where the writable scratch volume is mounted; the root filesystem is read-only. (bandit B108 is about
#: shared temporary folders on a host; this is a mount point inside the pod's own filesystem.)
SCRATCH_PATH = "/tmp"  # nosec B108
SCRATCH_VOLUME = "scratch"
CONTAINER_NAME = "step"

_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


class Resources(BaseModel):
    """CPU, memory and extended resources (``nvidia.com/gpu`` goes in ``limits``) of the step container."""

    model_config = ConfigDict(extra="forbid")

    requests: dict[str, str] = Field(default_factory=lambda: {"cpu": "500m", "memory": "1Gi"})
    limits: dict[str, str] = Field(default_factory=lambda: {"memory": "4Gi"})

    @field_validator("requests", "limits", mode="before")
    @classmethod
    def _quantities(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out = {}
        for name, quantity in value.items():
            text = str(quantity)
            if not _QUANTITY.match(text):
                raise ValueError(f"{name}: {quantity!r} is not a Kubernetes quantity such as '500m', '2Gi' or '1'")
            out[str(name)] = text
        return out


class PodSettings(BaseModel):
    """How each step's pod is built. Defaults meet the Kubernetes "restricted" Pod Security Standard."""

    model_config = ConfigDict(extra="forbid")

    # Where and what.
    image: str | None = Field(
        default_factory=lambda: _env(IMAGE_ENV),
        description=f"Step image, e.g. registry.example.com/mlops-ops:0.1.0 (default ${IMAGE_ENV}).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[str] = Field(default_factory=list)
    namespace: str | None = Field(
        default_factory=lambda: _env(NAMESPACE_ENV),
        description=f"Namespace of the pods (default ${NAMESPACE_ENV}, else the connection's, else 'default').",
    )
    service_account: str | None = Field(default=None, description="Service account of the step pods.")
    automount_service_account_token: bool = Field(
        default=False, description="Steps never call the Kubernetes API, so no token is mounted."
    )

    # Scheduling.
    resources: Resources = Field(default_factory=Resources)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] | None = None
    priority_class_name: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    pod_template_file: str | None = Field(
        default=None, description="Base pod template; the pod built from it must still meet pod_policy."
    )

    # Environment: plain values here, credentials only by reference.
    env: dict[str, str] = Field(default_factory=dict, description="Extra non-secret environment variables.")
    env_from_secrets: list[str] = Field(default_factory=list, description="Secrets whose keys all become env vars.")
    env_from_config_maps: list[str] = Field(default_factory=list, description="ConfigMaps whose keys become env vars.")
    credentials_secret: str | None = Field(
        default_factory=lambda: _env(CREDENTIALS_SECRET_ENV),
        description="Secret holding the step's credentials, one key per variable (secretKeyRef).",
    )
    forward_store_env: bool = Field(
        default=True,
        description="Give pods the worker's artifact root and MLflow URIs unless the operator sets them.",
    )

    # Security (restricted profile).
    pod_policy: PodPolicy = Field(
        default_factory=lambda: _env(POLICY_ENV) or RESTRICTED,
        validate_default=True,
        description="Pod Security Standard every step pod must meet; set by the deployment only.",
    )
    run_as_user: int = Field(default=STEP_UID, ge=1)
    run_as_group: int = Field(default=STEP_UID, ge=1)
    scratch_size_limit: str = Field(default="4Gi", description="Size limit of the /tmp emptyDir.")

    # Connection and lifecycle.
    kubernetes_conn_id: str | None = "kubernetes_default"
    config_file: str | None = None
    cluster_context: str | None = None
    in_cluster: bool | None = None
    schedule_timeout_seconds: int = Field(default=600, ge=1, description="Time to get scheduled (node scale-up).")
    startup_timeout_seconds: int = Field(default=300, ge=1, description="Time from scheduled to running (pull).")
    startup_check_interval_seconds: int = Field(default=2, ge=1, description="Poll interval while it starts.")
    active_deadline_seconds: int | None = Field(default=None, ge=1, description="Hard limit of the pod's run.")
    termination_grace_period_seconds: int = Field(default=30, ge=0)
    deferrable: bool = Field(default=False, description="Wait in the triggerer instead of a worker slot.")
    poll_interval: float = Field(default=5.0, gt=0)
    log_events_on_startup: bool = True

    # Log bound.
    log_max_bytes: int = Field(default=1_000_000, ge=0, description="Pod log bytes copied to the task log.")
    log_tail_lines: int = Field(default=40, ge=0, description="Last lines shown when the log was cut.")

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
        return value

    @field_validator("image_pull_secrets", "env_from_secrets", "env_from_config_maps", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        # "a,b" is accepted as well as ["a", "b"], as the provider does for image_pull_secrets.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    # ------------------------------------------------------------------------------------ building

    def pod_security_context(self) -> dict[str, Any]:
        """The pod-level security context of the restricted profile."""
        return {
            "runAsNonRoot": True,
            "runAsUser": self.run_as_user,
            "runAsGroup": self.run_as_group,
            "fsGroup": self.run_as_group,
            "seccompProfile": {"type": "RuntimeDefault"},
        }

    def container_security_context(self) -> dict[str, Any]:
        """The container-level security context: no privilege escalation, no capabilities, read-only root."""
        return {
            "runAsNonRoot": True,
            "runAsUser": self.run_as_user,
            "runAsGroup": self.run_as_group,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }

    def scratch_env(self) -> dict[str, str]:
        """Variables that send every write (home, caches, temporary files) to the scratch volume."""
        return {
            "HOME": SCRATCH_PATH,
            "MLOPS_HOME": f"{SCRATCH_PATH}/mlops",
            "TMPDIR": SCRATCH_PATH,
            "XDG_CACHE_HOME": f"{SCRATCH_PATH}/.cache",
            "MPLCONFIGDIR": f"{SCRATCH_PATH}/.matplotlib",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        }


def _load_document(text: str, where: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{where} is not valid YAML or JSON: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"{where} must be a mapping of pod settings, got {type(data).__name__}")
    return data


def settings_document() -> dict[str, Any]:
    """The deployment's pod settings named by ``$MLOPS_POD_SETTINGS``: a file path or inline JSON."""
    value = _env(SETTINGS_ENV)
    if value is None:
        return {}
    if value.lstrip().startswith("{"):
        return _load_document(value, f"${SETTINGS_ENV}")
    path = Path(value).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read pod settings file {str(path)!r} (${SETTINGS_ENV}): {exc.strerror}") from None
    return _load_document(text, str(path))


def resolve_settings(step: str, options: dict[str, Any] | None = None) -> PodSettings:
    """The pod settings of ``step``: environment, then the settings document and its step section, then options."""
    if options and POLICY_KEY in options:
        raise SpecError(
            f"runner_options may not set {POLICY_KEY} ({options[POLICY_KEY]!r}): a run cannot relax the pod policy; "
            f"remove it, or have the deployment set {POLICY_KEY} in ${SETTINGS_ENV} (or ${POLICY_ENV})"
        )
    document = dict(settings_document())
    per_step = document.pop("steps", None) or {}
    if not isinstance(per_step, dict):
        raise SpecError(f"'steps' in the pod settings must map step names to settings, got {per_step!r}")
    merged = {**document, **(per_step.get(step) or {}), **(options or {})}
    return validate_spec(PodSettings, merged, f"pod settings for step {step}")


class LogBudget:
    """Bounds what a pod's log puts in the task log: the first ``max_bytes``, then only a count and a tail.

    Every line is remembered in a short tail, whether it was shown or not, so the step's one-line error
    (its last stderr line) is found even in a log that was cut.
    """

    def __init__(self, max_bytes: int, tail_lines: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self.omitted = 0
        self.tail: deque[str] = deque(maxlen=max(tail_lines, 1))
        self._tail_lines = tail_lines
        self._omitted_tail: deque[str] = deque(maxlen=max(tail_lines, 1))

    def admit(self, line: str) -> bool:
        """Record ``line``; whether it may still be copied to the task log."""
        self.tail.append(line.rstrip())
        size = len(line.encode("utf-8", errors="replace")) + 1
        if self.omitted == 0 and self.used + size <= self.max_bytes:
            self.used += size
            return True
        self.omitted += 1
        self._omitted_tail.append(line)
        return False

    def summary(self) -> list[str]:
        """Lines to log after the pod ended when some were cut: a notice and the last few lines."""
        if not self.omitted:
            return []
        shown = list(self._omitted_tail)[-self._tail_lines :] if self._tail_lines else []
        notice = (
            f"... pod log cut after {self.used} bytes (log_max_bytes): {self.omitted} lines not shown"
            + (f", the last {len(shown)} follow" if shown else "")
            + "; the whole log is in the pod while it exists, or in your cluster's log store"
        )
        return [notice, *shown]

    def lines(self) -> list[str]:
        """The last lines the pod printed."""
        return list(self.tail)


def dumps_settings(settings: PodSettings) -> str:
    """The settings as JSON, for logs and docs (they hold no secret values, only secret names)."""
    return json.dumps(settings.model_dump(mode="json"), sort_keys=True)
