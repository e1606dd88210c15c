"""The Assets the pipelines produce and consume: landed batches, labelled data, retrain requests.

- ``inbox_asset("batches")``: a new unlabelled batch landed in ``$MLOPS_INBOX/batches`` (``mlops_scoring``);
- ``inbox_asset("labelled")``: new labelled data landed in ``$MLOPS_INBOX/labelled`` (``mlops_retraining``);
- ``retrain_request(model)``: drift asked for ``model`` to be retrained; emitted by ``mlops_scoring``
  through the ``retrain-requests`` alias (the model is a run's param, so its Asset is chosen at run time)
  with the drift summary as the event's ``extra``.

``$MLOPS_INBOX`` defaults to ``$MLOPS_HOME/inbox``; the DAG processor, the triggerer and the workers must
see the same folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetAlias, AssetWatcher

from mlops_ops.pipelines.inbox import InboxTrigger
from mlops_ops.settings import mlops_home

INBOX_ENV = "MLOPS_INBOX"
GROUP = "mlops"
RETRAIN_REQUESTS = "retrain-requests"


def inbox_dir(kind: str) -> Path:
    """The inbox folder of ``kind`` (``batches`` or ``labelled``)."""
    root = os.environ.get(INBOX_ENV) or str(mlops_home() / "inbox")
    return Path(root).absolute() / kind


def inbox_asset(kind: str, *, poke_interval: float = 5.0) -> Asset:
    """The Asset of an inbox folder, watched by an :class:`InboxTrigger` in the triggerer."""
    folder = inbox_dir(kind)
    trigger = InboxTrigger(directory=str(folder), poke_interval=poke_interval)
    return Asset(
        name=f"inbox-{kind}",
        uri=folder.as_uri(),
        group=GROUP,
        watchers=[AssetWatcher(name=f"inbox-{kind}-watcher", trigger=trigger)],
    )


def retrain_request(model: str) -> Asset:
    """The Asset whose events ask for ``model`` to be retrained."""
    return Asset(name=f"retrain-request/{model}", uri=f"mlops://retrain-request/{model}", group=GROUP)


def retrain_requests() -> AssetAlias:
    """The alias a scoring run emits its retrain request through."""
    return AssetAlias(name=RETRAIN_REQUESTS, group=GROUP)


def landed_uri(events: Any, default: str) -> str:
    """The data URI a run should use: the latest landed batch among its triggering events, else ``default``.

    A landed batch is an inbox event's payload ``uri``, or a retrain request's ``data_uri``. For the
    template macro ``{{ landed_uri(triggering_asset_events, params.data_uri) }}``.
    """
    latest: tuple[Any, str] | None = None
    for asset_events in (events or {}).values():
        for event in asset_events:
            extra = dict(getattr(event, "extra", None) or {})
            payload = extra.get("payload") if isinstance(extra.get("payload"), dict) else {}
            uri = (payload or {}).get("uri") or extra.get("data_uri")
            if isinstance(uri, str) and uri and (latest is None or event.timestamp >= latest[0]):
                latest = (event.timestamp, uri)
    return latest[1] if latest else default


def trigger_summary(events: Any) -> str:
    """What triggered a run, in one line: the assets and their events, or nothing for a manual/scheduled run."""
    parts = []
    for key, asset_events in (events or {}).items():
        if isinstance(key, AssetAlias):  # an event emitted through an alias is listed under both
            continue
        name = getattr(key, "name", None) or str(key)
        parts.append(f"{name} x{len(list(asset_events))}")
    return ", ".join(parts)


def validation_enabled(**context: Any) -> bool:
    """For a short-circuit task: run validation only when the run's ``validate`` param is on."""
    return bool(context["params"].get("validate"))


#: Template macros the pipelines' DAGs register (``user_defined_macros``).
MACROS = {"landed_uri": landed_uri, "trigger_summary": trigger_summary}
