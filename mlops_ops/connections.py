"""Airflow connections turned into step environment: the MLflow tracking server and the S3 endpoint.

A step knows nothing of Airflow. When a task runs, its operator reads the connections by id and hands
the step the environment variables MLflow, boto3 and :mod:`mlops_ops.store` already read. Credentials are
kept apart from the plain settings (a pod receives them through a Kubernetes Secret) and are registered
with Airflow's secrets masker, so task logs show ``***`` where they would appear.

The operators import this module when a task runs, never when a DAG file is parsed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk import BaseHook

from mlops_ops.errors import SpecError

if TYPE_CHECKING:
    from airflow.sdk import Connection

MLFLOW_CONN_TYPE = "mlflow"
MLFLOW_DEFAULT_CONN_ID = "mlflow_default"
#: The S3 connection follows the Amazon provider's ``aws`` connection, so one connection serves both.
S3_DEFAULT_CONN_ID = "s3_default"


@dataclass(frozen=True)
class StepEnvironment:
    """Environment for a step: plain settings, credentials, and the values the log masker must redact."""

    env: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    masked: frozenset[str] = field(default=frozenset(), repr=False)

    def __or__(self, other: StepEnvironment) -> StepEnvironment:
        return StepEnvironment(self.env | other.env, self.secrets | other.secrets, self.masked | other.masked)


# ------------------------------------------------------------------------------------------------ MLflow


def tracking_uri(conn: Connection) -> str:
    """The tracking URI an MLflow connection names (see :func:`connection_url`)."""
    url = connection_url(conn)
    if url is None:
        raise SpecError(
            f"Airflow connection {conn.conn_id!r} has no host: set it to the MLflow tracking URI, "
            "e.g. http://mlflow:5000"
        )
    return url


def connection_url(conn: Connection) -> str | None:
    """The host as a URL (``schema://host:port`` when it is a bare name; schema default http), or None."""
    host = (conn.host or "").strip().rstrip("/")
    if not host:
        return None
    if "://" not in host:
        host = f"{conn.schema or 'http'}://{host}"
    parts = urlsplit(host)
    if conn.port and parts.port is None:
        parts = parts._replace(netloc=f"{parts.netloc}:{conn.port}")
    return urlunsplit(parts)


def mlflow_environment(conn: Connection) -> StepEnvironment:
    """``MLFLOW_TRACKING_*`` variables from an MLflow connection.

    :param conn: host is the tracking URI (or host name, with port and schema as the URL scheme); login
        and password are basic-auth credentials; a token goes in extra ``{"token": ...}``, or in the
        password when there is no login; extra ``{"insecure_tls": true}`` skips TLS verification.
    """
    uri = tracking_uri(conn)
    extra = _extra(conn)
    env, secrets, masked = {}, {}, set()
    userinfo_password = urlsplit(uri).password
    if userinfo_password:
        # A database URI or a URL with user:password@ in it is itself a credential.
        secrets["MLFLOW_TRACKING_URI"] = uri
        masked.add(userinfo_password)
    else:
        env["MLFLOW_TRACKING_URI"] = uri
    token = extra.get("token") or (conn.password if not conn.login else None)
    if token:
        secrets["MLFLOW_TRACKING_TOKEN"] = str(token)
        masked.add(str(token))
    if conn.login:
        secrets["MLFLOW_TRACKING_USERNAME"] = conn.login
        if conn.password:
            secrets["MLFLOW_TRACKING_PASSWORD"] = conn.password
            masked.add(conn.password)
    if _truthy(extra.get("insecure_tls")):
        env["MLFLOW_TRACKING_INSECURE_TLS"] = "true"
    return StepEnvironment(env, secrets, frozenset(masked))


# ---------------------------------------------------------------------------------------------------- S3


def s3_environment(conn: Connection) -> StepEnvironment:
    """``AWS_*`` variables (and MLflow's S3 endpoint) from an S3 connection, read as the Amazon provider does.

    :param conn: login and password are the access key id and secret key (or extra ``aws_access_key_id``,
        ``aws_secret_access_key``, ``aws_session_token``); extra ``endpoint_url`` (or
        ``service_config.s3.endpoint_url``, or the host) is the S3 endpoint; extra ``region_name`` the region.
    """
    extra = _extra(conn)
    service = extra.get("service_config")
    s3_config = service.get("s3") if isinstance(service, dict) else None
    endpoint = extra.get("endpoint_url") or (s3_config or {}).get("endpoint_url") or connection_url(conn)
    region = extra.get("region_name") or extra.get("region")
    env: dict[str, str] = {}
    if endpoint:
        env["AWS_ENDPOINT_URL_S3"] = env["MLFLOW_S3_ENDPOINT_URL"] = str(endpoint)
    if region:
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = str(region)
    found = {
        # The access key id names the key; it is not a secret, so it is not masked (it may be a common word).
        "AWS_ACCESS_KEY_ID": conn.login or extra.get("aws_access_key_id"),
        "AWS_SECRET_ACCESS_KEY": conn.password or extra.get("aws_secret_access_key"),
        "AWS_SESSION_TOKEN": extra.get("aws_session_token"),
    }
    secrets = {name: str(value) for name, value in found.items() if value}
    masked = {value for name, value in secrets.items() if name != "AWS_ACCESS_KEY_ID"}
    return StepEnvironment(env, secrets, frozenset(masked))


# ---------------------------------------------------------------------------------------------- lookups


def get_connection(conn_id: str, *, required: bool) -> Connection | None:
    """The Airflow connection ``conn_id``; None when it is not defined and not ``required``."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        if not required:
            return None
        raise SpecError(
            f"Airflow connection {conn_id!r} is not defined: create it (Admin > Connections, "
            f"`airflow connections add {conn_id} ...` or AIRFLOW_CONN_{conn_id.upper()}), "
            "or set the operator's connection id to None to use the environment"
        ) from None


def step_environment(mlflow_conn_id: str | None, s3_conn_id: str | None) -> StepEnvironment:
    """The step environment from the MLflow and S3 connections, with credentials registered for masking.

    A connection id left at its default (``mlflow_default``, ``s3_default``) is used only if that connection
    exists; any other id must exist. An empty id means the connection is not used.
    """
    environment = StepEnvironment()
    lookups = (
        (mlflow_conn_id, MLFLOW_DEFAULT_CONN_ID, mlflow_environment),
        (s3_conn_id, S3_DEFAULT_CONN_ID, s3_environment),
    )
    for conn_id, default, build in lookups:
        if not conn_id:
            continue
        conn = get_connection(conn_id, required=conn_id != default)
        if conn is not None:
            environment |= build(conn)
    mask(environment)
    return environment


def mask(environment: StepEnvironment) -> None:
    """Register the credentials with Airflow's secrets masker (task process and supervisor)."""
    from airflow.sdk.log import mask_secret

    for value in sorted(environment.masked):
        mask_secret(value)


def _extra(conn: Connection) -> dict[str, Any]:
    extra = conn.extra_dejson
    if not isinstance(extra, dict):
        return {}
    # Forms of older Airflow versions saved custom fields as ``extra__<type>__<field>``.
    prefix = f"extra__{conn.conn_type}__"
    return {key.removeprefix(prefix): value for key, value in extra.items()}


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


# ------------------------------------------------------------------------------------------------- hooks


class MlflowHook(BaseHook):
    """The MLflow tracking server as an Airflow connection of type ``mlflow``, for the UI's connection form.

    :param mlflow_conn_id: The connection id. (default ``mlflow_default``)
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = MLFLOW_DEFAULT_CONN_ID
    conn_type = MLFLOW_CONN_TYPE
    hook_name = "MLflow tracking server"

    def __init__(self, mlflow_conn_id: str = MLFLOW_DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id

    def get_conn(self) -> StepEnvironment:
        """The step environment this connection gives (``MLFLOW_TRACKING_*``)."""
        return mlflow_environment(self.get_connection(self.mlflow_conn_id))
