"""Runners execute ``mlops-ops step`` somewhere: as a local process, or in a Kubernetes pod."""

from __future__ import annotations

from mlops_ops.runners.base import Runner, StepFailed, StepInvocation

__all__ = ["Runner", "StepFailed", "StepInvocation", "get_runner"]


def get_runner(name: str, **settings: object) -> Runner:
    """The runner called ``name`` (``local`` or ``kubernetes``), configured with ``settings``."""
    if name == "local":
        from mlops_ops.runners.local import LocalRunner

        return LocalRunner(**settings)  # type: ignore[arg-type]
    if name == "kubernetes":
        from mlops_ops.runners.kubernetes import KubernetesRunner

        return KubernetesRunner(**settings)  # type: ignore[arg-type]
    raise ValueError(f"unknown runner {name!r}: use 'local' or 'kubernetes'")
