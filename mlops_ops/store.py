"""The artifact store: the only code that reads and writes artifacts, on ``file://`` and ``s3://``.

Writes are atomic (a reader sees the whole object or none of it): a local file is written beside its
destination and renamed into place; an S3 object only becomes visible when its upload completes.
Datasets are content-addressed: their key is derived from the sha256 of their bytes, so writing the
same data twice is a no-op and a digest names exactly one file. ``Store.lock`` gives the processes that
share a store a mutual-exclusion lock (an ``flock`` on a local root, a lease object on S3).

A store reads a local file only under its own root or a data root (``mlops_ops.settings.data_roots``),
after resolving symlinks and ``..``. S3 failures are split by whether a retry can help: an outage
(refused connection, timeout, 5xx, throttling) is a StoreError, which Airflow retries; a configuration
mistake (no credentials, access denied, no such bucket, a malformed endpoint) is a SpecError, final.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import random
import re
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from mlops_ops.errors import DataError, MlopsError, SpecError, StoreError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
#: Files larger than this go up and down in parts (boto3's managed transfer).
MULTIPART_THRESHOLD = 64 * 1024 * 1024
#: How long ``Store.lock`` waits for a lock held by another process before it gives up.
LOCK_TIMEOUT_SECONDS = 120.0
#: Age (by the S3 server's clock) after which a lease whose holder never released it may be taken over.
LEASE_TTL_SECONDS = 120.0
#: What to set when S3 refuses a request for want of credentials or permission.
S3_SETUP_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL_S3 for a server other than AWS) "
    "in the step's environment, or the s3_default connection the operators take them from"
)
#: S3 error codes a retry may heal although some come with a 4xx status.
_TRANSIENT_CODES = frozenset(
    {"RequestTimeout", "SlowDown", "Throttling", "ThrottlingException", "TooManyRequests", "RequestLimitExceeded"}
    | {"OperationAborted", "InternalError", "ServiceUnavailable"}
)
#: S3 error codes that mean the credentials are missing, wrong or not allowed: retrying cannot help.
_DENIED_CODES = frozenset(
    {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
    | {"InvalidToken", "AccountProblem", "InvalidSecurity"}
)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def local_path(uri: str) -> Path | None:
    """The local path a plain path or ``file://`` URI names, or None for a remote URI."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(uri).absolute()
    return None


def readable_path(uri: str, also: Iterable[Path] = ()) -> Path:
    """The local file ``uri`` names, symlinks and ``..`` resolved, if it lies under a data root or ``also``.

    Raises:
        SpecError: ``uri`` is not local, cannot be resolved, or lies outside every root; the message names
            ``MLOPS_DATA_ROOTS``, the setting a deployment changes to allow more folders.
    """
    from mlops_ops.settings import DATA_ROOTS_ENV, data_roots

    path = local_path(uri)
    if path is None:
        raise SpecError(f"{uri!r} is not a local path or file:// URI")
    if "\x00" in str(path):
        raise SpecError(f"{uri!r} contains a NUL byte, which no path can contain")
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise SpecError(f"cannot resolve the path {uri!r}: {exc}") from exc
    roots = data_roots() + [Path(root).resolve() for root in also]
    if any(resolved == root or root in resolved.parents for root in roots):
        return resolved
    outermost = [r for r in dict.fromkeys(roots) if not any(other in r.parents for other in roots)]
    allowed = os.pathsep.join(str(root) for root in outermost)
    raise SpecError(
        f"{uri!r} resolves to {str(resolved)!r}, outside the folders a spec may read ({allowed}); "
        f"a deployment allows more with {DATA_ROOTS_ENV} (folders separated by {os.pathsep!r})"
    )


