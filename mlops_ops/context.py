"""The run context a step executes in: which pipeline, which run, which step, which try."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: XCom key under which a task that reused an identical earlier run's result says whose it is:
#: ``pipeline P run R (try N, manifest URI)`` (the manifest it returns is that run's, unchanged).
REUSED_XCOM = "reused_from"


class RunContext(BaseModel):
    """Identifies one try of one step of one pipeline run; every artifact and MLflow run is keyed by it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pipeline: str = Field(default="adhoc", min_length=1, description="Pipeline id (the DAG id under Airflow).")
    run_id: str = Field(default="manual", min_length=1, description="Pipeline run id (the DAG run id).")
    step: str = Field(min_length=1, description="Step or task id.")
    try_number: int = Field(default=1, ge=1)
    spec_digest: str | None = Field(default=None, description="sha256 of the step's spec; a retry has the same one.")

    @property
    def run_key(self) -> str:
        """A store-safe key for the pipeline run."""
        return f"{safe(self.pipeline)}/{safe(self.run_id)}"

    def result_key(self) -> str:
        """Store key where this try's result manifest is written."""
        return f"runs/{self.run_key}/{safe(self.step)}/try-{self.try_number}/result.json"


def safe(value: str) -> str:
    """Make a value usable as one segment of a store key or a Kubernetes label."""
    return _UNSAFE.sub("_", value).strip("_") or "_"
