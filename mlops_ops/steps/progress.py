"""Progress lines on long work, so a task log never goes quiet for more than :data:`PROGRESS_SECONDS`."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

#: Seconds between progress lines on long work (scoring batches, a fit).
PROGRESS_SECONDS = 10.0


@contextlib.contextmanager
def heartbeat(logger: logging.Logger, what: str, every: float = PROGRESS_SECONDS) -> Iterator[None]:
    """Log ``<what>: <n>s so far`` every ``every`` seconds while the block runs (for work that reports nothing,
    such as a scikit-learn fit); the line comes from a daemon thread that ends with the block."""
    stop = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while not stop.wait(every):
            logger.info("%s: %.0fs so far", what, time.monotonic() - started)

    thread = threading.Thread(target=beat, name="mlops-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
