"""Tests of the artifact store on a local folder and on a real S3 server (SeaweedFS on loopback)."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

import mlops_ops.store.s3 as store_s3
from mlops_ops.errors import DataError, SpecError, StoreError
from mlops_ops.settings import DATA_ROOTS_ENV, default_data_roots
from mlops_ops.store import S3Settings, Store, local_failure, local_path, readable_path, s3_failure, sha256_file
from tests.servers.s3 import S3Server

MIB = 1 << 20


@pytest.fixture(autouse=True)
def private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Send the store's temporary files to a folder of this test's own, so leftovers can be seen."""
    folder = tmp_path / "tempdir"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture(params=["file", pytest.param("s3", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A store rooted in a fresh local folder, or under a fresh prefix of the real S3 server's bucket."""
    if request.param == "file":
        return Store((tmp_path / "artifacts").as_uri())
    server: S3Server = request.getfixturevalue("s3_server")
    request.getfixturevalue("s3_env")
    return Store(f"s3://{server.bucket}/{uuid.uuid4().hex}")


@pytest.fixture
def s3_store(s3_server: S3Server, s3_env: dict[str, str]) -> Store:
    """A store under a fresh prefix of the real S3 server's bucket, credentials from the environment."""
    return Store(f"s3://{s3_server.bucket}/{uuid.uuid4().hex}")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _s3_location(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


# ------------------------------------------------------------------------------------------ naming


def test_dataset_key_is_sharded_by_the_first_two_hex_digits() -> None:
    digest = hashlib.sha256(b"rows").hexdigest()

    assert Store.dataset_key(digest) == f"datasets/sha256/{digest[:2]}/{digest}.parquet"
    assert Store.dataset_key(digest, ".csv") == f"datasets/sha256/{digest[:2]}/{digest}.csv"


def test_uri_joins_the_key_to_the_root(tmp_path: Path) -> None:
    assert Store("s3://bucket/some/prefix/").uri("a/b.bin") == "s3://bucket/some/prefix/a/b.bin"
    assert Store(str(tmp_path)).uri("a/b.bin") == (tmp_path / "a" / "b.bin").as_uri()
    assert Store(tmp_path.as_uri()).uri("a/b.bin") == (tmp_path / "a" / "b.bin").as_uri()


@pytest.mark.parametrize("root", ["gs://bucket/prefix", "http://example.com/artifacts", "hdfs://nn/path"])
def test_an_unsupported_scheme_is_a_configuration_error(root: str) -> None:
    with pytest.raises(SpecError, match=re.escape(repr(root))):
        Store(root)


def test_s3_settings_prefer_the_most_specific_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "AWS_ENDPOINT_URL_S3": "http://s3-specific:1",
        "AWS_ENDPOINT_URL": "http://all-services:2",
        "MLFLOW_S3_ENDPOINT_URL": "http://mlflow:3",
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_ACCESS_KEY_ID": "key-id",
        "AWS_SECRET_ACCESS_KEY": "secret",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert S3Settings.from_env() == S3Settings("http://s3-specific:1", "eu-west-1", "key-id", "secret")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    monkeypatch.delenv("AWS_REGION")
    assert S3Settings.from_env().endpoint_url == "http://all-services:2"
    assert S3Settings.from_env().region == "us-west-2"
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert S3Settings.from_env().endpoint_url == "http://mlflow:3"


# ------------------------------------------------------------------------------- both back ends


def test_put_bytes_then_get_bytes_round_trips(store: Store) -> None:
    data = b"\x00binary\xffpayload\n" * 100

    uri = store.put_bytes("runs/r1/model.bin", data)

    assert uri == store.uri("runs/r1/model.bin")
    assert store.get_bytes(uri) == data


def test_put_bytes_overwrites_an_existing_object(store: Store) -> None:
    store.put_bytes("report.json", b"old")

    uri = store.put_bytes("report.json", b"new")

    assert store.get_bytes(uri) == b"new"


def test_put_file_copies_a_local_file_and_leaves_the_source(store: Store, tmp_path: Path) -> None:
    source = _write(tmp_path / "metrics.json", b'{"auc": 0.91}')

    uri = store.put_file("eval/metrics.json", source)

    assert uri == store.uri("eval/metrics.json")
    assert store.get_bytes(uri) == b'{"auc": 0.91}'
    assert source.read_bytes() == b'{"auc": 0.91}'


def test_exists_tells_present_from_absent(store: Store) -> None:
    uri = store.put_bytes("here.txt", b"x")

    assert store.exists(uri)
    assert not store.exists(store.uri("absent.txt"))
    assert not store.exists(store.uri("absent/deeper/key.txt"))


def test_same_bytes_get_the_same_key_and_digest_and_are_written_once(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"a,b\n1,2\n"
    first = _write(tmp_path / "one.csv", data)
    second = _write(tmp_path / "two.csv", data)  # another file, same content

    uri, digest = store.put_content_addressed(first, suffix=".csv")
    writes: list[str] = []
    real_put_file = store.put_file

    def counting_put_file(key: str, path: str | Path) -> str:
        writes.append(key)
        return real_put_file(key, path)

    monkeypatch.setattr(store, "put_file", counting_put_file)
    again_uri, again_digest = store.put_content_addressed(second, suffix=".csv")

    assert digest == hashlib.sha256(data).hexdigest() == sha256_file(first)
    assert uri == store.uri(Store.dataset_key(digest, ".csv"))
    assert (again_uri, again_digest) == (uri, digest)
    assert writes == [], "the second write of the same bytes must be skipped"
    assert store.get_bytes(uri) == data


def test_different_bytes_get_different_keys(store: Store, tmp_path: Path) -> None:
    uri_a, digest_a = store.put_content_addressed(_write(tmp_path / "a.parquet", b"A"))
    uri_b, digest_b = store.put_content_addressed(_write(tmp_path / "b.parquet", b"B"))

    assert digest_a != digest_b
    assert uri_a != uri_b
    assert (store.get_bytes(uri_a), store.get_bytes(uri_b)) == (b"A", b"B")


def test_fetch_copies_an_object_to_a_local_file(store: Store, tmp_path: Path) -> None:
    uri = store.put_bytes("data/train.parquet", b"PAR1...PAR1")

    dest = store.fetch(uri, tmp_path / "local.parquet")

    assert dest == tmp_path / "local.parquet"
    assert dest.read_bytes() == b"PAR1...PAR1"


def test_a_missing_object_is_a_data_error_naming_it(store: Store, tmp_path: Path, private_tempdir: Path) -> None:
    # Final, not retried: the object will not appear by asking again.
    uri = store.uri("no/such/object.bin")

    with pytest.raises(DataError, match=f"no object at {re.escape(uri)}"):
        store.get_bytes(uri)
    with pytest.raises(DataError, match=f"no object at {re.escape(uri)}"):
        store.fetch(uri, tmp_path / "out.bin")
    with pytest.raises(DataError, match=f"no object at {re.escape(uri)}"), store.open_local(uri):
        pass
    assert list(private_tempdir.iterdir()) == [], "a failed read must not leave a download folder behind"


def test_reads_and_writes_leave_no_temporary_files(store: Store, private_tempdir: Path) -> None:
    uri = store.put_bytes("k.bin", b"payload")
    assert store.get_bytes(uri) == b"payload"

    assert list(private_tempdir.iterdir()) == []


# ----------------------------------------------------------------------------------- local only


def test_a_local_write_appears_whole_under_its_name_only_when_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path.as_uri())
    dest = tmp_path / "models" / "model.bin"
    data = os.urandom(3 * MIB)
    seen: list[tuple[Path, bool, bool]] = []
    real_replace = os.replace

    def spying_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        src_path = Path(src)
        # What a concurrent reader could see just before the rename: nothing under the final name.
        seen.append((src_path, Path(dst).exists(), src_path.read_bytes() == data))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spying_replace)
    store.put_bytes("models/model.bin", data)

    [(part, dest_existed, part_complete)] = seen
    assert part.parent == dest.parent, "the .part file must sit beside its destination (same filesystem)"
    assert part.name.startswith(".model.bin.") and part.name.endswith(".part")
    assert not dest_existed
    assert part_complete
    assert dest.read_bytes() == data
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.bin"]


def test_a_local_overwrite_shows_the_old_bytes_until_the_new_are_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path.as_uri())
    uri = store.put_bytes("model.bin", b"old model")
    seen_before_rename: list[bytes] = []
    real_replace = os.replace

    def spying_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen_before_rename.append(Path(dst).read_bytes())
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spying_replace)
    store.put_bytes("model.bin", b"new model")

    assert seen_before_rename == [b"old model"]
    assert store.get_bytes(uri) == b"new model"


def test_a_failed_local_write_leaves_no_part_file_and_no_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path.as_uri())

    def failing_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(StoreError, match=r"cannot write .*model\.bin: .*No space left"):
        store.put_bytes("out/model.bin", b"data")

    assert list((tmp_path / "out").iterdir()) == []


