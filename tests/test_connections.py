"""Airflow connections turned into step environment: the mapping, the lookups, masking, and the operator wiring."""

from __future__ import annotations

import json
from typing import Any

import pytest
from airflow.sdk import Connection

from mlops_ops.connections import (
    MLFLOW_DEFAULT_CONN_ID,
    S3_DEFAULT_CONN_ID,
    MlflowHook,
    StepEnvironment,
    mlflow_environment,
    s3_environment,
    step_environment,
)
from mlops_ops.errors import SpecError

SECRET_KEY = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY"
PASSWORD = "correct-horse-battery"
TOKEN = "tok-3f9a8b7c6d5e"


def mlflow_conn(**fields: Any) -> Connection:
    return Connection(conn_id="mlflow_test", conn_type="mlflow", **fields)


def aws_conn(**fields: Any) -> Connection:
    return Connection(conn_id="s3_test", conn_type="aws", **fields)


# ---------------------------------------------------------------------------------------------- MLflow


@pytest.mark.parametrize(
    ("fields", "uri"),
    [
        ({"host": "http://mlflow:5000"}, "http://mlflow:5000"),
        ({"host": "https://mlflow.example.com/"}, "https://mlflow.example.com"),
        ({"host": "mlflow", "port": 5000}, "http://mlflow:5000"),
        ({"host": "mlflow.example.com", "schema": "https"}, "https://mlflow.example.com"),
        ({"host": "http://mlflow", "port": 5000}, "http://mlflow:5000"),
        ({"host": "http://mlflow:5000", "port": 6000}, "http://mlflow:5000"),
    ],
)
def test_the_host_is_the_tracking_uri(fields: dict[str, Any], uri: str) -> None:
    environment = mlflow_environment(mlflow_conn(**fields))
    assert environment.env == {"MLFLOW_TRACKING_URI": uri}
    assert environment.secrets == {} and environment.masked == frozenset()


