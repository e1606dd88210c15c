"""`mlops-ops run FILE`: --conf checked against the file's real form before Airflow starts, promotion
'approval' refused up front, task states read from Airflow's records, and no Airflow left behind on SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlops_ops.cli import main

CLI = str(Path(sys.executable).with_name("mlops-ops"))


def write_table(path: Path, rows: int = 120) -> Path:
    """A small learnable table: ``y`` is 1 exactly when ``x1`` is above the middle."""
    lines = ["x1,x2,colour,y"]
    for i in range(rows):
        x1 = (i * 37 % rows) / rows
        lines.append(f"{x1:.4f},{(i * 11 % 17) / 17:.4f},{'red' if i % 3 else 'blue'},{int(x1 > 0.5)}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def pipeline_file(tmp_path: Path, mlops_home: Path) -> Path:
    """``pipeline init`` on a small CSV: ``table.yaml`` beside ``table.csv``, in a fresh home."""
    data = write_table(tmp_path / "table.csv")
    path = tmp_path / "table.yaml"
    done = CliRunner().invoke(main, ["pipeline", "init", "--data", str(data), "--target", "y", "--out", str(path)])
    assert done.exit_code == 0, done.output
    return path


def edit(path: Path, promotion: str = "champion", form: str | None = None) -> None:
    """Set the file's promotion (and its form) as a user would in the file ``pipeline init`` wrote."""
    text = path.read_text().replace("promotion: champion", f"promotion: {promotion}")
    path.write_text(text + (f"form: {form}\n" if form is not None else ""))


def run_cli(path: Path, conf: str | None = None) -> tuple[int, str, str]:
    args = ["run", str(path)] + (["--conf", conf] if conf is not None else [])
    done = CliRunner().invoke(main, args)
    return done.exit_code, done.stdout, done.stderr


def assert_airflow_not_started(home: Path) -> None:
    assert not (home / "run.log").exists(), "Airflow was started"


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ('{"targt": "x"}', "--conf has an unknown key 'targt': table accepts data_uri, gate_metric, gate_threshold"),
        ('{"data": "/x.csv"}', "--conf has an unknown key 'data': did you mean 'data_uri'? table accepts data_uri"),
        (
            '{"gate_threshold": "abc"}',
            "--conf key 'gate_threshold' (Gate threshold) must be null or a number, not \"abc\"",
        ),
        ('{"promotion_policy": "fast"}', "--conf key 'promotion_policy' (Promotion policy) must be one of"),
        ('{"gate_threshold": ', "--conf is not valid JSON"),
        ("[1, 2]", "--conf must be a JSON object of form fields, not list [1, 2]"),
    ],
    ids=["unknown", "nearest", "wrong-type", "not-in-enum", "not-json", "not-an-object"],
)
def test_a_bad_conf_is_one_line_and_exit_2_before_airflow_starts(
    conf: str, message: str, pipeline_file: Path, mlops_home: Path
) -> None:
    code, out, err = run_cli(pipeline_file, conf)
    assert code == 2, out + err
    assert err.startswith("mlops-ops: error: SpecError: " + message), err
    assert len(err.strip().splitlines()) == 1
    assert_airflow_not_started(mlops_home)


def test_the_conf_is_checked_against_the_file_as_it_is_now(pipeline_file: Path, mlops_home: Path) -> None:
    """The form is cached by the file's content: a field the edited file adds is accepted at once."""
    code, _, err = run_cli(pipeline_file, '{"min_improvement": 0.1}')
    assert code == 2 and "unknown key 'min_improvement'" in err
    edit(pipeline_file, "approval", form="[data, gates, promotion, margin]")
    code, _, err = run_cli(pipeline_file, '{"min_improvement": 0.1}')
    assert code == 2 and "unknown key" not in err and "'approval' waits for a reviewer" in err, err


def test_approval_in_the_file_is_refused_up_front(pipeline_file: Path, mlops_home: Path) -> None:
    edit(pipeline_file, "approval")
    code, out, err = run_cli(pipeline_file)
    assert code == 2, out + err
    assert err.strip() == (
        f"mlops-ops: error: SpecError: {pipeline_file}: promotion 'approval' waits for a reviewer in Airflow's UI, "
        "which `mlops-ops run` runs without: trigger table in Airflow's UI (the file in dags/pipelines/ and "
        """`make airflow-ui`, or a deployed Airflow); here run it with --conf '{"promotion_policy": "champion"}' """
        "(or challenger)"
    ), err
    assert_airflow_not_started(mlops_home)


