"""Bad input through the real CLI: every case exits 2 or 3 with one bounded error line and no traceback.

Each case runs ``mlops-ops step NAME --spec ...`` as a child process, as a runner or a pod would. Cases
that fail while the spec is read need no data and take well under a second; the few that must read a
file go through the ingest step and share one embedded home.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlops_ops.demo import DATA_DIR
from mlops_ops.settings import DATA_ROOTS_ENV, MAX_ERROR_LINE, MAX_SPEC_BYTES, MAX_SPEC_DEPTH
from mlops_ops.steps import registry
from tests.servers.s3 import S3Server

CLI = str(Path(sys.executable).with_name("mlops-ops"))
PREFIX = "mlops-ops: error: "
#: Text of a file no error may ever repeat.
SECRET = "root:x:0:0:hunter2:/root:/bin/bash"

REF = {"uri": "datasets/none.parquet", "digest": "0" * 64, "rows": 10, "columns": {"age": "int64"}}
TRAINED = {
    "mlflow_run_id": "r",
    "model_uri": "models:/m-1",
    "task": "classification",
    "target": "churned",
    "estimator": "sklearn.linear_model.LogisticRegression",
    "dataset_digest": "0" * 64,
    "dataset_uri": "datasets/none.parquet",
}
EVALUATION = {
    "passed": True,
    "candidate": TRAINED,
    "candidate_metrics": {"roc_auc": 0.9},
    "dataset_digest": "0" * 64,
}


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def wide(keys: int) -> dict[str, int]:
    return {f"key_{i}": i for i in range(keys)}


@dataclass(frozen=True)
class Case:
    """One bad input: the step, its ``--spec`` argument (or a file to pass as ``@file``), the exit code."""

    step: str
    spec: Any = None
    code: int = 2
    file: bytes | None = None
    raw: str | bytes | None = None


def spec_cases() -> dict[str, Case]:
    """Specs refused while they are read and checked: no step runs, no data is needed."""
    cases = {
        "not-json": Case("ingest", raw="{source: data.csv}"),
        "empty": Case("ingest", raw=""),
        "truncated": Case("ingest", raw='{"source": "a.csv"'),
        "nan": Case("train", raw='{"dataset": 1, "target": "y", "seed": NaN}'),
        "huge-int": Case("train", raw='{"seed": ' + "9" * 5000 + "}"),
        "invalid-utf8-argv": Case("ingest", raw=b'{"source": "\xff\xfe.csv"}'),
        "nul-escape": Case("ingest", spec={"source": "data.csv\u0000.txt"}),
        "lone-surrogate": Case("ingest", raw='{"source": "\\ud800.csv"}'),
        "forged-line-and-escapes": Case("ingest", spec={"source": "a.csv", "\u001b[2J\nmlops-ops: error: forged\r": 1}),
        "deep-100000": Case("train", file=deep(100_000).encode()),
        "deep-in-a-field": Case(
            "train",
            spec={"dataset": REF, "target": "y", "estimator_params": {"p": json.loads(deep(MAX_SPEC_DEPTH + 5))}},
        ),
        "too-large": Case("ingest", file=json.dumps({"source": "x" * (MAX_SPEC_BYTES + 1)}).encode()),
        "huge-format": Case("ingest", file=json.dumps({"source": "x.csv", "format": "f" * 500_000}).encode()),
        "huge-source": Case("ingest", file=json.dumps({"source": "s" * 500_000}).encode()),
        "wide-unknown-keys": Case("promote", file=json.dumps(wide(10_000)).encode()),
        "unknown-step": Case("no_such_step", spec={}),
        "file-not-utf8": Case("ingest", file=b'{"source": "caf\xe9.csv"}'),
        "file-utf16-bom": Case("ingest", file='{"source": "a.csv"}'.encode("utf-16")),
        "file-nul-bytes": Case("ingest", file=b'{"source": "a\x00.csv"}'),
        "file-missing": Case("ingest", raw="@no/such/spec.json"),
        "file-is-a-folder": Case("ingest", raw="@."),
        # wrong types, one or more per step
        "ingest-spec-is-string": Case("ingest", spec="x"),
        "ingest-spec-is-number": Case("ingest", spec=1),
        "ingest-source-number": Case("ingest", spec={"source": 1}),
        "ingest-split-string": Case("ingest", spec={"source": "a.csv", "split": "80/20"}),
        "ingest-format-unknown": Case("ingest", spec={"source": "a.csv", "format": "xml"}),
        "ingest-fraction-out-of-range": Case("ingest", spec={"source": "a.csv", "split": {"eval_fraction": 1e308}}),
        "validate-dataset-string": Case("validate", spec={"dataset": "x", "suite": "s.json"}),
        "validate-suite-list": Case("validate", spec={"dataset": REF, "suite": []}),
        "train-target-object": Case("train", spec={"dataset": REF, "target": {}}),
        "train-params-list": Case("train", spec={"dataset": REF, "target": "y", "estimator_params": []}),
        "train-estimator-os-system": Case("train", spec={"dataset": REF, "target": "y", "estimator": "os.system"}),
        "train-estimator-huge": Case("train", spec={"dataset": REF, "target": "y", "estimator": "os." + "a" * 100_000}),
        "evaluate-gates-string": Case(
            "evaluate", spec={"dataset": REF, "candidate": TRAINED, "registered_model": "m", "gates": "auc > 1"}
        ),
        "evaluate-candidate-number": Case("evaluate", spec={"dataset": REF, "candidate": 1, "registered_model": "m"}),
        "promote-alias-traversal": Case(
            "promote", spec={"evaluation": EVALUATION, "registered_model": "m", "alias": "../x"}
        ),
        "promote-evaluation-list": Case("promote", spec={"evaluation": [], "registered_model": "m"}),
    }
    # Every registered step, those added later and by other packages included, refuses the generic ones.
    for step in registry.names():
        for name, value in (("list", []), ("null", None)):
            cases[f"{step}-spec-is-{name}"] = Case(step, spec=value)
        cases[f"{step}-wide-dict"] = Case(step, file=json.dumps(wide(10_000) | {"x": "y" * 1000}).encode())
    return cases


def path_cases() -> dict[str, Case]:
    """Sources outside the data roots: refused before the step opens a file or an MLflow run."""
    return {
        "dot-dot": Case("ingest", spec={"source": "../" * 30 + "etc/passwd", "format": "csv"}),
        "absolute": Case("ingest", spec={"source": "/etc/passwd", "format": "csv"}),
        "file-uri": Case("ingest", spec={"source": "file:///etc/passwd", "format": "csv"}),
        "symlink-out": Case("ingest", spec={"source": "passwd-link.csv"}),
    }


def data_cases() -> dict[str, Case]:
    """Files under the working directory (a data root) that ingest opens and must refuse: exit 3."""
    return {
        "latin1": Case("ingest", spec={"source": "latin1.csv"}, code=3),
        "utf16-with-bom": Case("ingest", spec={"source": "utf16.csv"}, code=3),
        "nul-bytes": Case("ingest", spec={"source": "nul.csv"}, code=3),
        "ragged-secret": Case("ingest", spec={"source": "ragged.csv", "target": "b"}, code=3),
        "empty": Case("ingest", spec={"source": "empty.csv"}, code=3),
        "not-parquet": Case("ingest", spec={"source": "secret.parquet"}, code=3),
        "missing-dataset": Case("train", spec={"dataset": REF | {"uri": "nowhere.parquet"}, "target": "y"}, code=3),
        # validate reads its suite inside its MLflow run, so this one is slow too
        "validate-suite-outside": Case("validate", spec={"dataset": REF, "suite": "/etc/passwd"}, code=2),
    }


DATA_FILES: dict[str, Callable[[], bytes]] = {
    "latin1.csv": lambda: "name,churned\nJosé,1\nAna,0\n".encode("latin-1"),
    "utf16.csv": lambda: "name,churned\nAna,1\nBo,0\n".encode("utf-16"),
    "nul.csv": lambda: b"\x00" * 4096,
    "ragged.csv": lambda: f"a,b\n1,2\n3,{SECRET},4\n".encode(),
    "empty.csv": lambda: b"",
    "secret.parquet": lambda: f"{SECRET}\n".encode(),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working directory of every run: the bad files, and a symlink to a file outside it."""
    root = tmp_path_factory.mktemp("bad-input")
    for name, content in DATA_FILES.items():
        (root / name).write_bytes(content())
    outside = tmp_path_factory.mktemp("outside") / "passwd"
    outside.write_text(f"{SECRET}\n")
    (root / "passwd-link.csv").symlink_to(outside)
    return root


