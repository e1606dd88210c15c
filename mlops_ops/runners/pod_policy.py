"""The pod policy: the step pod the provider is about to create meets a Kubernetes Pod Security Standard.

The provider builds the final pod from a ``pod_template_file``, ``full_pod_spec``, the runner's settings
and the deployment's ``pod_mutation_hook``. Whatever each contributed, this module checks the result:

- under ``restricted`` (the default), container security fields left unset are filled in with the
  restricted values on every container, init containers and sidecars included
  (``allowPrivilegeEscalation: false``, ``runAsNonRoot: true``, ``seccompProfile: RuntimeDefault``,
  ``capabilities.drop`` including ``ALL``);
- a field set to a value the policy forbids is refused: the pod is never created, and the error names
  every such field in one line.

Only the deployment may relax the policy to ``baseline`` (``pod_policy`` in ``$MLOPS_POD_SETTINGS``, or
``$MLOPS_POD_POLICY``); a run's ``runner_options`` cannot (see :func:`mlops_ops.runners.pod.resolve_settings`).
The checks work on the pod's JSON form, so they need no Kubernetes import.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mlops_ops.errors import SpecError

if TYPE_CHECKING:
    from kubernetes.client import models as k8s

POLICY_ENV = "MLOPS_POD_POLICY"
#: The key of the deployment's settings document that names the policy.
POLICY_KEY = "pod_policy"
RESTRICTED = "restricted"
BASELINE = "baseline"
PodPolicy = Literal["restricted", "baseline"]

CONTAINER_KINDS = ("initContainers", "containers", "ephemeralContainers")
#: Volume types the restricted profile allows (baseline allows every type but hostPath).
RESTRICTED_VOLUMES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
#: Capabilities a container may add: restricted allows only NET_BIND_SERVICE, baseline the runtime defaults.
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
BASELINE_CAPABILITIES = frozenset(
    {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP",
     "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
)  # fmt: skip
#: Namespaced sysctls that are isolated from other pods (the baseline "safe" set).
SAFE_SYSCTLS = frozenset(
    {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
     "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
     "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
     "net.ipv4.tcp_keepalive_probes"}
)  # fmt: skip
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
#: Container security fields the restricted policy fills in when neither the container nor the pod sets them.
FORCED: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True)
class Violation:
    """One field of the pod that the policy forbids, and the weakest policy that forbids it."""

    path: str
    value: Any
    rule: str
    level: str = BASELINE

    def __str__(self) -> str:
        return f"{self.path}={json.dumps(self.value, separators=(',', ':'))} ({self.rule})"


# --------------------------------------------------------------------------------------------- public


def apply_policy(pod: k8s.V1Pod, policy: str, log: Callable[[str], None]) -> k8s.V1Pod:
    """The pod to create: ``pod`` with the restricted fields filled in; :class:`SpecError` if it breaks ``policy``."""
    from kubernetes.client import ApiClient

    manifest = ApiClient().sanitize_for_serialization(pod)
    try:
        forced = enforce(manifest, policy)
    except SpecError as exc:
        log(f"refused to create the step pod: {exc}")
        raise
    if not forced:
        return pod
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator

    log(f"pod policy {policy}: set {', '.join(forced)}")
    return PodGenerator.deserialize_model_dict(manifest)


def enforce(manifest: dict[str, Any], policy: str) -> list[str]:
    """Fill in and check a pod manifest (JSON form) in place; the fields filled in, or :class:`SpecError`."""
    if policy not in (RESTRICTED, BASELINE):
        raise SpecError(f"unknown pod policy {policy!r}: use {RESTRICTED!r} or {BASELINE!r}")
    forced = force_restricted(manifest) if policy == RESTRICTED else []
    found = violations(manifest, policy)
    if found:
        raise SpecError(refusal(policy, found))
    return forced


def violations(manifest: dict[str, Any], policy: str) -> list[Violation]:
    """Every field of the manifest that ``policy`` forbids."""
    spec = manifest.get("spec") or {}
    found = [*_pod_violations(spec, manifest.get("metadata") or {}), *_volume_violations(spec)]
    for path, container in containers(spec):
        found += _container_violations(path, container)
    return [v for v in found if policy == RESTRICTED or v.level == BASELINE]


def refusal(policy: str, found: list[Violation]) -> str:
    """The one-line error: each field, what it must be, and who can change what."""
    fix = "change or remove these fields where they come from (pod_template_file, runner_options or pod_mutation_hook)"
    if policy == RESTRICTED and all(v.level == RESTRICTED for v in found):
        fix += (
            f"; or, if the deployment accepts them, set {POLICY_KEY}: {BASELINE} in its pod settings "
            "(a run's runner_options cannot)"
        )
    return f'the step pod breaks the "{policy}" pod policy: {"; ".join(map(str, found))}. To run it, {fix}'


def containers(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every container of the pod spec, with its path (``spec.initContainers[name]``)."""
    for kind in CONTAINER_KINDS:
        for container in spec.get(kind) or []:
            yield f"spec.{kind}[{container.get('name')}]", container


