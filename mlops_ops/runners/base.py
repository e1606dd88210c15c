"""What every runner is given (the step's command line and environment) and what it returns."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mlops_ops.context import RunContext
from mlops_ops.errors import ERROR_PREFIX

ENTRYPOINT = "mlops-ops"


@dataclass(frozen=True)
class StepInvocation:
    """One try of one step: the same argument list and environment whether it runs locally or in a pod."""

    step: str
    spec: dict[str, Any]
    ctx: RunContext
    env: dict[str, str] = field(default_factory=dict)
    #: Credentials: handed to a local process as environment, to a pod through a Kubernetes Secret.
    secret_env: dict[str, str] = field(default_factory=dict, repr=False)
    result_uri: str | None = None

    def args(self) -> list[str]:
        """Arguments after the entrypoint."""
        args = [
            "step", self.step,
            "--spec", json.dumps(self.spec, sort_keys=True, separators=(",", ":")),
            "--pipeline", self.ctx.pipeline,
            "--run-id", self.ctx.run_id,
            "--step-id", self.ctx.step,
            "--try-number", str(self.ctx.try_number),
        ]  # fmt: skip
        if self.result_uri:
            args += ["--result", self.result_uri]
        return args

    def argv(self) -> list[str]:
        """The full command line, entrypoint first."""
        return [ENTRYPOINT, *self.args()]


class StepFailed(Exception):
    """The step process ended with a non-zero exit code; ``message`` is its one-line error."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


class Runner(Protocol):
    """Runs a step invocation and returns its result manifest; everything an operator calls on a runner."""

    def run(self, invocation: StepInvocation, log: Callable[[str], None], context: Any = None) -> dict[str, Any]:
        """Run the step to completion and return its result manifest (StepFailed on a non-zero exit)."""
        ...

    def resume(
        self, invocation: StepInvocation, event: dict[str, Any], log: Callable[[str], None], context: Any
    ) -> dict[str, Any]:
        """Finish a run that deferred (a trigger fired with ``event``)."""
        ...

    def on_kill(self) -> None:
        """Stop the running step: the task was killed or timed out."""
        ...


def parse_result(stdout: str) -> dict[str, Any]:
    """The result manifest a step printed: the last line of stdout that is a JSON object."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            parsed = json.loads(line)
            if isinstance(parsed, dict):
                return parsed
    raise StepFailed(1, "the step printed no result manifest")


def error_line(lines: list[str]) -> str | None:
    """The step's one-line error among its stderr lines, if it printed one."""
    for line in reversed(lines):
        if line.startswith(ERROR_PREFIX):
            return line.removeprefix(ERROR_PREFIX)
    return None