def test_a_local_artifact_gets_the_mode_of_a_normal_new_file(tmp_path: Path) -> None:
    store = Store((tmp_path / "store").as_uri())
    reference = tmp_path / "reference"
    reference.write_bytes(b"")  # created by open(): 0o666 less the umask, like any new file

    path = local_path(store.put_bytes("a.bin", b"x"))

    assert path is not None
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(reference.stat().st_mode)


def test_open_local_of_a_local_object_is_the_file_itself(tmp_path: Path) -> None:
    store = Store(tmp_path.as_uri())
    uri = store.put_bytes("data.csv", b"a\n1\n")

    with store.open_local(uri) as path:
        assert path == tmp_path / "data.csv"

    assert path.read_bytes() == b"a\n1\n", "the store's own file must survive the context"


# -------------------------------------------------------------------------------------- S3 only


@pytest.mark.integration
def test_open_local_downloads_to_a_temporary_file_that_is_removed(s3_store: Store, private_tempdir: Path) -> None:
    uri = s3_store.put_bytes("data/features.parquet", b"PAR1 features PAR1")

    with s3_store.open_local(uri) as path:
        assert path.is_file()
        assert path.name == "features.parquet"
        assert path.is_relative_to(private_tempdir)
        assert path.read_bytes() == b"PAR1 features PAR1"

    assert not path.exists()
    assert list(private_tempdir.iterdir()) == []


