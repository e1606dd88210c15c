"""docker-compose.yaml without a Docker engine: valid by the Compose specification, and wired as mlops-ops expects.

The file is validated against the Compose specification's JSON schema (``check-jsonschema``'s builtin
``vendor.compose-spec``), then interpolated the way Compose does with the values of ``.env.example`` and
checked service by service: commands, ports, health checks, start-up order, the DAGs folder, the
connections the operators read, and that no value is a literal secret.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "docker" / "airflow.Dockerfile"

AIRFLOW = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
ONE_SHOT = {"postgres-init", "minio-init", "airflow-init"}
SERVICES = {"postgres", "minio", "mlflow", *ONE_SHOT, *AIRFLOW}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|JWT|PRIVATE|CREDENTIAL|ACCESS_KEY", re.IGNORECASE)
#: ``$$``, ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}``, ``${NAME:?error}``, ``${NAME?error}``, ``$NAME``.
_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_]\w*))"
)


# -------------------------------------------------------------------------------------- interpolation


def env_example() -> dict[str, str]:
    """The variables of .env.example and their placeholder values."""
    found = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: {line!r} is not NAME=value"
            found[name.strip()] = value
    return found


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation of one string."""

    def value(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name, op, arg = m["name"] or m["bare"], m["op"], m["arg"]
        found = env.get(name)
        if op in (":-", "-") and (found is None or (op == ":-" and found == "")):
            return str(arg)
        if op in (":?", "?") and (found is None or (op == ":?" and found == "")):
            raise KeyError(f"required variable {name} is not set: {arg}")
        return found or ""

    return _VAR.sub(value, text)


def references(text: str) -> Iterator[re.Match[str]]:
    """The variable references in a string (not ``$$`` escapes)."""
    return (m for m in _VAR.finditer(text) if not m["escaped"])


def strings(node: Any) -> Iterator[str]:
    """Every string value in a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for item in node.values():
            yield from strings(item)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def rendered(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: rendered(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [rendered(value, env) for value in node]
    return node


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """The file as written (YAML anchors and merge keys resolved, variables not)."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


@pytest.fixture(scope="module")
def config(raw: dict[str, Any]) -> dict[str, Any]:
    """The file as Compose sees it with the values of .env.example."""
    return rendered(raw, env_example())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return config["services"]  # type: ignore[no-any-return]


def flags(command: list[str]) -> dict[str, str]:
    """``--name value`` pairs of a command line (a flag without a value maps to "")."""
    found: dict[str, str] = {}
    for i, word in enumerate(command):
        if word.startswith("--"):
            following = command[i + 1] if i + 1 < len(command) else "--"
            found[word] = "" if following.startswith("--") else following
    return found


def published(service: dict[str, Any]) -> dict[int, str]:
    """Container port to host address of a service's published ports (``host_ip:host_port:container``)."""
    found = {}
    for port in service.get("ports", []):
        host_ip, host_port, target = str(port).rsplit(":", 2)
        found[int(target)] = f"{host_ip}:{host_port}"
    return found


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Mount target to source of a service's volumes (short syntax)."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = str(volume).split(":")
        found[target] = source
    return found


# ------------------------------------------------------------------------------------------ the schema


def test_valid_by_the_compose_specification() -> None:
    checker = Path(sys.executable).with_name("check-jsonschema")
    done = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_variable_is_documented_in_env_example(raw: dict[str, Any]) -> None:
    documented = env_example()
    used = {m["name"] or m["bare"] for text in strings(raw) for m in references(text)}
    assert sorted(used - documented.keys()) == [], "variables used in docker-compose.yaml but not in .env.example"
    assert sorted(documented.keys() - used) == [], "variables in .env.example that docker-compose.yaml does not use"
    # Each variable (or a run of related ones) sits right under a comment that says what it is.
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            above = i - 1
            while above >= 0 and lines[above] and not lines[above].startswith("#"):
                above -= 1
            assert above >= 0 and lines[above].startswith("# "), f".env.example: {line} has no comment above it"


# ------------------------------------------------------------------------------------------ the shape


def test_the_services_and_their_roles(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == SERVICES
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service["restart"] == "no" and "ports" not in service, name
        else:
            assert service["restart"] == "unless-stopped", name
            assert service["healthcheck"]["test"], f"{name} is long-running and has no health check"


def test_start_up_order_waits_on_conditions(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            wanted = "service_completed_successfully" if dependency in ONE_SHOT else "service_healthy"
            assert rule == {"condition": wanted}, f"{name} -> {dependency}: {rule}"
    # Acyclic, and everything but the two stores waits for something.
    order: list[str] = []
    while len(order) < len(services):
        ready = [n for n, s in services.items() if n not in order and set(s.get("depends_on", {})) <= set(order)]
        assert ready, f"depends_on has a cycle among {sorted(set(services) - set(order))}"
        order += sorted(ready)
    assert {n for n, s in services.items() if not s.get("depends_on")} == {"postgres", "minio"}
    assert order.index("airflow-init") < order.index("airflow-apiserver") < order.index("airflow-scheduler")
    assert order.index("mlflow") < order.index("airflow-scheduler")


def test_state_lives_in_named_volumes(config: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(config["volumes"])
    for name, service in services.items():
        for source in mounts(service).values():
            assert source.startswith((".", "/")) or source in declared, f"{name}: {source} is not a named volume"
    assert mounts(services["postgres"])["/var/lib/postgresql/data"] == "postgres-data"
    data_dir = services["minio"]["command"][1]
    assert mounts(services["minio"])[data_dir] == "minio-data"
    for name in AIRFLOW:
        assert mounts(services[name])["/opt/airflow/logs"] == "airflow-logs", name


def test_ports_are_published_on_loopback_only(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for target, host in published(service).items():
            assert host.startswith("127.0.0.1:"), f"{name} publishes {target} on {host}"


# -------------------------------------------------------------------------------------------- Airflow


def test_airflow_services_share_one_configuration(services: dict[str, dict[str, Any]]) -> None:
    base = services["airflow-apiserver"]["environment"]
    assert base["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    for name in AIRFLOW:
        env = services[name]["environment"]
        assert {k: env[k] for k in base} == base, f"{name} differs from the API server's configuration"
        assert services[name]["image"] == services["airflow-apiserver"]["image"]
    metadata = urlsplit(base["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert (metadata.scheme, metadata.hostname, metadata.port, metadata.path) == (
        "postgresql+psycopg2", "postgres", 5432, "/airflow"
    )  # fmt: skip
    assert "for app in airflow mlflow" in services["postgres-init"]["command"][0]


def test_api_server_port_agrees_everywhere(services: dict[str, dict[str, Any]]) -> None:
    api = services["airflow-apiserver"]
    assert api["command"][:2] == ["airflow", "api-server"]
    port = int(flags(api["command"])["--port"])
    assert port == 8080
    assert port in published(api)
    assert f"http://localhost:{port}/api/v2/monitor/health" in " ".join(api["healthcheck"]["test"])
    assert (
        api["environment"]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://airflow-apiserver:{port}/execution/"
    )


def test_scheduler_dag_processor_and_triggerer(services: dict[str, dict[str, Any]]) -> None:
    from airflow.configuration import conf

    scheduler = services["airflow-scheduler"]
    assert scheduler["command"] == ["airflow", "scheduler"]
    assert scheduler["environment"]["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "True"
    health_port = conf.get("scheduler", "scheduler_health_check_server_port")
    assert f"http://localhost:{health_port}/health" in " ".join(scheduler["healthcheck"]["test"])
    for name, job in (("airflow-dag-processor", "DagProcessorJob"), ("airflow-triggerer", "TriggererJob")):
        service = services[name]
        assert service["command"] == ["airflow", name.removeprefix("airflow-")]
        assert f"airflow jobs check --job-type {job}" in " ".join(service["healthcheck"]["test"])


def test_dags_folder_is_mounted_where_airflow_looks(services: dict[str, dict[str, Any]]) -> None:
    for name in AIRFLOW:
        service = services[name]
        folder = service["environment"]["AIRFLOW__CORE__DAGS_FOLDER"]
        source = mounts(service).get(folder)
        assert source is not None, f"{name}: nothing is mounted at the DAGs folder {folder}"
        assert (REPO / source / "mlops_training.py").is_file(), f"{name}: {source} holds no mlops_training.py"


def test_init_migrates_and_checks_the_connections(services: dict[str, dict[str, Any]]) -> None:
    from mlops_ops.connections import MLFLOW_DEFAULT_CONN_ID, S3_DEFAULT_CONN_ID

    script = services["airflow-init"]["command"][0]
    assert script.index("airflow db migrate") < script.index(f"airflow connections get {MLFLOW_DEFAULT_CONN_ID}")
    assert f"airflow connections get {S3_DEFAULT_CONN_ID}" in script


# ------------------------------------------------------------------------------ MLflow, S3, connections


def connection(services: dict[str, dict[str, Any]], conn_id: str) -> Any:
    """The Airflow connection ``conn_id`` as the scheduler's environment defines it."""
    from airflow.sdk import Connection

    value = services["airflow-scheduler"]["environment"].get(f"AIRFLOW_CONN_{conn_id.upper()}")
    assert value is not None, f"no AIRFLOW_CONN_{conn_id.upper()} in the Airflow services"
    return Connection.from_json(value, conn_id=conn_id)


def test_connection_ids_are_the_operator_defaults() -> None:
    from mlops_ops.connections import MLFLOW_DEFAULT_CONN_ID, S3_DEFAULT_CONN_ID
    from mlops_ops.operators.base import MlopsStepOperator

    defaults = inspect.signature(MlopsStepOperator.__init__).parameters
    assert defaults["mlflow_conn_id"].default == MLFLOW_DEFAULT_CONN_ID == "mlflow_default"
    assert defaults["s3_conn_id"].default == S3_DEFAULT_CONN_ID == "s3_default"


def test_mlflow_server_and_the_mlflow_connection_agree(services: dict[str, dict[str, Any]]) -> None:
    from mlops_ops.connections import MLFLOW_CONN_TYPE, MLFLOW_DEFAULT_CONN_ID, mlflow_environment

    mlflow = services["mlflow"]
    assert mlflow["command"][:2] == ["mlflow", "server"]
    options = flags(mlflow["command"])
    port = int(options["--port"])
    assert options["--host"] == "0.0.0.0" and port in published(mlflow)
    assert f"http://localhost:{port}/health" in " ".join(mlflow["healthcheck"]["test"])
    conn = connection(services, MLFLOW_DEFAULT_CONN_ID)
    assert conn.conn_type == MLFLOW_CONN_TYPE
    step_env = mlflow_environment(conn)
    assert step_env.env["MLFLOW_TRACKING_URI"] == f"http://mlflow:{port}" and not step_env.secrets
    assert f"mlflow:{port}" in options["--allowed-hosts"].split(","), "MLflow would refuse Host: mlflow"
    store = urlsplit(options["--backend-store-uri"])
    assert (store.scheme, store.username, store.hostname, store.port, store.path) == (
        "postgresql+psycopg2", "mlflow", "postgres", 5432, "/mlflow"
    )  # fmt: skip
    assert "--serve-artifacts" in options
    artifacts = urlsplit(options["--artifacts-destination"])
    assert artifacts.scheme == "s3" and artifacts.netloc == env_example()["MLOPS_BUCKET"]


def test_s3_endpoint_bucket_and_the_s3_connection_agree(services: dict[str, dict[str, Any]]) -> None:
    from mlops_ops.connections import S3_DEFAULT_CONN_ID, s3_environment

    minio = services["minio"]
    port = int(flags(minio["command"])["--address"].rpartition(":")[2])
    endpoint = f"http://minio:{port}"
    conn = connection(services, S3_DEFAULT_CONN_ID)
    assert conn.conn_type == "aws"
    step_env = s3_environment(conn)
    example = env_example()
    assert step_env.env["AWS_ENDPOINT_URL_S3"] == endpoint
    assert step_env.env["AWS_REGION"] == example["MLOPS_S3_REGION"]
    assert step_env.secrets == {
        "AWS_ACCESS_KEY_ID": example["MLOPS_S3_ACCESS_KEY"],
        "AWS_SECRET_ACCESS_KEY": example["MLOPS_S3_SECRET_KEY"],
    }
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == endpoint
    assert f"mc alias set local {endpoint} " in services["minio-init"]["command"][0]
    bucket = example["MLOPS_BUCKET"]
    assert services["minio-init"]["environment"]["MLOPS_BUCKET"] == bucket
    root = urlsplit(services["airflow-scheduler"]["environment"]["MLOPS_ARTIFACT_ROOT"])
    assert (root.scheme, root.netloc) == ("s3", bucket)


# -------------------------------------------------------------------------------------------- secrets


def secret_problems(raw: dict[str, Any]) -> list[str]:
    """Values in a raw compose tree that are, or could carry, a literal secret."""
    found = []
    for service, env in _environments(raw):
        for key, value in env.items():
            names_a_file = key.endswith(("_FILE", "_PATH"))
            if SECRET_NAME.search(key) and not names_a_file and not re.fullmatch(r"\$\{\w+(:?\?[^}]*)?\}", str(value)):
                found.append(f"{service}: {key} is not taken from a required .env variable: {value!r}")
    for text in strings(raw):
        found += _literal_secrets(text)
    return found


def _literal_secrets(text: str) -> list[str]:
    found = []
    for m in references(text):
        if SECRET_NAME.search(m["name"] or m["bare"]) and m["op"] in (":-", "-"):
            found.append(f"secret variable with a default (a hard-coded secret): {m[0]}")
    plain = _VAR.sub("", text)  # what is left once every variable is taken out
    for url in re.finditer(r"[a-z][\w+.-]*://[^/\s:@]+:([^@\s]+)@", plain):
        found.append(f"password in a URL: {url[0]}")
    for field in re.finditer(r"\"(password|secret\w*|token|\w*_key)\"\s*:\s*\"([^\"]+)\"", plain, re.IGNORECASE):
        found.append(f"literal {field[1]} in JSON: {field[0]}")
    for token in re.findall(r"[A-Za-z0-9+/=]{20,}", plain):
        if re.search(r"[a-z]", token) and re.search(r"[A-Z]", token) and re.search(r"\d", token):
            found.append(f"looks like a key: {token}")
    return found


def _environments(raw: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, service in raw["services"].items():
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.partition("=")[::2] for item in env)
        yield name, env


def test_no_value_is_a_literal_secret(raw: dict[str, Any]) -> None:
    assert secret_problems(raw) == []


def test_env_example_holds_placeholders_not_secrets() -> None:
    for name, value in env_example().items():
        if SECRET_NAME.search(name):
            assert value.startswith("change-me"), f".env.example: {name} must be a change-me placeholder"


@pytest.mark.parametrize(
    "environment",
    [
        {"POSTGRES_PASSWORD": "hunter2"},
        {"AIRFLOW__CORE__FERNET_KEY": "${AIRFLOW_FERNET_KEY:-d6Vefz3G9U_ynXB3cr7y_Ak35tAHkEGAVxuz_B-jzWw=}"},
        {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://airflow:airflow@postgres/airflow"},
        {"AIRFLOW_CONN_S3_DEFAULT": '{"conn_type": "aws", "login": "k", "password": "s3cr3t"}'},
        {"SOME_SETTING": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"},
    ],
    ids=["plain", "default", "url", "json", "key-like"],
)
def test_the_secret_check_catches_literal_secrets(environment: dict[str, str]) -> None:
    assert secret_problems({"services": {"x": {"environment": environment}}}) != []


# ------------------------------------------------------------------------------------------ the image


def test_airflow_image_installs_the_locked_package_where_compose_expects() -> None:
    dockerfile = DOCKERFILE.read_text()
    assert "uv sync --frozen --no-dev --extra airflow --extra step --no-editable" in dockerfile
    assert "AIRFLOW_HOME=/opt/airflow" in dockerfile
    for folder in ("/opt/airflow/dags", "/opt/airflow/logs", "/opt/airflow/auth"):
        assert folder in dockerfile, f"{folder} is not created (owned by airflow) in the image"
    python = re.search(r"^ARG PYTHON_VERSION=(\S+)$", dockerfile, re.MULTILINE)
    assert python is not None and python[1] in ("3.11", "3.12")
    # pyproject's floor is Airflow 3.3 (durable reattach, human-in-the-loop): the lock holds one 3.3 release.
    lock = (REPO / "uv.lock").read_text()
    locked = re.findall(r'^name = "apache-airflow"\nversion = "([\d.]+)"', lock, re.MULTILINE)
    assert len(locked) == 1 and locked[0].startswith("3.3."), locked