def test_login_and_password_are_basic_auth_credentials_kept_secret() -> None:
    environment = mlflow_environment(mlflow_conn(host="http://mlflow:5000", login="alice", password=PASSWORD))
    assert environment.env == {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    assert environment.secrets == {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": PASSWORD}
    assert environment.masked == {PASSWORD}


@pytest.mark.parametrize(
    "fields",
    [
        {"extra": json.dumps({"token": TOKEN})},
        {"extra": json.dumps({"extra__mlflow__token": TOKEN})},
        {"password": TOKEN},
    ],
    ids=["extra", "prefixed-extra", "password-without-login"],
)
def test_a_token_becomes_the_tracking_token(fields: dict[str, Any]) -> None:
    environment = mlflow_environment(mlflow_conn(host="http://mlflow:5000", **fields))
    assert environment.secrets == {"MLFLOW_TRACKING_TOKEN": TOKEN}
    assert environment.masked == {TOKEN}
    assert TOKEN not in json.dumps(environment.env)


def test_a_tracking_uri_with_a_password_in_it_is_itself_a_secret() -> None:
    uri = f"postgresql+psycopg2://mlflow:{PASSWORD}@db:5432/mlflow"
    environment = mlflow_environment(mlflow_conn(host=uri))
    assert environment.env == {}
    assert environment.secrets == {"MLFLOW_TRACKING_URI": uri}
    assert environment.masked == {PASSWORD}


def test_insecure_tls_is_a_plain_setting() -> None:
    environment = mlflow_environment(mlflow_conn(host="https://mlflow", extra=json.dumps({"insecure_tls": "true"})))
    assert environment.env["MLFLOW_TRACKING_INSECURE_TLS"] == "true"


def test_an_mlflow_connection_without_host_says_what_to_set() -> None:
    with pytest.raises(SpecError, match=r"'mlflow_test' has no host: set it to the MLflow tracking URI"):
        mlflow_environment(mlflow_conn(login="alice", password=PASSWORD))


# -------------------------------------------------------------------------------------------------- S3


def test_an_aws_connection_gives_endpoint_region_and_keys() -> None:
    conn = aws_conn(
        login="AKIAEXAMPLE",
        password=SECRET_KEY,
        extra=json.dumps({"endpoint_url": "http://minio:9000", "region_name": "eu-west-1"}),
    )
    environment = s3_environment(conn)
    assert environment.env == {
        "AWS_ENDPOINT_URL_S3": "http://minio:9000",
        "MLFLOW_S3_ENDPOINT_URL": "http://minio:9000",
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    assert environment.secrets == {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    # The key id names the key and may be a common word; only the secret is redacted from logs.
    assert environment.masked == {SECRET_KEY}


def test_keys_session_token_and_service_endpoint_may_come_from_extra() -> None:
    extra = {
        "aws_access_key_id": "AKIAEXAMPLE",
        "aws_secret_access_key": SECRET_KEY,
        "aws_session_token": TOKEN,
        "service_config": {"s3": {"endpoint_url": "http://seaweed:8333"}},
    }
    environment = s3_environment(aws_conn(extra=json.dumps(extra)))
    assert environment.env == {
        "AWS_ENDPOINT_URL_S3": "http://seaweed:8333",
        "MLFLOW_S3_ENDPOINT_URL": "http://seaweed:8333",
    }
    assert environment.secrets == {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": TOKEN,
    }
    assert environment.masked == {SECRET_KEY, TOKEN}


def test_the_host_is_the_endpoint_when_extra_names_none() -> None:
    environment = s3_environment(aws_conn(host="minio", port=9000, login="k", password=SECRET_KEY))
    assert environment.env["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"


def test_an_empty_aws_connection_leaves_boto3_its_own_chain() -> None:
    assert s3_environment(aws_conn()) == StepEnvironment()


# --------------------------------------------------------------------------------------------- lookups


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections defined the way a deployment may define them: ``AIRFLOW_CONN_*`` variables in JSON."""
    mlflow = {"conn_type": "mlflow", "host": "http://mlflow.test:5000", "login": "alice", "password": PASSWORD}
    s3 = {
        "conn_type": "aws",
        "login": "mlops",
        "password": SECRET_KEY,
        "extra": {"endpoint_url": "http://s3.test:8333", "region_name": "us-east-1"},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{MLFLOW_DEFAULT_CONN_ID.upper()}", json.dumps(mlflow))
    monkeypatch.setenv(f"AIRFLOW_CONN_{S3_DEFAULT_CONN_ID.upper()}", json.dumps(s3))
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_TEAM", json.dumps(mlflow | {"host": "http://team:5000", "password": TOKEN}))


def test_both_default_connections_are_read_by_id(connections: None) -> None:
    environment = step_environment(MLFLOW_DEFAULT_CONN_ID, S3_DEFAULT_CONN_ID)
    assert environment.env["MLFLOW_TRACKING_URI"] == "http://mlflow.test:5000"
    assert environment.env["AWS_ENDPOINT_URL_S3"] == "http://s3.test:8333"
    assert environment.secrets["MLFLOW_TRACKING_PASSWORD"] == PASSWORD
    assert environment.secrets["AWS_SECRET_ACCESS_KEY"] == SECRET_KEY


def test_credentials_are_registered_with_the_log_masker(connections: None) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    step_environment(MLFLOW_DEFAULT_CONN_ID, S3_DEFAULT_CONN_ID)
    line = f"connecting with {PASSWORD} and {SECRET_KEY} to s3://mlops/data.csv"
    assert redact(line) == "connecting with *** and *** to s3://mlops/data.csv"


def test_a_default_connection_that_is_not_defined_is_skipped() -> None:
    assert step_environment(MLFLOW_DEFAULT_CONN_ID, S3_DEFAULT_CONN_ID) == StepEnvironment()
    assert step_environment(None, "") == StepEnvironment()


def test_a_named_connection_that_is_not_defined_fails_with_the_fix() -> None:
    with pytest.raises(SpecError, match=r"'mlflow_prod' is not defined: create it .*AIRFLOW_CONN_MLFLOW_PROD"):
        step_environment("mlflow_prod", None)


# -------------------------------------------------------------------------------------------- operator


def operator(**kwargs: Any) -> Any:
    from mlops_ops.operators import IngestOperator

    return IngestOperator(task_id="ingest", source="s3://mlops/data.csv", target="churned", **kwargs)


CONTEXT: dict[str, Any] = {"run_id": "manual__2026-01-01"}


def test_the_operator_hands_settings_as_env_and_credentials_as_secret_env(connections: None) -> None:
    op = operator()
    env, secrets = op.step_env(CONTEXT), op.secret_env(CONTEXT)
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.test:5000"
    assert env["AWS_ENDPOINT_URL_S3"] == "http://s3.test:8333"
    assert secrets == {
        "MLFLOW_TRACKING_USERNAME": "alice",
        "MLFLOW_TRACKING_PASSWORD": PASSWORD,
        "AWS_ACCESS_KEY_ID": "mlops",
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    assert PASSWORD not in json.dumps(env) and SECRET_KEY not in json.dumps(env)


def test_an_explicit_tracking_uri_wins_over_the_connection(connections: None) -> None:
    op = operator(tracking_uri="http://override:5000")
    assert op.step_env(CONTEXT)["MLFLOW_TRACKING_URI"] == "http://override:5000"
    assert op.secret_env(CONTEXT)["MLFLOW_TRACKING_PASSWORD"] == PASSWORD


def test_the_operator_reads_the_named_connection(connections: None) -> None:
    op = operator(mlflow_conn_id="mlflow_team", s3_conn_id=None)
    assert op.step_env(CONTEXT)["MLFLOW_TRACKING_URI"] == "http://team:5000"
    assert "AWS_SECRET_ACCESS_KEY" not in op.secret_env(CONTEXT)


def test_a_missing_named_connection_fails_the_task_without_retry() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="'mlflow_prod' is not defined"):
        operator(mlflow_conn_id="mlflow_prod").step_env(CONTEXT)


def test_connection_ids_are_templated() -> None:
    from mlops_ops.operators.base import MlopsStepOperator

    assert {"mlflow_conn_id", "s3_conn_id"} <= set(MlopsStepOperator.template_fields)
    op = operator()
    assert (op.mlflow_conn_id, op.s3_conn_id) == (MLFLOW_DEFAULT_CONN_ID, S3_DEFAULT_CONN_ID)


def test_the_mlflow_connection_type_is_declared_for_the_ui() -> None:
    from mlops_ops.provider import get_provider_info

    (declared,) = get_provider_info()["connection-types"]
    assert declared["connection-type"] == MlflowHook.conn_type == "mlflow"
    assert declared["hook-class-name"] == f"{MlflowHook.__module__}.{MlflowHook.__qualname__}"
    assert MlflowHook.default_conn_name == MLFLOW_DEFAULT_CONN_ID
    assert declared["conn-fields"]["token"]["schema"]["format"] == "password"  # hidden in the form