@pytest.mark.integration
def test_a_file_above_the_threshold_goes_up_in_parts(
    s3_server: S3Server, s3_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_s3, "MULTIPART_THRESHOLD", 5 * MIB)
    store = Store(f"s3://{s3_server.bucket}/{uuid.uuid4().hex}")  # a new store builds its transfer config anew
    assert store._transfer_config.multipart_threshold == 5 * MIB
    big = _write(tmp_path / "big.bin", os.urandom(12 * MIB))
    small = _write(tmp_path / "small.bin", os.urandom(1 * MIB))

    big_uri = store.put_file("big.bin", big)
    small_uri = store.put_file("small.bin", small)

    client = s3_server.client()
    big_etag = client.head_object(Bucket=s3_server.bucket, Key=_s3_location(big_uri)[1])["ETag"].strip('"')
    small_etag = client.head_object(Bucket=s3_server.bucket, Key=_s3_location(small_uri)[1])["ETag"].strip('"')
    assert big_etag.endswith("-3"), f"12 MiB in 5 MiB parts is 3 parts, got ETag {big_etag!r}"
    assert "-" not in small_etag
    assert sha256_file(store.fetch(big_uri, tmp_path / "big.back")) == sha256_file(big)


@pytest.mark.integration
def test_credentials_are_read_from_the_environment(s3_server: S3Server, s3_env: dict[str, str]) -> None:
    store = Store(f"s3://{s3_server.bucket}/{uuid.uuid4().hex}")  # no settings given: the environment's

    uri = store.put_bytes("env.txt", b"signed with env credentials")

    bucket, key = _s3_location(uri)
    assert s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read() == b"signed with env credentials"


@pytest.mark.integration
@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(lambda store: store.put_bytes("denied.txt", b"x"), id="put_bytes"),
        pytest.param(lambda store: store.exists(store.uri("seeded.txt")), id="exists"),
        pytest.param(lambda store: store.get_bytes(store.uri("seeded.txt")), id="get_bytes"),
    ],
)
def test_wrong_credentials_are_a_configuration_error_not_a_botocore_traceback(
    s3_server: S3Server,
    s3_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    operation: Callable[[Store], object],
) -> None:
    prefix = uuid.uuid4().hex
    Store(f"s3://{s3_server.bucket}/{prefix}").put_bytes("seeded.txt", b"there")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    store = Store(f"s3://{s3_server.bucket}/{prefix}")

    with pytest.raises(SpecError, match=f"cannot (read|write) {re.escape(store.root)}/.*: access denied") as caught:
        operation(store)

    assert "AWS_SECRET_ACCESS_KEY" in str(caught.value) and "s3_default" in str(caught.value)

    assert type(caught.value.__cause__).__module__.startswith(("botocore", "boto3"))


# ------------------------------------------------------------------ which failures are retried


