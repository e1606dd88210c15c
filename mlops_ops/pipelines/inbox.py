"""A trigger that fires when a batch lands in an inbox folder, for an Asset's ``AssetWatcher``.

A producer drops a CSV or Parquet file into the folder (write it under a name starting with ``.`` or
ending in ``.tmp``/``.part`` and rename it when complete, or let it sit still for ``settle_seconds``). The
trigger moves it into ``landed/`` below the folder - so it fires once per file and the data is kept - and
fires with the landed file's URI as the event's payload. The triggerer starts the trigger again after
each event, so the watch goes on.

The standard provider's file triggers delete the file they find, which suits flag files, not data.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

LANDED = "landed"
SUFFIXES = (".csv", ".parquet", ".pq")
_PARTIAL = (".tmp", ".part")


def pending(directory: Path, settle_seconds: float, now: float | None = None) -> list[Path]:
    """Complete batches waiting in ``directory``, oldest first."""
    now = time.time() if now is None else now
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        name = entry.name
        if name.startswith(".") or name.endswith(_PARTIAL) or not name.lower().endswith(SUFFIXES):
            continue
        if not entry.is_file():
            continue
        modified = entry.stat().st_mtime
        if now - modified >= settle_seconds:
            found.append((modified, Path(entry.path)))
    return [path for _, path in sorted(found)]


def land(path: Path) -> Path:
    """Move a batch into ``landed/`` (atomic within the folder); a name taken already gets a numeric suffix."""
    landed = path.parent / LANDED
    landed.mkdir(exist_ok=True)
    dest = landed / path.name
    n = 1
    while dest.exists():
        dest = landed / f"{path.stem}.{n}{path.suffix}"
        n += 1
    path.rename(dest)
    return dest


class InboxTrigger(BaseEventTrigger):
    """Fire once per batch that lands in ``directory``; the payload is ``{"uri", "name", "bytes"}``.

    :param directory: The inbox folder (created if missing).
    :param poke_interval: Seconds between looks.
    :param settle_seconds: A file counts as complete once unmodified this long.
    """

    def __init__(self, *, directory: str, poke_interval: float = 5.0, settle_seconds: float = 2.0) -> None:
        super().__init__()
        self.directory = directory
        self.poke_interval = poke_interval
        self.settle_seconds = settle_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"directory": self.directory, "poke_interval": self.poke_interval, "settle_seconds": self.settle_seconds},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        folder = Path(self.directory)
        while True:
            for path in pending(folder, self.settle_seconds):
                try:
                    dest = land(path)
                except FileNotFoundError:  # another watcher took it first
                    continue
                self.log.info("batch landed: %s", dest)
                yield TriggerEvent({"uri": dest.as_uri(), "name": path.name, "bytes": dest.stat().st_size})
                return
            await asyncio.sleep(self.poke_interval)
