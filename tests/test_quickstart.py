"""``mlops-ops demo`` without running a DAG: --conf checked against the DAG's real params, the data roots a
user's own file gets, and the summary built from recorded task states and manifests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mlops_ops.demo.runstate import RunState, TaskState
from mlops_ops.demo.summary import Champion, Outcome, step_line, summary
from tests.servers.embedded import REPO, clean_env

MLOPS_OPS = str(Path(sys.executable).with_name("mlops-ops"))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A home whose cache holds mlops_training's params (read once from the real DAG file)."""
    path = tmp_path_factory.mktemp("demo-home")
    done = demo(path, "--help")
    assert done.returncode == 0, done.stderr
    yield path


def demo(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MLOPS_OPS, "demo", *args], cwd=REPO, env=clean_env(MLOPS_HOME=str(home), **env),
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip


def test_help_lists_every_field_of_the_trigger_form(home: Path) -> None:
    done = demo(home, "--help")
    for line in (
        'target            a string; default "churned"',
        'task              one of "classification", "regression"; default "classification"',
        "gate_threshold    null or a number; default null (Minimum (or maximum, for error metrics) the candidate",
        'estimator         a string; default "" (Import path of a scikit-learn estimator; empty for the task',
        'gate_metric       one of "", "roc_auc", ',
        'promotion_policy  one of "champion", "challenger", "approval"; default "champion"',
        "force             true or false; default false (Run every step again, even one whose identical earlier run",
    ):
        assert line in done.stdout


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ("{target: x}", "--conf is not valid JSON (Expecting property name enclosed in double quotes at column 2)"),
        ('["target"]', "--conf must be a JSON object of form fields, not list"),
        ('{"targt": "species"}', "--conf has an unknown key 'targt': did you mean 'target'? mlops_training accepts"),
        (
            '{"gate_threshold": "high"}',
            """--conf key 'gate_threshold' (Gate threshold) must be null or a number, not "high\"""",
        ),
        (
            '{"task": "clasification"}',
            """--conf key 'task' (Task type) must be one of "classification", "regression", not "clasification\"""",
        ),
        ('{"estimator_params": [1]}', "--conf key 'estimator_params' (Estimator parameters) must be a JSON object"),
        (
            '{"promotion_policy": "approval"}',
            "--conf promotion_policy 'approval' waits for a reviewer in Airflow's UI, which the demo runs without",
        ),
    ],
)
def test_a_bad_conf_is_one_line_and_exit_2_before_airflow_starts(home: Path, conf: str, message: str) -> None:
    started = time.perf_counter()
    done = demo(home, "--conf", conf)
    took = time.perf_counter() - started
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("mlops-ops: error: SpecError: " + message)
    assert done.stdout == ""  # nothing ran: no Airflow, no home set-up message
    assert not (home / "airflow" / "airflow.db").exists()
    # The params come from the cache (a cold interpreter with click is ~0.4 s here); loaded machines get slack.
    assert took < 3.0, took


def test_a_missing_file_and_a_missing_target_column_are_refused_up_front(home: Path, tmp_path: Path) -> None:
    done = demo(home, "--data", str(tmp_path / "nope.csv"))
    assert done.returncode == 2 and "no such file" in done.stderr
    own = tmp_path / "elsewhere" / "flowers.csv"
    own.parent.mkdir()
    own.write_text("sepal_length,species\n5.1,setosa\n")
    done = demo(home, "--data", str(own), "--conf", '{"target": "specie"}')
    assert done.returncode == 2
    assert "the target column 'specie' is not in flowers.csv (sepal_length, species); did you mean 'species'?" in (
        done.stderr
    )


def test_your_own_file_anywhere_joins_the_data_roots_unless_you_set_them(tmp_path: Path, monkeypatch: Any) -> None:
    from mlops_ops.demo.embedded import with_data_roots
    from mlops_ops.settings import default_data_roots

    own = tmp_path / "elsewhere" / "data.csv"
    own.parent.mkdir()
    own.write_text("a,b\n1,2\n")
    monkeypatch.delenv("MLOPS_DATA_ROOTS", raising=False)
    roots = with_data_roots({}, [own])["MLOPS_DATA_ROOTS"].split(os.pathsep)
    assert roots == [str(r.absolute()) for r in default_data_roots()] + [str(own.parent.resolve())]
    from mlops_ops.demo import DATA_DIR

    assert with_data_roots({}, [DATA_DIR / "churn.csv"]) == {}  # under a default root already: nothing added
    monkeypatch.setenv("MLOPS_DATA_ROOTS", "/srv/data")
    assert "MLOPS_DATA_ROOTS" not in with_data_roots({}, [own])  # the deployment's setting is not widened