@pytest.fixture
def no_s3_credentials(
    s3_server: S3Server, s3_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real S3 server's endpoint, and no credentials anywhere boto3 looks (env, files, instance metadata)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.integration
@pytest.mark.parametrize(
    "operation",
    [
        pytest.param(lambda store: store.put_bytes("x.txt", b"x"), id="put_bytes"),
        pytest.param(lambda store: store.exists(store.uri("x.txt")), id="exists"),
        pytest.param(lambda store: store.get_bytes(store.uri("x.txt")), id="get_bytes"),
    ],
)
def test_no_credentials_is_a_configuration_error_that_says_what_to_set(
    s3_server: S3Server, no_s3_credentials: None, operation: Callable[[Store], object]
) -> None:
    store = Store(f"s3://{s3_server.bucket}/{uuid.uuid4().hex}")

    with pytest.raises(SpecError, match="Unable to locate credentials") as caught:
        operation(store)

    assert caught.value.exit_code == 2, "retrying cannot conjure credentials"
    for what in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "s3_default"):
        assert what in str(caught.value)


@pytest.mark.parametrize("endpoint", ["localhost:8333", "http://bad host:8333", "http://[::1"])
def test_a_malformed_endpoint_url_is_a_configuration_error(endpoint: str) -> None:
    store = Store("s3://bucket/prefix", S3Settings(endpoint_url=endpoint, access_key="k", secret_key="s"))

    with pytest.raises(SpecError, match=f"endpoint URL {re.escape(repr(endpoint))} is malformed.*AWS_ENDPOINT_URL_S3"):
        store.exists("s3://bucket/prefix/x")


def _client_error(status: int, code: str) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


def _botocore(name: str, **kwargs: str) -> Exception:
    from botocore import exceptions

    return getattr(exceptions, name)(**kwargs)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        pytest.param(
            lambda: _botocore("EndpointConnectionError", endpoint_url="http://s3:1"), StoreError, id="refused"
        ),
        pytest.param(lambda: _botocore("ConnectTimeoutError", endpoint_url="http://s3:1"), StoreError, id="timeout"),
        pytest.param(lambda: _botocore("ReadTimeoutError", endpoint_url="http://s3:1"), StoreError, id="read-timeout"),
        pytest.param(lambda: _client_error(500, "InternalError"), StoreError, id="500"),
        pytest.param(lambda: _client_error(503, "SlowDown"), StoreError, id="503-slow-down"),
        pytest.param(lambda: _client_error(400, "RequestTimeout"), StoreError, id="400-request-timeout"),
        pytest.param(lambda: _client_error(429, "TooManyRequests"), StoreError, id="429"),
        pytest.param(lambda: _botocore("NoCredentialsError"), SpecError, id="no-credentials"),
        pytest.param(
            lambda: _botocore("PartialCredentialsError", provider="env", cred_var="x"), SpecError, id="partial"
        ),
        pytest.param(lambda: _client_error(403, "AccessDenied"), SpecError, id="403-access-denied"),
        pytest.param(lambda: _client_error(403, "InvalidAccessKeyId"), SpecError, id="403-unknown-key"),
        pytest.param(lambda: _client_error(404, "NoSuchBucket"), SpecError, id="404-no-such-bucket"),
        pytest.param(lambda: _client_error(400, "InvalidArgument"), SpecError, id="400-bad-request"),
        pytest.param(
            lambda: _botocore("ParamValidationError", report="Invalid bucket name\n 'B!'"), SpecError, id="param"
        ),
    ],
)
def test_failures_that_may_heal_are_retried_and_the_others_are_final(
    make: Callable[[], Exception], kind: type[Exception]
) -> None:
    error = s3_failure(make(), "read s3://b/k")

    assert type(error) is kind
    assert str(error).startswith("cannot read s3://b/k: ") and "\n" not in str(error)


@pytest.mark.parametrize(
    ("number", "kind"),
    [(errno.ENOSPC, StoreError), (errno.EIO, StoreError), (errno.EACCES, SpecError), (errno.EROFS, SpecError)],
)
def test_local_failures_are_final_when_permissions_forbid_them(number: int, kind: type[Exception]) -> None:
    error = local_failure(OSError(number, os.strerror(number)), "write /a/b")

    assert type(error) is kind and str(error).startswith(f"cannot write /a/b: {os.strerror(number)}")


@pytest.mark.parametrize("uri", ["s3://", "s3:///key-without-bucket"])
def test_an_s3_uri_without_a_bucket_is_a_configuration_error(uri: str) -> None:
    with pytest.raises(SpecError, match="is not an s3://bucket/key URI"):
        Store("s3://bucket/prefix").exists(uri)


def test_a_failed_upload_is_classified_by_the_code_in_its_text() -> None:
    from boto3.exceptions import S3UploadFailedError

    denied = S3UploadFailedError("Failed to upload f to b/k: An error occurred (SignatureDoesNotMatch) when calling")
    slow = S3UploadFailedError("Failed to upload f to b/k: An error occurred (SlowDown) when calling")

    assert type(s3_failure(denied, "write s3://b/k")) is SpecError
    assert type(s3_failure(slow, "write s3://b/k")) is StoreError


