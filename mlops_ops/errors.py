"""The one exception family of mlops-ops, with the exit code each error maps to on the command line.

Exit codes 2-5 are final (a user's mistake or a decision: Airflow does not retry them); 1 and 6 are
left to Airflow's retries (6: a service the step needs was unreachable; 1: anything unexpected).
"""

from __future__ import annotations

#: How the CLI starts its one error line on stderr; runners find the step's error by it.
ERROR_PREFIX = "mlops-ops: error: "


class MlopsError(Exception):
    """Base of every error a user can act on; the CLI prints it as one line."""

    exit_code = 1


class SpecError(MlopsError, ValueError):
    """A step spec, a setting or a pipeline's configuration is invalid (retrying cannot help)."""

    exit_code = 2


class DataError(MlopsError):
    """Input data cannot be read or does not fit the spec (empty, wrong type, missing column)."""

    exit_code = 3


class ValidationFailed(MlopsError):
    """The data failed its expectation suite."""

    exit_code = 4


class PromotionRejected(MlopsError):
    """The candidate did not pass its evaluation gates, so nothing was promoted."""

    exit_code = 5


class InfraError(MlopsError):
    """A service the step needs (store, MLflow) failed in a way a retry may heal."""

    exit_code = 6


class StoreError(InfraError):
    """An artifact could not be read from or written to the store."""


class TrackingUnavailable(InfraError):
    """MLflow could not be reached within the retry budget."""


class TrackingError(MlopsError):
    """MLflow refused a request (not an outage: retrying the same request will not help)."""

    exit_code = 1