@pytest.fixture(scope="module")
def env(workdir: Path) -> dict[str, str]:
    """The default data roots apply (the working directory, MLOPS_HOME, the demo folder); no S3, no server."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_", "AWS_"))}
    return base | {"MLOPS_HOME": str(workdir / "home"), "PYTHONUNBUFFERED": "1"}


def run(case: Case, workdir: Path, env: dict[str, str], name: str) -> subprocess.CompletedProcess[bytes]:
    if case.file is not None:
        spec_file = workdir / f"{name}.json"
        spec_file.write_bytes(case.file)
        arg: str | bytes = f"@{spec_file}"
    elif case.raw is not None:
        arg = case.raw
    else:
        arg = json.dumps(case.spec)
    return subprocess.run(
        [CLI, "step", case.step, "--spec", arg], cwd=workdir, env=env, capture_output=True, timeout=300, check=False
    )


def assert_one_bounded_error_line(done: subprocess.CompletedProcess[bytes], code: int) -> str:
    stderr = done.stderr.decode("utf-8", "replace")
    errors = [line for line in stderr.splitlines() if line.startswith(PREFIX)]
    assert done.returncode == code, f"exit {done.returncode}, expected {code}:\n{stderr[-3000:]}"
    assert len(errors) == 1, stderr[-3000:]
    assert stderr.rstrip("\n").splitlines()[-1] == errors[0], "the error line comes last"
    assert len(errors[0]) <= MAX_ERROR_LINE, f"{len(errors[0])} characters"
    assert "Traceback" not in stderr
    assert "\x1b" not in stderr and "\r" not in stderr, "control characters are escaped"
    assert SECRET not in stderr and "hunter2" not in stderr
    assert done.stdout == b"", "no result manifest for a failed step"
    return errors[0]


@pytest.fixture(scope="module")
def fast_runs(workdir: Path, env: dict[str, str]) -> dict[str, subprocess.CompletedProcess[bytes]]:
    """Every case that needs no data, run once, a few processes at a time (each is mostly interpreter start-up)."""
    cases = spec_cases() | path_cases()
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(run, case, workdir, env, name) for name, case in cases.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("name", sorted(spec_cases()))
def test_a_bad_spec_exits_2_with_one_bounded_line(
    name: str, fast_runs: dict[str, subprocess.CompletedProcess[bytes]]
) -> None:
    line = assert_one_bounded_error_line(fast_runs[name], spec_cases()[name].code)
    assert line.startswith(f"{PREFIX}SpecError: ")


@pytest.mark.parametrize("name", sorted(path_cases()))
def test_a_path_outside_the_data_roots_exits_2_naming_the_setting(
    name: str, fast_runs: dict[str, subprocess.CompletedProcess[bytes]]
) -> None:
    line = assert_one_bounded_error_line(fast_runs[name], 2)
    assert "outside the folders a spec may read" in line and DATA_ROOTS_ENV in line


@pytest.mark.slow
def test_the_data_roots_setting_lets_a_deployment_allow_a_folder(workdir: Path, env: dict[str, str]) -> None:
    # Allowed now, the file is read and found wanting (one line, no rows): a data error that never quotes it.
    roots = os.pathsep.join([str((workdir / "passwd-link.csv").resolve().parent), str(workdir)])
    done = run(path_cases()["symlink-out"], workdir, env | {DATA_ROOTS_ENV: roots}, "allowed")
    line = assert_one_bounded_error_line(done, 3)
    assert line.startswith(f"{PREFIX}DataError: ") and "has a header but no rows" in line


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(data_cases()))
def test_a_bad_file_exits_3_without_quoting_it(name: str, workdir: Path, env: dict[str, str]) -> None:
    case = data_cases()[name]
    line = assert_one_bounded_error_line(run(case, workdir, env, name), case.code)
    assert line.startswith(f"{PREFIX}{'DataError' if case.code == 3 else 'SpecError'}: ")


def test_a_bug_exits_1_with_one_line_and_the_traceback_only_when_verbose(
    workdir: Path, env: dict[str, str], tmp_path: Path
) -> None:
    # A step module that raises what no step turns into our errors stands in for a bug.
    (tmp_path / "sitecustomize.py").write_text(
        "import mlops_ops.store as s\n"
        "def boom(*a, **k):\n"
        "    raise KeyError('x' * 100000)\n"
        "s.Store.check_readable = boom\n"
    )
    buggy = env | {"PYTHONPATH": os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])}
    spec = json.dumps({"source": str(DATA_DIR / "churn.csv")})

    quiet = subprocess.run(
        [CLI, "step", "ingest", "--spec", spec], cwd=workdir, env=buggy, capture_output=True, check=False
    )
    loud = subprocess.run(
        [CLI, "step", "ingest", "--spec", spec, "--verbose"], cwd=workdir, env=buggy, capture_output=True, check=False
    )

    line = assert_one_bounded_error_line_allowing_traceback(quiet, traceback=False)
    assert line.startswith(f"{PREFIX}KeyError: 'xxx") and "more characters" in line
    assert line.endswith("(unexpected, a bug in mlops-ops; rerun with --verbose for the traceback)")
    loud_line = assert_one_bounded_error_line_allowing_traceback(loud, traceback=True)
    assert loud_line.endswith("(unexpected, a bug in mlops-ops)")


def assert_one_bounded_error_line_allowing_traceback(
    done: subprocess.CompletedProcess[bytes], *, traceback: bool
) -> str:
    stderr = done.stderr.decode()
    errors = [line for line in stderr.splitlines() if line.startswith(PREFIX)]
    assert done.returncode == 1, stderr[-3000:]
    assert len(errors) == 1 and stderr.rstrip("\n").splitlines()[-1] == errors[0], stderr[-3000:]
    assert len(errors[0]) <= MAX_ERROR_LINE
    assert ("Traceback (most recent call last)" in stderr) is traceback
    return errors[0]


@pytest.mark.integration
@pytest.mark.slow
def test_an_s3_source_without_credentials_exits_2_saying_what_to_set(
    s3_server: S3Server, workdir: Path, env: dict[str, str], tmp_path: Path
) -> None:
    no_credentials = env | {
        "AWS_ENDPOINT_URL_S3": s3_server.endpoint_url,
        "AWS_REGION": s3_server.region,
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    case = Case("ingest", spec={"source": f"s3://{s3_server.bucket}/data.csv"})

    line = assert_one_bounded_error_line(run(case, workdir, no_credentials, "s3"), 2)

    assert line.startswith(
        f"{PREFIX}SpecError: cannot read s3://{s3_server.bucket}/data.csv: Unable to locate credentials"
    )
    assert "AWS_ACCESS_KEY_ID" in line and "s3_default" in line