# ------------------------------------------------------------------------- which files are read


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A data root holding ``data.csv``, and beside it a folder no setting allows holding ``secret.txt``."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "data.csv").write_text("a\n1\n")
    (outside / "secret.txt").write_text("password\n")
    monkeypatch.setenv(DATA_ROOTS_ENV, str(allowed))
    return allowed, outside


def test_a_file_under_a_data_root_is_read(roots: tuple[Path, Path], tmp_path: Path) -> None:
    allowed, _ = roots
    store = Store((tmp_path / "artifacts").as_uri())

    assert store.exists(str(allowed / "data.csv"))
    assert store.get_bytes((allowed / "data.csv").as_uri()) == b"a\n1\n"
    assert readable_path(str(allowed / "sub" / ".." / "data.csv")) == allowed / "data.csv"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("outside/secret.txt", id="outside"),
        pytest.param("allowed/../outside/secret.txt", id="dot-dot"),
        pytest.param("allowed/link-out/secret.txt", id="symlinked-folder"),
        pytest.param("allowed/secret-link.txt", id="symlinked-file"),
        pytest.param("outside/absent.csv", id="absent-outside"),
    ],
)
def test_a_file_outside_the_data_roots_is_refused_before_it_is_opened(
    roots: tuple[Path, Path], tmp_path: Path, name: str
) -> None:
    allowed, outside = roots
    (allowed / "link-out").symlink_to(outside)
    (allowed / "secret-link.txt").symlink_to(outside / "secret.txt")
    store = Store((tmp_path / "artifacts").as_uri())
    source = str(tmp_path / name)

    for read in (store.exists, store.get_bytes, store.check_readable, lambda uri: store.fetch(uri, tmp_path / "copy")):
        with pytest.raises(SpecError, match=f"outside the folders a spec may read.*{DATA_ROOTS_ENV}") as caught:
            read(source)
        assert "password" not in str(caught.value)
    assert not (tmp_path / "copy").exists()


def test_a_symlink_that_stays_under_the_root_is_read(roots: tuple[Path, Path], tmp_path: Path) -> None:
    allowed, _ = roots
    (allowed / "alias.csv").symlink_to(allowed / "data.csv")

    assert Store(tmp_path.as_uri()).get_bytes(str(allowed / "alias.csv")) == b"a\n1\n"


def test_the_store_reads_under_its_own_root_whatever_the_data_roots(roots: tuple[Path, Path], tmp_path: Path) -> None:
    store = Store((tmp_path / "artifacts").as_uri())
    uri = store.put_bytes("results/r.json", b"{}")

    assert store.exists(uri) and store.get_bytes(uri) == b"{}"
    with pytest.raises(SpecError, match=DATA_ROOTS_ENV):
        Store((tmp_path / "other").as_uri()).get_bytes(uri)


def test_several_roots_are_separated_by_the_path_separator(
    roots: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    allowed, outside = roots
    monkeypatch.setenv(DATA_ROOTS_ENV, os.pathsep.join([str(allowed), str(outside)]))

    assert Store(tmp_path.as_uri()).get_bytes(str(outside / "secret.txt")) == b"password\n"


@pytest.mark.parametrize(
    ("uri", "message"),
    [("data\x00.csv", "NUL byte"), ("loop/x.csv", "cannot resolve the path")],
)
def test_a_path_that_cannot_be_resolved_is_a_spec_error(
    uri: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    monkeypatch.chdir(tmp_path)

    with pytest.raises(SpecError, match=message):
        Store(str(tmp_path / "artifacts")).exists(uri)


def test_by_default_the_working_directory_home_and_demo_folder_are_roots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_ops.demo import SUITE_PATH

    monkeypatch.delenv(DATA_ROOTS_ENV, raising=False)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")

    assert default_data_roots() == [tmp_path / "project", tmp_path / "home", SUITE_PATH.parent]


@pytest.mark.parametrize("where", ["user", "/"])
def test_a_working_directory_that_holds_the_users_home_is_not_a_default_root(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pod whose working directory is / (or a shell in ~) would otherwise expose every file, ~/.ssh too.
    monkeypatch.delenv(DATA_ROOTS_ENV, raising=False)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    (tmp_path / "user").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.chdir(tmp_path / where)

    assert Path.cwd() not in default_data_roots()
    with pytest.raises(SpecError, match=DATA_ROOTS_ENV):
        readable_path(str(Path.cwd() / "notes.txt"))
