"""Locks shared by the processes that use one store: an ``flock`` on a local root, a lease object on S3."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_ops.errors import StoreError
from mlops_ops.store.local import local_failure
from mlops_ops.store.s3 import s3_failure, s3_status

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

#: How long ``Store.lock`` waits for a lock held by another process before it gives up.
LOCK_TIMEOUT_SECONDS = 120.0
#: Age (by the S3 server's clock) after which a lease whose holder never released it may be taken over.
LEASE_TTL_SECONDS = 120.0


def _pause() -> float:
    # Jitter keeps waiting processes from polling in lockstep.
    return random.uniform(0.02, 0.1)


@contextlib.contextmanager
def file_lock(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing, never deleted)."""
    import fcntl

    # The file stays: deleting a lock file lets a waiter lock the old inode while a newcomer locks a new one.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")  # noqa: SIM115 - closed by the with statement below
    except OSError as exc:
        raise local_failure(exc, f"open the lock {path}") from exc
    deadline = time.monotonic() + timeout
    with handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"the lock {path} was not free within {timeout:.0f}s; another process holds it "
                        "(the kernel releases it when that process ends), so try again later"
                    ) from None
                time.sleep(_pause())
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class S3Lease:
    """A lock object in S3: created only if absent, deleted only by its holder, taken over once stale."""

    def __init__(self, client: S3Client, bucket: str, key: str, ttl: float) -> None:
        self._client, self._bucket, self._key, self._ttl = client, bucket, key, ttl
        self.uri = f"s3://{bucket}/{key}"

    @contextlib.contextmanager
    def hold(self, timeout: float) -> Iterator[None]:
        """Hold the lease for a ``with`` block, waiting up to ``timeout`` seconds for it (then StoreError)."""
        etag = self._acquire(timeout)
        try:
            yield
        finally:
            self._release(etag)

    def _body(self) -> bytes:
        owner = f"{socket.gethostname()} pid {os.getpid()}"
        return json.dumps({"owner": owner, "ttl": self._ttl, "nonce": secrets.token_hex(8)}).encode()

    def _acquire(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._client.put_object(Bucket=self._bucket, Key=self._key, Body=self._body(), IfNoneMatch="*")[
                    "ETag"
                ]
            except Exception as exc:
                # 412: the lease exists; 409: another conditional write to it is in flight.
                if s3_status(exc) not in (409, 412):
                    raise s3_failure(exc, f"take the lease {self.uri}") from exc
            etag, holder = self._take_over_if_stale()
            if etag is not None:
                return etag
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"the lease {self.uri} was not free within {timeout:.0f}s; it is held by {holder}, and is "
                    f"taken over {self._ttl:.0f}s after it was taken if its holder died, so try again later"
                )
            time.sleep(_pause())

    def _take_over_if_stale(self) -> tuple[str | None, str]:
        """Replace the lease if it is older than its ttl (its holder died); return (our etag or None, holder)."""
        try:
            found = self._client.get_object(Bucket=self._bucket, Key=self._key)
        except Exception as exc:
            if s3_status(exc) == 404:
                return None, "nobody (it was just released)"
            raise s3_failure(exc, f"read the lease {self.uri}") from exc
        lease: Any = {}
        with contextlib.suppress(ValueError):
            lease = json.loads(found["Body"].read() or b"{}")
        if not isinstance(lease, dict):
            lease = {}
        holder = str(lease.get("owner", "an unknown holder"))
        headers = found["ResponseMetadata"].get("HTTPHeaders", {})
        now = parsedate_to_datetime(headers["date"]) if "date" in headers else datetime.now(UTC)
        age = (now - found["LastModified"]).total_seconds()
        if age <= float(lease.get("ttl", self._ttl)):
            return None, holder
        try:
            # If-Match: only the stale lease we read is replaced, not one another waiter took over meanwhile.
            taken = self._client.put_object(
                Bucket=self._bucket, Key=self._key, Body=self._body(), IfMatch=found["ETag"]
            )
        except Exception as exc:
            if s3_status(exc) in (404, 409, 412):
                return None, holder
            raise s3_failure(exc, f"take over the lease {self.uri}") from exc
        log.warning("took over the lease %s from %s, who held it for %.0fs without releasing it", self.uri, holder, age)
        return taken["ETag"], holder

    def _release(self, etag: str) -> None:
        try:
            self._client.delete_object(Bucket=self._bucket, Key=self._key, IfMatch=etag)
        except Exception as exc:
            status = s3_status(exc)
            if status == 412:
                log.warning(
                    "the lease %s was taken over before it was released: it was held longer than %.0fs",
                    self.uri,
                    self._ttl,
                )
            elif status == 501:
                # A server without conditional deletes: delete plainly (the lease is ours unless it went stale).
                self._client.delete_object(Bucket=self._bucket, Key=self._key)
            elif status != 404:
                raise s3_failure(exc, f"release the lease {self.uri}") from exc