def force_restricted(manifest: dict[str, Any]) -> list[str]:
    """Fill in the restricted container security fields no container or pod sets; the paths filled in."""
    spec = manifest.get("spec") or {}
    pod_sc = spec.get("securityContext") or {}
    forced: list[str] = []
    for path, container in containers(spec):
        sc = container.setdefault("securityContext", {})
        for key, value in FORCED.items():
            if sc.get(key) is None and pod_sc.get(key) is None:
                sc[key] = value
                forced.append(f"{path}.securityContext.{key}")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            sc["capabilities"] = {**caps, "drop": [*(caps.get("drop") or []), "ALL"]}
            forced.append(f"{path}.securityContext.capabilities.drop")
    return forced


# ------------------------------------------------------------------------------------------- checks


def _pod_violations(spec: dict[str, Any], metadata: dict[str, Any]) -> Iterator[Violation]:
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            yield Violation(f"spec.{flag}", spec[flag], "host namespaces are never shared: remove it or set false")
    sc = spec.get("securityContext") or {}
    yield from _context_violations("spec.securityContext", sc)
    for sysctl in sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            yield Violation(f"spec.securityContext.sysctls[{sysctl.get('name')}]", sysctl.get("value"),
                            "an unsafe sysctl: only namespaced, isolated sysctls are allowed")  # fmt: skip
    for key, value in (metadata.get("annotations") or {}).items():
        if key.startswith(APPARMOR_ANNOTATION) and value != "runtime/default" and not value.startswith("localhost/"):
            yield Violation(f"metadata.annotations[{key}]", value, "AppArmor must be runtime/default or localhost/*")


def _volume_violations(spec: dict[str, Any]) -> Iterator[Violation]:
    for volume in spec.get("volumes") or []:
        for kind in sorted(set(volume) - {"name"}):
            path = f"spec.volumes[{volume.get('name')}].{kind}"
            if kind == "hostPath":
                yield Violation(path, volume[kind], "hostPath volumes are never allowed: use emptyDir or a PVC")
            elif kind not in RESTRICTED_VOLUMES:
                allowed = ", ".join(sorted(RESTRICTED_VOLUMES))
                yield Violation(path, volume[kind], f"allowed volume types: {allowed}", RESTRICTED)


def _container_violations(path: str, container: dict[str, Any]) -> Iterator[Violation]:
    sc = container.get("securityContext") or {}
    where = f"{path}.securityContext"
    yield from _context_violations(where, sc)
    if sc.get("privileged"):
        yield Violation(f"{where}.privileged", sc["privileged"], "privileged containers are never allowed")
    if sc.get("allowPrivilegeEscalation"):
        yield Violation(f"{where}.allowPrivilegeEscalation", True, "must be false", RESTRICTED)
    if sc.get("procMount") not in (None, "Default"):
        yield Violation(f"{where}.procMount", sc["procMount"], "must be Default or unset")
    yield from _capability_violations(where, sc.get("capabilities") or {})
    for index, port in enumerate(container.get("ports") or []):
        if port.get("hostPort"):
            yield Violation(f"{path}.ports[{index}].hostPort", port["hostPort"],
                            "host ports are never allowed: remove it and reach the pod through a Service")  # fmt: skip


def _capability_violations(where: str, caps: dict[str, Any]) -> Iterator[Violation]:
    added = set(caps.get("add") or [])
    if added - BASELINE_CAPABILITIES:
        yield Violation(f"{where}.capabilities.add", sorted(added), "only NET_BIND_SERVICE may be added")
    elif added - RESTRICTED_CAPABILITIES:
        yield Violation(f"{where}.capabilities.add", sorted(added), "only NET_BIND_SERVICE may be added", RESTRICTED)
    if "ALL" not in (caps.get("drop") or []):
        yield Violation(f"{where}.capabilities.drop", caps.get("drop") or [], "must include ALL", RESTRICTED)


def _context_violations(where: str, sc: dict[str, Any]) -> Iterator[Violation]:
    """Checks shared by the pod's and each container's security context."""
    if sc.get("runAsUser") == 0:
        yield Violation(f"{where}.runAsUser", 0, "must be a non-zero uid, e.g. the step image's 10001", RESTRICTED)
    if sc.get("runAsNonRoot") is False:
        yield Violation(f"{where}.runAsNonRoot", False, "must be true", RESTRICTED)
    for field in ("seccompProfile", "appArmorProfile"):
        if (sc.get(field) or {}).get("type") == "Unconfined":
            yield Violation(f"{where}.{field}.type", "Unconfined", "must be RuntimeDefault or Localhost")
    if (sc.get("windowsOptions") or {}).get("hostProcess"):
        yield Violation(f"{where}.windowsOptions.hostProcess", True, "host processes are never allowed")
    selinux = sc.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        yield Violation(f"{where}.seLinuxOptions", selinux, "only the container SELinux types, with no user or role")
