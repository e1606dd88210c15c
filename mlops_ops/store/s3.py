"""S3 through boto3 (imported only when a store first talks to S3): settings, clients, and error triage."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlops_ops.errors import MlopsError, SpecError, StoreError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: Files larger than this go up and down in parts (boto3's managed transfer).
MULTIPART_THRESHOLD = 64 * 1024 * 1024
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


def make_client(settings: S3Settings) -> S3Client:
    """A boto3 S3 client for ``settings``: path-style addressing, boto3's standard retries.

    Raises:
        SpecError: the endpoint URL is malformed.
    """
    import boto3
    from botocore.config import Config

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


def transfer_config() -> Any:
    """boto3's managed-transfer settings: files above ``MULTIPART_THRESHOLD`` move in parts of that size."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD)


def from_s3_library(exc: BaseException) -> bool:
    """Whether boto3, botocore or s3transfer raised ``exc``."""
    return type(exc).__module__.startswith(("botocore", "boto3", "s3transfer"))


def s3_status(exc: Exception) -> int | None:
    """The HTTP status of a failed S3 call, with every "no such object" answer counted as 404."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = response.get("Error", {}).get("Code")
    if code in ("404", "NoSuchKey", "NotFound"):
        return 404
    return int(status) if status else None


def _s3_code(exc: BaseException) -> tuple[int | None, str | None]:
    """The HTTP status and S3 error code of a failed call, as far as the exception tells them."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return (int(status) if status else None), response.get("Error", {}).get("Code")
    # boto3's S3UploadFailedError keeps only the text of the ClientError it replaced.
    match = re.search(r"An error occurred \((\w+)\)", str(exc))
    return None, match[1] if match else None


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
