"""How a command's process writes: log lines to stderr, and stdout kept for the command's result."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    # Libraries print to stdout; stdout is reserved for the result manifest.
    with contextlib.redirect_stdout(sys.stderr):
        yield


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, stream=sys.stderr, force=True
    )
    for noisy in ("great_expectations", "mlflow", "alembic", "botocore", "urllib3", "matplotlib", "numexpr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