def test_approval_without_a_promotion_field_says_to_change_the_file(pipeline_file: Path, mlops_home: Path) -> None:
    edit(pipeline_file, "approval", form="[data]")
    code, _, err = run_cli(pipeline_file)
    assert code == 2 and "here set 'promotion: champion' (or challenger) in the file" in err, err
    code, _, err = run_cli(pipeline_file, '{"promotion_policy": "champion"}')
    assert code == 2 and "unknown key 'promotion_policy'" in err, err
    assert_airflow_not_started(mlops_home)


def test_approval_in_the_conf_is_refused_up_front(pipeline_file: Path, mlops_home: Path) -> None:
    code, out, err = run_cli(pipeline_file, '{"promotion_policy": "approval"}')
    assert code == 2, out + err
    assert "SpecError: --conf promotion_policy 'approval' waits for a reviewer in Airflow's UI" in err
    assert "`make airflow-ui`, or a deployed Airflow" in err
    assert_airflow_not_started(mlops_home)


def steps_line(stdout: str) -> dict[str, str]:
    line = next(x for x in stdout.splitlines() if x.startswith("  steps       "))
    return dict(pair.split("=") for pair in line.split(None, 1)[1].split(", "))


def subprocess_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLOPS_ARTIFACT_ROOT", "MLFLOW_TRACKING_URI")}
    return env | {"MLOPS_HOME": str(home)}


@pytest.mark.slow
def test_the_summary_shows_each_task_as_airflow_recorded_it(pipeline_file: Path, mlops_home: Path) -> None:
    """Success, then reused steps and a promote skipped on REJECT, then a failed train and what it stopped."""
    edit(pipeline_file, form="[data, gates, promotion, estimator_params]")
    env = subprocess_env(mlops_home)

    def run(conf: dict[str, object] | None = None) -> tuple[int, str]:
        args = [CLI, "run", str(pipeline_file), *(["--conf", json.dumps(conf)] if conf else [])]
        done = subprocess.run(args, env=env, capture_output=True, text=True, check=False, timeout=600)
        return done.returncode, done.stdout + done.stderr

    code, out = run()
    assert code == 0, out[-3000:]
    assert steps_line(out) == dict.fromkeys(
        ("ingest", "validate", "train", "evaluate", "approve", "promote"), "success"
    ), out

    code, out = run({"gate_threshold": 1.5})
    assert code == 0, out[-3000:]
    assert steps_line(out) == {
        "ingest": "reused", "validate": "reused", "train": "reused", "evaluate": "success", "approve": "success",
        "promote": "skipped",
    }, out  # fmt: skip
    assert "decision    REJECT" in out

    code, out = run({"estimator_params": {"n_estimators": -3}})
    assert code == 1, out[-3000:]
    steps = steps_line(out)
    assert steps["train"] == "failed" and steps["evaluate"] == steps["promote"] == "upstream_failed", out
    assert "  error       step train failed: " in out and "n_estimators" in out


def is_dags_test(process: object) -> bool:
    import psutil

    try:
        argv = process.cmdline()  # type: ignore[attr-defined]
    except psutil.Error:  # gone meanwhile
        return False
    return argv[-5:-3] == ["dags", "test"]


def dags_test_processes(runner: int, log: Path) -> list[object]:
    """The run's ``airflow dags test``: a child of ``runner``, or forked by the warm Airflow parent (run.log says)."""
    import psutil

    forked = re.findall(r"airflow dags test is process (\d+), forked from warm parent", log.read_text(errors="replace"))
    if forked:
        with contextlib.suppress(psutil.Error):
            return [psutil.Process(int(forked[-1]))]
    return [c for c in psutil.Process(runner).children(recursive=True) if is_dags_test(c)]


@pytest.mark.slow
@pytest.mark.parametrize("warm", ["1", "0"], ids=["warm-airflow", "cold-airflow"])
def test_sigterm_stops_the_run_and_its_airflow(pipeline_file: Path, mlops_home: Path, warm: str) -> None:
    """Whether ``airflow dags test`` was forked by the warm parent or started as a child, SIGTERM ends it."""
    import psutil

    log = mlops_home / "out.txt"
    with log.open("w") as out:
        process = subprocess.Popen(
            [CLI, "run", str(pipeline_file)],
            env=subprocess_env(mlops_home) | {"MLOPS_WARM_EXECUTOR": warm},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        airflow: list[psutil.Process] = []
        while not airflow and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
            if (mlops_home / "run.log").exists():
                airflow = dags_test_processes(process.pid, mlops_home / "run.log")  # type: ignore[assignment]
        assert airflow, log.read_text()[-3000:]
        assert ("forked from warm parent" in (mlops_home / "run.log").read_text()) == (warm == "1")
        time.sleep(3)  # well into the run
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
        _gone, alive = psutil.wait_procs(airflow, timeout=10)
        assert not alive, f"airflow dags test left running: {alive}"
        assert f"its output is in {mlops_home / 'run.log'}" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
