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

Modules: ``artifacts`` (the ``Store``), ``uri`` (what a URI names), ``roots`` (which local files may be
read), ``local`` (digests and atomic copies), ``s3`` (boto3 clients and error triage), ``lock`` (locks
and leases). boto3 is imported only when a store first talks to S3.
"""

from __future__ import annotations

from mlops_ops.store.artifacts import Store, store_for, write_uri
from mlops_ops.store.local import local_failure, sha256_file
from mlops_ops.store.roots import readable_path
from mlops_ops.store.s3 import S3Settings, s3_failure
from mlops_ops.store.uri import local_path

__all__ = [
    "S3Settings",
    "Store",
    "local_failure",
    "local_path",
    "readable_path",
    "s3_failure",
    "sha256_file",
    "store_for",
    "write_uri",
]
