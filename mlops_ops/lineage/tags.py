"""The vocabulary mlops-ops writes to MLflow: every tag key, in one place, shared by writers and readers.

A rename is one edit here. Keys that carry a name (a step, an alias, a metric) are built by the
functions below instead of being spelled where they are used.
"""

from __future__ import annotations

PREFIX = "mlops."

# Identity of runs (child runs of steps under one parent run per pipeline run).
RUN_KEY = "mlops.run_key"
ROLE = "mlops.role"
STEP = "mlops.step"
SPEC_DIGEST = "mlops.spec_digest"
PIPELINE = "mlops.pipeline"
PIPELINE_RUN_ID = "mlops.run_id"
TRY_NUMBER = "mlops.try_number"
PACKAGE_VERSION = "mlops.version"
STEP_IMAGE = "mlops.step_image"
STATE = "mlops.state"
ROLE_PIPELINE, ROLE_STEP = "pipeline", "step"

# Data.
DATASET_URI = "mlops.dataset.uri"
DATASET_DIGEST = "mlops.dataset.digest"
EVAL_DATASET_DIGEST = "mlops.eval_dataset.digest"
VALIDATION_SUCCESS = "mlops.validation.success"
VALIDATION_RESULT_URI = "mlops.validation.result_uri"
VALIDATION_REPORT_URI = "mlops.validation.report_uri"

# Training.
TRAIN_FINGERPRINT = "mlops.train.fingerprint"
TRAIN_CACHED_FROM = "mlops.train.cached_from"
TRAIN_RUN_ID = "mlops.train.run_id"
MODEL_URI = "mlops.model_uri"
MODEL_ID = "mlops.model_id"

# Evaluation.
EVALUATE_RUN_ID = "mlops.evaluate.run_id"
EVALUATION_PASSED = "mlops.evaluation.passed"
CANDIDATE_RUN_ID = "mlops.candidate.run_id"
CHAMPION_VERSION = "mlops.champion.version"

# Promotion.
PROMOTE_MODEL = "mlops.promote.model"
PROMOTE_VERSION = "mlops.promote.version"
PROMOTE_ALIAS = "mlops.promote.alias"
PROMOTE_MOVED = "mlops.promote.moved"
PROMOTE_REASON = "mlops.promote.reason"

# Monitoring (scoring and drift runs of a registered model version).
MONITOR_MODEL = "mlops.monitor.model"
MONITOR_VERSION = "mlops.monitor.version"
MONITOR_KIND = "mlops.monitor.kind"
INPUT_DIGEST = "mlops.input.digest"
OUTPUT_DIGEST = "mlops.output.digest"
OUTPUT_URI = "mlops.output.uri"
DRIFT_DETECTED = "mlops.drift.detected"
DRIFT_SHARE = "mlops.drift.share"


def step_run_id(step: str) -> str:
    """Tag on the parent run naming the child run of ``step``."""
    return f"mlops.step.{step}.run_id"


def metric(name: str) -> str:
    """Tag on a model version holding its evaluation metric ``name``."""
    return f"mlops.metric.{name}"


def alias_prefix(alias: str) -> str:
    """Prefix of the history tags of moves of ``alias`` on a model version."""
    return f"mlops.alias.{alias}."


def alias_key(alias: str, field: str) -> str:
    """One history tag of ``alias``: previous, moved_at, reason, replaced_by, replaced_at, superseded_*, actor."""
    return f"{alias_prefix(alias)}{field}"


# Monitoring, continued (score and drift runs).
MONITOR_ALIAS = "mlops.monitor.alias"
INPUT_URI = "mlops.input.uri"
REFERENCE_URI = "mlops.reference.uri"
REFERENCE_DIGEST = "mlops.reference.digest"
MONITOR_SCORE, MONITOR_DRIFT = "score", "drift"


def monitor_last_run(kind: str) -> str:
    """Tag on a model version naming its latest monitoring run of ``kind`` (score, drift)."""
    return f"mlops.monitor.{kind}.last_run_id"


# Retraining gate (one tagged run per decision) and alias rollbacks.
GATE_MODEL = "mlops.gate.model"
GATE_GO = "mlops.gate.go"
GATE_REASON = "mlops.gate.reason"


def alias_archive(alias: str, number: int) -> str:
    """Registered-model tag keeping a move of ``alias`` whose version tags a later move overwrote."""
    return f"{alias_prefix(alias)}archive.{number:05d}"
