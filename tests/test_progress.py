"""Progress lines on long work: a fit that reports nothing still gets a line every few seconds."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from mlops_ops.steps.progress import heartbeat


def test_a_quiet_block_gets_a_line_every_interval_and_none_after_it(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("mlops_ops.steps.test_progress")
    with caplog.at_level(logging.INFO, logger=logger.name), heartbeat(logger, "fitting X on 10 rows", every=0.05):
        time.sleep(0.32)
    lines = [r.getMessage() for r in caplog.records if r.name == logger.name]
    assert 3 <= len(lines) <= 7, lines
    assert all(line.startswith("fitting X on 10 rows: ") and line.endswith("s so far") for line in lines)
    assert not [t for t in threading.enumerate() if t.name == "mlops-progress"]  # the thread ended with the block
    time.sleep(0.1)
    assert len([r for r in caplog.records if r.name == logger.name]) == len(lines)


def test_an_error_in_the_block_passes_through_and_stops_the_lines() -> None:
    with pytest.raises(ValueError, match="bad fit"), heartbeat(logging.getLogger("x"), "fit", every=0.05):
        raise ValueError("bad fit")
    assert not [t for t in threading.enumerate() if t.name == "mlops-progress"]