@dataclass(frozen=True)
class S3Settings:
    """Where S3 is and how to sign in; read from the environment (set by the runner from a connection)."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None

    @classmethod
    def from_env(cls) -> S3Settings:
        env = os.environ
        return cls(
            endpoint_url=env.get("AWS_ENDPOINT_URL_S3")
            or env.get("AWS_ENDPOINT_URL")
            or env.get("MLFLOW_S3_ENDPOINT_URL"),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
            access_key=env.get("AWS_ACCESS_KEY_ID"),
            secret_key=env.get("AWS_SECRET_ACCESS_KEY"),
        )


class Store:
    """Reads and writes artifacts under a root URI (``file:///path`` or ``s3://bucket/prefix``)."""

    def __init__(self, root: str, s3: S3Settings | None = None) -> None:
        self.root = root.rstrip("/")
        self._s3_settings = s3
        path = local_path(self.root)
        self._local_root = path
        if path is None and urlparse(self.root).scheme != "s3":
            raise SpecError(f"unsupported artifact root {root!r}: use a local path, file:// or s3://")

    # ------------------------------------------------------------------------------------------ naming

    def uri(self, key: str) -> str:
        """The URI of a key under this store's root."""
        if self._local_root is not None:
            return (self._local_root / key).as_uri()
        return f"{self.root}/{key}"

    @staticmethod
    def dataset_key(digest: str, suffix: str = ".parquet") -> str:
        """Content-addressed key of a dataset file."""
        return f"datasets/sha256/{digest[:2]}/{digest}{suffix}"

    # --------------------------------------------------------------------------------------- writing

    def put_file(self, key: str, path: str | Path) -> str:
        """Copy a local file to ``key`` atomically; return its URI."""
        target = self.uri(key)
        dest = local_path(target)
        try:
            if dest is not None:
                _copy_atomic(Path(path), dest)
            else:
                bucket, obj = _split_s3(target)
                self._s3.upload_file(str(path), bucket, obj, Config=self._transfer_config)
        except OSError as exc:
            raise local_failure(exc, f"write {target}") from exc
        except Exception as exc:  # botocore errors are not OSError
            if _from_s3_library(exc):
                raise s3_failure(exc, f"write {target}") from exc
            raise
        return target

    def put_bytes(self, key: str, data: bytes) -> str:
        """Write bytes to ``key`` atomically; return its URI."""
        try:
            with tempfile.NamedTemporaryFile(delete=False) as tmp:
                tmp.write(data)
        except OSError as exc:
            raise local_failure(exc, f"write {self.uri(key)} (through a temporary file)") from exc
        try:
            return self.put_file(key, tmp.name)
        finally:
            os.unlink(tmp.name)

    def put_content_addressed(self, path: str | Path, suffix: str = ".parquet") -> tuple[str, str]:
        """Store a file under the key its digest names, unless it is there already; return (uri, digest)."""
        digest = sha256_file(path)
        key = self.dataset_key(digest, suffix)
        if not self.exists(self.uri(key)):
            self.put_file(key, path)
        return self.uri(key), digest

    # --------------------------------------------------------------------------------------- reading

    def exists(self, uri: str) -> bool:
        """Whether an object exists at ``uri`` (a local file must lie under a root the store may read)."""
        if local_path(uri) is not None:
            path = self._readable(uri)
            try:
                return path.is_file()
            except OSError as exc:  # a name too long, a component that is not a folder
                raise DataError(f"cannot read {uri!r}: {exc.strerror or exc}") from exc
        bucket, key = _split_s3(uri)
        try:
            self._s3.head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            if _s3_status(exc) == 404:
                return False
            raise s3_failure(exc, f"read {uri}") from exc
        return True

    def get_bytes(self, uri: str) -> bytes:
        """The bytes of the object at ``uri``."""
        with self.open_local(uri) as path:
            return Path(path).read_bytes()

    def fetch(self, uri: str, dest: str | Path) -> Path:
        """Copy the object at ``uri`` to a local file ``dest``."""
        dest = Path(dest)
        path = self._readable(uri) if local_path(uri) is not None else None
        try:
            if path is not None:
                shutil.copyfile(path, dest)
            else:
                bucket, key = _split_s3(uri)
                self._s3.download_file(bucket, key, str(dest), Config=self._transfer_config)
        except FileNotFoundError as exc:
            raise DataError(f"no object at {uri}") from exc
        except OSError as exc:
            raise local_failure(exc, f"read {uri}") from exc
        except Exception as exc:
            if _s3_status(exc) == 404:
                raise DataError(f"no object at {uri}") from exc
            if _from_s3_library(exc):
                raise s3_failure(exc, f"read {uri}") from exc
            raise
        return dest

    def open_local(self, uri: str) -> _LocalCopy:
        """A context manager giving a local path for ``uri``: the file itself, or a temporary download."""
        return _LocalCopy(self, uri)

    def check_readable(self, uri: str) -> None:
        """Refuse (SpecError) a local ``uri`` outside the data roots and this store's root; S3 URIs pass."""
        if local_path(uri) is not None:
            self._readable(uri)

    def _readable(self, uri: str) -> Path:
        # The store's own root is readable besides the data roots: results and datasets live there.
        return readable_path(uri, [self._local_root] if self._local_root is not None else [])

    # --------------------------------------------------------------------------------------- locking

    def lock(
        self, key: str, *, timeout: float = LOCK_TIMEOUT_SECONDS, ttl: float = LEASE_TTL_SECONDS
    ) -> AbstractContextManager[None]:
        """An exclusive lock named by ``key``, held for a ``with`` block, shared by every process on this store.

        On a local root it is an ``flock`` on the file ``key``, which the kernel releases if the holder dies.
        On ``s3://`` it is a lease object created only if absent (``If-None-Match: *``) and deleted only by
        its holder (``If-Match``); a lease older than ``ttl`` seconds by the server's clock is taken to be
        left by a dead holder and may be taken over.

        :param key: Key of the lock object under this store's root.
        :param timeout: Seconds to wait for the lock; then StoreError, which Airflow retries.
        :param ttl: Seconds a lease is honoured (S3 only); keep the ``with`` block much shorter.
        """
        target = self.uri(key)
        path = local_path(target)
        if path is not None:
            return _file_lock(path, timeout)
        bucket, obj = _split_s3(target)
        return _S3Lease(self._s3, bucket, obj, ttl).hold(timeout)

    # ------------------------------------------------------------------------------------------- S3

    @cached_property
    def _s3(self) -> S3Client:
        import boto3
        from botocore.config import Config

        settings = self._s3_settings or S3Settings.from_env()
        try:
            return boto3.client(
                "s3",
                endpoint_url=settings.endpoint_url,
                region_name=settings.region or "us-east-1",
                aws_access_key_id=settings.access_key,
                aws_secret_access_key=settings.secret_key,
                config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 5}),
            )
        except ValueError as exc:  # botocore: "Invalid endpoint: ..."
            raise SpecError(
                f"the S3 endpoint URL {settings.endpoint_url!r} is malformed ({exc}); set AWS_ENDPOINT_URL_S3 "
                "to a URL such as http://host:8333, or fix the endpoint_url of the s3_default connection"
            ) from exc

    @cached_property
    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD)


