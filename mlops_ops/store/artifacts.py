"""The ``Store``: reads and writes artifacts under one root URI, on a local folder or on S3."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import AbstractContextManager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from mlops_ops.errors import DataError, SpecError
from mlops_ops.store.local import copy_atomic, local_failure, sha256_file
from mlops_ops.store.lock import LEASE_TTL_SECONDS, LOCK_TIMEOUT_SECONDS, S3Lease, file_lock
from mlops_ops.store.roots import readable_path
from mlops_ops.store.s3 import S3Settings, from_s3_library, make_client, s3_failure, s3_status, transfer_config
from mlops_ops.store.uri import local_path, split_s3

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


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
                copy_atomic(Path(path), dest)
            else:
                bucket, obj = split_s3(target)
                self._s3.upload_file(str(path), bucket, obj, Config=self._transfer_config)
        except OSError as exc:
            raise local_failure(exc, f"write {target}") from exc
        except Exception as exc:  # botocore errors are not OSError
            if from_s3_library(exc):
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
        bucket, key = split_s3(uri)
        try:
            self._s3.head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            if s3_status(exc) == 404:
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
                bucket, key = split_s3(uri)
                self._s3.download_file(bucket, key, str(dest), Config=self._transfer_config)
        except FileNotFoundError as exc:
            raise DataError(f"no object at {uri}") from exc
        except OSError as exc:
            raise local_failure(exc, f"read {uri}") from exc
        except Exception as exc:
            if s3_status(exc) == 404:
                raise DataError(f"no object at {uri}") from exc
            if from_s3_library(exc):
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
            return file_lock(path, timeout)
        bucket, obj = split_s3(target)
        return S3Lease(self._s3, bucket, obj, ttl).hold(timeout)

    # ------------------------------------------------------------------------------------------- S3

    @cached_property
    def _s3(self) -> S3Client:
        return make_client(self._s3_settings or S3Settings.from_env())

    @cached_property
    def _transfer_config(self) -> Any:
        return transfer_config()


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