@pytest.mark.slow
def test_a_new_home_starts_from_a_migrated_template_instead_of_migrating(tmp_path: Path, monkeypatch: Any) -> None:
    from mlops_ops.demo.embedded import airflow, airflow_env, migrate, template_path

    monkeypatch.setenv("MLOPS_AIRFLOW_TEMPLATE_DIR", str(tmp_path / "templates"))
    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")  # each home's own SQLite, as in the demo
    envs = []
    for name in ("first", "second"):
        monkeypatch.setenv("MLOPS_HOME", str(tmp_path / name))
        envs.append(airflow_env(REPO / "dags"))
    first, second = envs
    said: list[str] = []
    migrate(first, tmp_path / "first.log", echo=said.append)  # a real `airflow db migrate`
    template = template_path(first)
    assert template is not None and template.is_file() and said  # the migrated, empty database kept
    assert template_path(second) == template  # same Airflow, same DAGs folder: same template
    migrate(second, tmp_path / "second.log", echo=said.append)
    assert len(said) == 1 and not (tmp_path / "second.log").exists()  # copied, not migrated
    checked = airflow(second, "db", "check-migrations", "-t", "0")
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr[-2000:]
    # A home whose database already holds something never becomes a template.
    template.unlink()
    third = airflow_env(REPO / "dags") | {"AIRFLOW_HOME": str(tmp_path / "third")}
    (tmp_path / "third").mkdir()
    third["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{tmp_path / 'third' / 'airflow.db'}"
    (tmp_path / "third" / "airflow.db").write_bytes((Path(second["AIRFLOW_HOME"]) / "airflow.db").read_bytes())
    migrate(third, tmp_path / "third.log", echo=said.append)
    assert not template.exists()


@pytest.mark.slow
def test_the_form_is_read_once_for_every_home(tmp_path: Path, monkeypatch: Any) -> None:
    from mlops_ops.demo import params
    from mlops_ops.demo.conf import form_fields

    monkeypatch.setenv("MLOPS_AIRFLOW_TEMPLATE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "first"))
    first = form_fields(REPO / "dags")  # a child process imports the DAG file
    assert first["promotion_policy"].schema["enum"] == ["champion", "challenger", "approval"]
    [cached] = (tmp_path / "cache").glob("params-mlops_training-*.json")
    child = params.subprocess.run

    def no_child(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the form was read again: {args}")

    monkeypatch.setattr(params.subprocess, "run", no_child)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "second"))
    assert form_fields(REPO / "dags") == first  # a new home: from the cache, no child process
    cached.write_text('{"key": ')  # cut short, as by a demo killed while writing it
    monkeypatch.setattr(params.subprocess, "run", child)
    assert form_fields(REPO / "dags") == first
    assert json.loads(cached.read_text())["params"]["promotion_policy"]["default"] == "champion"


# ------------------------------------------------------------------- the summary, from recorded state

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def task(task_id: str, state: str, seconds: float = 2.0, tries: int = 1) -> TaskState:
    return TaskState(task_id, state, tries, T0, T0, seconds)


def run(state: str) -> RunState:
    return RunState("mlops_training", "manual__2026-01-01T00:00:00+00:00", state, T0, T0)


INGEST = {
    "source": "/data/churn.csv",
    "snapshot": {"rows": 5000, "digest": "ab" * 32},
    "train": {"rows": 4000},
    "eval": {"rows": 1000},
}


def evaluation(passed: bool, champion: float, reasons: list[str] | None = None) -> dict[str, Any]:
    return {
        "passed": passed,
        "reasons": reasons or [],
        "candidate": {"task": "classification"},
        "candidate_metrics": {"roc_auc": 0.81, "accuracy": 0.8},
        "champion_version": "2",
        "champion_metrics": {"roc_auc": champion},
    }


def test_a_failed_step_is_failed_with_its_error_and_later_steps_are_not_run() -> None:
    tasks = {
        t.task_id: t for t in (task("ingest", "success"), task("validate", "failed"), task("train", "upstream_failed"))
    }
    error = "ValidationFailed: 4 of 29 expectations failed in churn_suite: …"
    lines = [step_line(tasks["validate"], None, error), step_line(tasks["train"], None, None)]
    assert lines == [
        f"  validate  failed      2.0s  {error}",
        "  train     upstream_failed not run: an upstream step failed",
    ]
    text = "\n".join(summary(Outcome(run("failed"), tasks, {"ingest": INGEST}, {"validate": error})))
    assert text.startswith("Run manual__2026-01-01T00:00:00+00:00 of mlops_training: failed in 0.0s")
    assert "5000 rows, snapshot sha256 abababababababab…" in text
    assert f"  error       validate: {error}" in text


def test_a_rerun_after_drift_shows_the_real_champion_and_why_promote_left_it() -> None:
    promote = {
        "model_name": "churn-classifier",
        "version": "1",
        "alias": "champion",
        "moved": False,
        "previous_version": None,
        "reason": "version 2 holds champion and ranks above: roc_auc 0.83 against version 1's 0.81",
    }
    tasks = {t: task(t, "success") for t in ("ingest", "validate", "train", "evaluate", "promote")}
    results = {"ingest": INGEST, "evaluate": evaluation(True, 0.83), "promote": promote}
    champion = Champion("churn-classifier", "champion", "2", {"roc_auc": 0.83}, {"roc_auc": 0.83})
    text = "\n".join(summary(Outcome(run("success"), tasks, results, {}, champion)))
    assert "  promote     churn-classifier v1 did not take @champion: version 2 holds champion" in text
    assert "  registry    churn-classifier@champion is v2 in MLflow now, roc_auc=0.8300 when promoted" in text
    assert "drift       none seen" in text


def test_a_drifted_batch_is_called_drifted_when_the_champion_scores_worse_on_it() -> None:
    tasks = {t: task(t, "success") for t in ("ingest", "evaluate")}
    results = {"evaluate": evaluation(True, 0.70)}
    champion = Champion("churn-classifier", "champion", "3", {}, {"roc_auc": 0.83})
    text = "\n".join(summary(Outcome(run("success"), tasks, results, {}, champion)))
    assert (
        "drift       this batch has drifted: v2 roc_auc 0.7000 here against 0.8300 on the rows it was promoted on"
        in text
    )


def test_a_reused_step_says_so_on_its_line_and_in_the_summary() -> None:
    trained = {"estimator": "sklearn.ensemble.HistGradientBoostingClassifier", "metrics": {"roc_auc": 0.9}}
    origin = "pipeline mlops_training run manual__1 (try 1, file:///a/result.json)"
    reused = task("train", "success")
    line = step_line(reused, trained | {"cached": True}, None, origin)
    assert line == "  train     success     2.0s  reused: HistGradientBoostingClassifier, training roc_auc=0.9000"
    # A step that ran and found an identical training in MLflow says that instead.
    ran = step_line(reused, trained | {"cached": True}, None)
    assert ran.endswith("training roc_auc=0.9000, reused an identical earlier training")
    assert "reused:" not in step_line(task("ingest", "success"), INGEST, None)

    tasks = {t: task(t, "success") for t in ("ingest", "validate", "train")}
    results = {"ingest": INGEST, "train": trained | {"cached": True}}
    text = summary(Outcome(run("success"), tasks, results, {}, reused={"ingest": origin, "train": origin}))
    assert "  reused      ingest, train: results of an identical earlier run (run manual__1);" in text
    assert """              the steps did not run again (--conf '{"force": true}' runs every step)""" in text
    assert not any(line.startswith("  reused") for line in summary(Outcome(run("success"), tasks, results, {})))


def test_a_champion_that_could_not_be_scored_is_said_to_be_not_compared() -> None:
    """A model for another table (its columns missing here) was not compared: the summary must not say it was."""
    from mlops_ops.specs import PromoteSpec
    from mlops_ops.steps.promote import _reason

    tasks = {"evaluate": task("evaluate", "success")}
    ev = evaluation(True, 0.0) | {"champion_metrics": None}
    text = "\n".join(summary(Outcome(run("success"), tasks, {"evaluate": ev}, {})))
    assert "  champion    v2 could not be scored on these rows (trained on another table or schema?)" in text
    train = {
        "mlflow_run_id": "r", "model_uri": "models:/m-1", "task": "classification", "target": "y",
        "estimator": "sklearn.linear_model.LogisticRegression", "dataset_digest": "ab" * 32, "dataset_uri": "file:///d",
    }  # fmt: skip
    spec = PromoteSpec(evaluation=ev | {"candidate": train, "dataset_digest": "ab" * 32}, registered_model="m")
    assert _reason(spec).startswith("passed gates; v2 could not be scored on these rows, so it was not compared")
    assert "compared with v2" in _reason(spec.model_copy(update={"evaluation": spec.evaluation.model_copy(
        update={"champion_metrics": {"roc_auc": 0.8}})}))  # fmt: skip


def test_a_skipped_promotion_says_why() -> None:
    tasks = {"evaluate": task("evaluate", "success"), "promote": task("promote", "skipped")}
    results = {"evaluate": evaluation(False, 0.9, ["roc_auc 0.81 is not above the champion's 0.9"])}
    text = "\n".join(summary(Outcome(run("success"), tasks, results, {})))
    assert "decision    REJECT: roc_auc 0.81 is not above the champion's 0.9" in text
    assert "promote     skipped: the candidate did not pass" in text


class RecordedRun:
    """A metadata database that already records the run as ended with the given task states."""

    def __init__(self, *states: str) -> None:
        self.states = states

    def run_after(self, dag_id: str, number: int) -> RunState:
        return self.run(dag_id, "manual__1")

    def run(self, dag_id: str, run_id: str) -> RunState:
        return RunState(dag_id, run_id, "success" if set(self.states) == {"success"} else "failed", T0, T0)

    def tasks(self, dag_id: str, run_id: str) -> dict[str, TaskState]:
        return {f"t{i}": task(f"t{i}", state) for i, state in enumerate(self.states)}

    def result(self, dag_id: str, run_id: str, task_id: str) -> None:
        return None

    def last_run_number(self, dag_id: str) -> int:
        return 0


@pytest.mark.parametrize(
    ("states", "waits"),
    [(("success", "success"), False), (("success", "failed"), True), (("success", "skipped"), True)],
)
def test_the_summary_does_not_wait_for_airflow_to_shut_down_after_a_successful_run(
    tmp_path: Path, monkeypatch: Any, states: tuple[str, ...], waits: bool
) -> None:
    from mlops_ops.demo import run as demo_run

    monkeypatch.setattr(demo_run, "MetadataDB", lambda url: RecordedRun(*states))
    # A command still shutting down.
    monkeypatch.setattr(demo_run, "start_airflow", lambda env, args, out: subprocess.Popen(["sleep", "3"], stdout=out))
    left: list[subprocess.Popen[bytes]] = []
    lines: list[str] = []
    env = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite://"}
    started = time.monotonic()
    run, tasks, _ = demo_run.run_dag(env, "d", {}, tmp_path / "log", lines.append, on_finished=left.append)
    took = time.monotonic() - started
    assert [t.state for t in tasks.values()] == list(states) and len(lines) == 2 * len(states)
    if waits:  # a task's error line comes from the command's output, complete only once it has ended
        assert not left and took >= 3
    else:
        [process] = left
        assert process.poll() is None and took < 3 and run.state == "success"
        process.wait()


def test_a_task_that_fails_before_its_step_runs_still_gets_its_error_line() -> None:
    from mlops_ops.demo.run import task_error

    output = "\n".join([
        "[DAG TEST] starting task_id=train map_index=-1",
        "ValueError: not this one: it was train's",
        "[DAG TEST] end task task_id=train map_index=-1",
        "[DAG TEST] starting task_id=evaluate map_index=-1",
        "Traceback (most recent call last):",
        "airflow.sdk.exceptions.AirflowFailException: invalid evaluate spec: (spec): unknown metric 'roc_auc'",
        "[DAG TEST] end task task_id=evaluate map_index=-1",
        "[...] AirflowFailException: step promote failed: PromotionRejected: candidate rejected by evaluation",
    ])  # fmt: skip
    assert task_error(output, "evaluate") == "invalid evaluate spec: (spec): unknown metric 'roc_auc'"
    assert task_error(output, "promote") == "PromotionRejected: candidate rejected by evaluation"
    assert task_error(output, "train") == "not this one: it was train's"
    assert task_error(output, "ingest") is None