class _LocalCopy:
    def __init__(self, store: Store, uri: str) -> None:
        self._store, self._uri = store, uri
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Path:
        if local_path(self._uri) is not None:
            if not self._store.exists(self._uri):
                raise DataError(f"no object at {self._uri}")
            return self._store._readable(self._uri)
        self._tmp = tempfile.TemporaryDirectory(prefix="mlops-")
        name = Path(urlparse(self._uri).path).name or "object"
        try:
            return self._store.fetch(self._uri, Path(self._tmp.name) / name)
        except BaseException:
            # __exit__ does not run when __enter__ raises, so the download folder is removed here.
            self._tmp.cleanup()
            self._tmp = None
            raise

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def _copy_atomic(source: Path, dest: Path) -> None:
    """Copy ``source`` to a hidden ``.part`` file beside ``dest`` and rename it into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.part")
    try:
        # Create it with open() rather than mkstemp so it gets the umask's mode (usually 0644), not 0600:
        # other users (an MLflow server, a pod with another uid) must be able to read the artifact.
        with open(tmp, "xb"):
            pass
        shutil.copyfile(source, tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _pause() -> float:
    # Jitter keeps waiting processes from polling in lockstep.
    return random.uniform(0.02, 0.1)


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float) -> Iterator[None]:
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


class _S3Lease:
    """A lock object in S3: created only if absent, deleted only by its holder, taken over once stale."""

    def __init__(self, client: S3Client, bucket: str, key: str, ttl: float) -> None:
        self._client, self._bucket, self._key, self._ttl = client, bucket, key, ttl
        self.uri = f"s3://{bucket}/{key}"

    @contextlib.contextmanager
    def hold(self, timeout: float) -> Iterator[None]:
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
                if _s3_status(exc) not in (409, 412):
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
            if _s3_status(exc) == 404:
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
            if _s3_status(exc) in (404, 409, 412):
                return None, holder
            raise s3_failure(exc, f"take over the lease {self.uri}") from exc
        log.warning("took over the lease %s from %s, who held it for %.0fs without releasing it", self.uri, holder, age)
        return taken["ETag"], holder

    def _release(self, etag: str) -> None:
        try:
            self._client.delete_object(Bucket=self._bucket, Key=self._key, IfMatch=etag)
        except Exception as exc:
            status = _s3_status(exc)
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


def _split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise SpecError(f"{uri!r} is not an s3://bucket/key URI")
    return parsed.netloc, parsed.path.lstrip("/")


def _from_s3_library(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("botocore", "boto3", "s3transfer"))


def _s3_code(exc: BaseException) -> tuple[int | None, str | None]:
    """The HTTP status and S3 error code of a failed call, as far as the exception tells them."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return (int(status) if status else None), response.get("Error", {}).get("Code")
    # boto3's S3UploadFailedError keeps only the text of the ClientError it replaced.
    match = re.search(r"An error occurred \((\w+)\)", str(exc))
    return None, match[1] if match else None


