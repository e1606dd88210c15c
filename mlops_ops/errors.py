"""The one exception family of mlops-ops, with the exit code each error maps to on the command line."""

from __future__ import annotations


class MlopsError(Exception):
    """Base of every error a user can act on; the CLI prints it as one line."""

    exit_code = 1


class SpecError(MlopsError, ValueError):
    """A step spec or pipeline setting is invalid."""

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


class StoreError(MlopsError):
    """An artifact could not be read from or written to the store."""

    exit_code = 6