def local_failure(exc: OSError, doing: str) -> MlopsError:
    """The error to raise for a failed local read or write: SpecError if permissions forbid it, else StoreError.

    A full disk or an I/O error may heal (StoreError, retried); a folder the step may not write, or a
    read-only filesystem, will not until the deployment changes (SpecError, final).
    """
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return SpecError(f"cannot {doing}: {exc.strerror}; give the step's user access, or choose another folder")
    return StoreError(f"cannot {doing}: {exc.strerror or exc}")


def s3_failure(exc: BaseException, doing: str) -> MlopsError:
    """The error to raise for a failed S3 call: SpecError if retrying cannot help, else StoreError.

    Args:
        exc: What boto3 or botocore raised.
        doing: What was being done, completing "cannot ...", such as ``read s3://bucket/key``.
    """
    from botocore import exceptions as boto_errors

    if isinstance(exc, MlopsError):  # already decided, e.g. a malformed endpoint found making the client
        return exc
    if isinstance(exc, (boto_errors.NoCredentialsError, boto_errors.PartialCredentialsError)):
        return SpecError(f"cannot {doing}: {exc}; no S3 credentials are configured: {S3_SETUP_HINT}")
    if isinstance(exc, boto_errors.ParamValidationError):
        return SpecError(f"cannot {doing}: {' '.join(str(exc).split())}")
    status, code = _s3_code(exc)
    if code == "NoSuchBucket":
        return SpecError(f"cannot {doing}: the bucket does not exist; create it or fix the bucket in the URI")
    if status in (401, 403) or code in _DENIED_CODES:
        return SpecError(f"cannot {doing}: access denied ({code or status}); check the credentials: {S3_SETUP_HINT}")
    transient = status is None or status >= 500 or status in (408, 429) or code in _TRANSIENT_CODES
    if not transient:
        # Another 4xx: the request itself is wrong, so sending it again gets the same answer.
        return SpecError(f"cannot {doing}: {exc}")
    return StoreError(f"cannot {doing}: {exc}")


def _s3_status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = response.get("Error", {}).get("Code")
    if code in ("404", "NoSuchKey", "NotFound"):
        return 404
    return int(status) if status else None


def store_for(uri: str | None = None) -> Store:
    """The store rooted at ``uri``, or at the configured artifact root."""
    from mlops_ops.settings import artifact_root

    return Store(uri or artifact_root())


def write_uri(uri: str, data: bytes) -> str:
    """Write bytes to a full path or URI (its parent is taken as the store root); return the URI."""
    parent, _, name = uri.rstrip("/").rpartition("/")
    if not name:
        raise SpecError(f"{uri!r} does not name an object")
    return Store(parent or ".").put_bytes(name, data)
