"""YAML pipelines and the builder: lint errors with their line, Airflow import errors per broken file,
the builder and the loader make the same DAG, the JSON Schema, and `pipeline init` + `run` on users' data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mlops_ops.cli import main
from tests.conftest import REPO

LOADER = REPO / "dags" / "yaml_pipelines.py"
EXAMPLES = REPO / "dags" / "pipelines"

GOOD = """\
kind: training
dag_id: {dag_id}
schedule: "@daily"
owner: ml-team
tags: [t]
data: data.csv
target: y
task: {task}
suite: suite.json
estimator: {estimator}
estimator_params: {{n_estimators: 10}}
gates:
  - {gate}
margin: 0.01
registered_model: m-{dag_id}
runner:
  kind: local
  steps:
    train: {{warm: false}}
retries: 2
params:
  note: {{default: "", type: string, title: Note}}
"""


def good(dag_id: str = "p1", *, task: str = "classification", gate: str = "roc_auc >= 0.7", estimator: str = "") -> str:
    estimator = estimator or (
        "sklearn.ensemble.RandomForestClassifier"
        if task == "classification"
        else "sklearn.ensemble.RandomForestRegressor"
    )
    return GOOD.format(dag_id=dag_id, task=task, gate=gate, estimator=estimator)


#: Each class of mistake: the file, the line the error must point at, and what the message must say.
MISTAKES: dict[str, tuple[str, int, str]] = {
    "unknown key": (
        good().replace("schedule:", "shedule:"),
        3,
        "shedule: unknown key 'shedule'; did you mean 'schedule'?",
    ),
    "wrong type": (good().replace("retries: 2", "retries: many"), 20, "retries: expected an integer, got str 'many'"),
    "bad cron": (
        good().replace('"@daily"', '"61 * * * *"'),
        3,
        "schedule: '61 * * * *' is not a valid cron expression",
    ),
    "cron field count": (good().replace('"@daily"', '"0 6 * *"'), 3, "expected 5 fields"),
    "unknown estimator": (
        good(estimator="sklearn.ensemble.RandomForrestClassifier"),
        10,
        "estimator: 'sklearn.ensemble.RandomForrestClassifier' is not a scikit-learn classifier; did you mean "
        "'sklearn.ensemble.RandomForestClassifier'?",
    ),
    "estimator of the other task": (
        good(estimator="sklearn.linear_model.Ridge"),
        10,
        "is a regressor, but the task is classification",
    ),
    "disallowed estimator": (
        good(estimator="subprocess.check_output"),
        10,
        "estimator 'subprocess.check_output' is not allowed",
    ),
    "gate metric the task does not compute": (
        good(task="regression", gate="roc_auc >= 0.7"),
        13,
        "gates[0]: metric 'roc_auc' is not computed for regression; expected one of rmse, mae, r2",
    ),
    "gate against the metric's direction": (
        good(task="regression", gate="rmse >= 50"),
        13,
        "a lower rmse is better, so its gate is 'rmse <= 50'",
    ),
    "bad gate": (
        good(gate="roc_auc is high"),
        13,
        "gates[0]: gate 'roc_auc is high' is not of the form 'metric >= number'",
    ),
    "wrong choice": (
        good().replace("task: classification", "task: clasification"),
        8,
        "task: expected 'classification' or 'regression'",
    ),
    "unknown kind": (
        good().replace("kind: training", "kind: trainig"),
        1,
        "kind: unknown kind 'trainig'; expected one of training, retraining, scoring",
    ),
    "unknown step in runner options": (
        good().replace("train: {warm", "trian: {warm"),
        19,
        "no step 'trian' in a training pipeline",
    ),
    "invalid YAML": (good().replace("tags: [t]", "tags: [t"), 6, "invalid YAML"),
    "not a mapping": ("- a\n- b\n", 1, "expected a mapping of pipeline settings"),
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "suite.json").write_text("{}")
    (tmp_path / "data.csv").write_text("x,y\n1,0\n")
    return tmp_path


def lint(*paths: Path) -> tuple[int, str, str]:
    done = CliRunner().invoke(main, ["pipeline", "lint", *map(str, paths)])
    return done.exit_code, done.stdout, done.stderr


@pytest.mark.parametrize("mistake", list(MISTAKES), ids=lambda m: m.replace(" ", "-"))
def test_lint_names_file_line_and_what_was_expected(mistake: str, folder: Path) -> None:
    text, line, expected = MISTAKES[mistake]
    path = folder / "bad.yaml"
    path.write_text(text)
    code, out, _ = lint(path)
    assert code == 1
    first = out.splitlines()[0]
    assert first.startswith(f"{path}:{line}:"), first
    assert expected in first, first
    assert "pydantic" not in out and "Traceback" not in out and "validation error" not in out


def test_lint_accepts_the_examples_and_a_good_file(folder: Path) -> None:
    (folder / "ok.yaml").write_text(good())
    code, out, err = lint(EXAMPLES, folder / "ok.yaml")
    assert code == 0, out
    assert out == ""
    assert "ok.yaml: ok (training p1)" in err and "churn_training.yaml: ok (training churn_yaml_training)" in err


def test_a_dag_id_used_twice_is_an_error_of_the_later_file(folder: Path) -> None:
    (folder / "a.yaml").write_text(good("same"))
    (folder / "b.yaml").write_text(good("same"))
    code, out, _ = lint(folder)
    assert code == 1
    assert out.strip() == (
        f"{folder / 'b.yaml'}:2:9: dag_id: DAG id 'same' is already defined in {folder / 'a.yaml'}:2:9; DAG ids must be unique"
    )


# ------------------------------------------------------------------------------ the loader in Airflow


def dagbag(location: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("MLOPS_PIPELINES_DIR", str(location))
    return DagBag(str(LOADER))


def test_the_examples_load_as_one_dag_per_file(monkeypatch: pytest.MonkeyPatch) -> None:
    bag = dagbag(EXAMPLES, monkeypatch)
    assert bag.import_errors == {}
    assert sorted(bag.dags) == ["churn_yaml_retraining", "churn_yaml_scoring", "churn_yaml_training"]
    training = bag.dags["churn_yaml_training"]
    order = [t.task_id for t in training.topological_sort()]
    assert order == ["ingest", "validate", "train", "evaluate", "approve", "promote"]
    assert training.get_task("approve").policy == "{{ params.promotion_policy }}"  # waits only under approval
    assert training.params["data_uri"] == str((REPO / "mlops_ops/demo/data/churn.csv").resolve())
    assert training.params["gate_metric"] == "roc_auc" and training.params["gate_threshold"] == 0.75
    assert "note" in training.params
    assert bag.dags["churn_yaml_retraining"].get_task("gate").downstream_task_ids == {"ingest"}
    assert {"score", "drift"} <= set(bag.dags["churn_yaml_scoring"].task_ids)
    # The retraining form's force also runs every step again; a training file's steps reuse results.
    steps = ("ingest", "validate", "train", "evaluate", "promote")
    assert {bag.dags["churn_yaml_retraining"].get_task(s).force for s in steps} == {"{{ params.force }}"}
    assert {training.get_task(s).force for s in steps} == {False}


def test_broken_files_are_one_import_error_naming_each_and_the_others_load(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (folder / "a_good.yaml").write_text(good("good_one"))
    (folder / "b_cron.yaml").write_text(MISTAKES["bad cron"][0].replace("dag_id: p1", "dag_id: p2"))
    (folder / "c_yaml.yaml").write_text(MISTAKES["invalid YAML"][0])
    (folder / "d_dup.yaml").write_text(good("good_one"))
    (folder / "e_good.yaml").write_text(good("good_two", task="regression", gate="r2 >= 0.3"))
    bag = dagbag(folder, monkeypatch)
    assert sorted(bag.dags) == ["good_one", "good_two"]
    assert list(bag.import_errors) == [str(LOADER)]
    lines = bag.import_errors[str(LOADER)].splitlines()
    assert lines[0].startswith("InvalidPipelineFile: ")
    lines[0] = lines[0].removeprefix("InvalidPipelineFile: ")
    assert [line.split(": ", 1)[0] for line in lines] == [
        f"{folder / 'b_cron.yaml'}:3:11",
        f"{folder / 'c_yaml.yaml'}:6:5",
        f"{folder / 'd_dup.yaml'}:2:9",
    ]
    assert "is not a valid cron expression" in lines[0] and "already defined in" in lines[2]
    assert "Traceback" not in bag.import_errors[str(LOADER)]


def test_builder_and_yaml_make_the_same_dag(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_ops.authoring import training_pipeline

    (folder / "p.yaml").write_text(good("same_dag"))
    from_yaml = dagbag(folder, monkeypatch).dags["same_dag"]
    built = training_pipeline(
        "same_dag",
        schedule="@daily",
        owner="ml-team",
        tags=["t"],
        data=str(folder / "data.csv"),
        target="y",
        task="classification",
        suite=str(folder / "suite.json"),
        estimator="sklearn.ensemble.RandomForestClassifier",
        estimator_params={"n_estimators": 10},
        gates=["roc_auc >= 0.7"],
        margin=0.01,
        registered_model="m-same_dag",
        runner={"kind": "local", "steps": {"train": {"warm": False}}},
        retries=2,
        params={"note": {"default": "", "type": "string", "title": "Note"}},
    )
    assert shape(built) == shape(from_yaml)


def shape(dag: Any) -> dict[str, Any]:
    return {
        "edges": sorted((t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids),
        "params": {k: (v.value, v.schema) for k, v in dag.params.items()},
        "schedule": (type(dag.timetable).__name__, getattr(dag.timetable, "expression", None)),
        "tags": sorted(dag.tags),
        "tasks": {
            t.task_id: (
                type(t).__name__,
                t.retries,
                t.owner,
                getattr(t, "runner_options", None),
                getattr(t, "gates", None),
            )
            for t in dag.tasks
        },
    }


def test_builder_refuses_a_bad_argument_with_the_field() -> None:
    from mlops_ops.authoring import PipelineFileError, training_pipeline

    with pytest.raises(
        PipelineFileError,
        match=r"^training_pipeline\('x'\): gates\[0\]: metric 'rmse' is not computed for classification",
    ):
        training_pipeline("x", data="d.csv", target="y", suite="s.json", gates=["rmse <= 3"], registered_model="m")


def test_schema_accepts_the_examples_and_refuses_an_unknown_key(tmp_path: Path) -> None:
    import jsonschema
    import yaml

    out = tmp_path / "pipeline.schema.json"
    done = CliRunner().invoke(main, ["pipeline", "schema", "--out", str(out)])
    assert done.exit_code == 0, done.output
    schema = json.loads(out.read_text())
    for path in EXAMPLES.glob("*.yaml"):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**yaml.safe_load(good()), "shedule": "@daily"}, schema)


def test_the_estimator_table_matches_scikit_learn() -> None:
    from sklearn.utils import all_estimators

    from mlops_ops.authoring import estimators
    from mlops_ops.steps.estimators import resolve

    for table, kind, task in (
        (estimators.CLASSIFIERS, "classifier", "classification"),
        (estimators.REGRESSORS, "regressor", "regression"),
    ):
        names = {path.rsplit(".", 1)[1] for path in table}
        assert names == {name for name, _ in all_estimators(type_filter=kind)}
        for path in sorted(table)[:: max(1, len(table) // 10)]:
            resolve(path, task)  # public, importable, and of the right kind


# ------------------------------------------------------------------------------------ your own data


def own_tables(folder: Path) -> dict[str, tuple[Path, str]]:
    """Tables the project did not generate: scikit-learn's bundled data sets, one with categories and gaps."""
    import numpy as np
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

    wine = load_wine(as_frame=True).frame
    diabetes = load_diabetes(as_frame=True).frame
    cancer = load_breast_cancer(as_frame=True).frame.iloc[:, [0, 1, 2, 7, 20, 21, 27, 30]]
    cancer.columns = [c.replace(" ", "_") for c in cancer.columns]
    rng = np.random.default_rng(7)
    cancer["size_band"] = np.where(
        cancer["mean_radius"] > 15, "large", np.where(cancer["mean_radius"] > 12, "medium", "small")
    )
    cancer["texture_band"] = np.where(cancer["mean_texture"] > 20, "rough", "smooth")
    cancer["diagnosis"] = np.where(cancer.pop("target") == 1, "benign", "malignant")
    for column in ("mean_perimeter", "worst_radius", "size_band"):
        cancer.loc[rng.random(len(cancer)) < 0.1, column] = None
    paths = {"wine": folder / "wine.csv", "diabetes": folder / "diabetes.csv", "cancer": folder / "cancer.csv"}
    wine.to_csv(paths["wine"], index=False)
    diabetes.to_csv(paths["diabetes"], index=False)
    cancer.to_csv(paths["cancer"], index=False)
    return {
        "wine": (paths["wine"], "target"),
        "diabetes": (paths["diabetes"], "target"),
        "cancer": (paths["cancer"], "diagnosis"),
    }


EXPECTED_INIT = {
    "wine": ("classification", "accuracy >= 0.45", "3 classes"),
    "diabetes": ("regression", "r2 >= 0.3", "distinct values"),
    "cancer": ("classification", "roc_auc >= 0.7", "2 classes"),
}


def test_init_guesses_the_task_and_writes_a_file_that_lints(tmp_path: Path) -> None:
    from mlops_ops.authoring.parse import parse_file

    for name, (data, target) in own_tables(tmp_path).items():
        out = tmp_path / "pipelines" / f"{name}.yaml"
        done = CliRunner().invoke(
            main, ["pipeline", "init", "--data", str(data), "--target", target, "--out", str(out)]
        )
        assert done.exit_code == 0, done.output
        task, gate, reason = EXPECTED_INIT[name]
        assert f"task       {task}  (guessed: '{target}' has " in done.stdout and reason in done.stdout
        assert f"gate       {gate}" in done.stdout
        parsed = parse_file(out)
        assert parsed.pipeline.task == task and [str(g) for g in parsed.pipeline.gates] == [gate]  # type: ignore[attr-defined]
        assert Path(parsed.pipeline.suite).is_file() and Path(parsed.pipeline.data) == data.resolve()  # type: ignore[attr-defined]
        again = CliRunner().invoke(
            main, ["pipeline", "init", "--data", str(data), "--target", target, "--out", str(out)]
        )
        assert again.exit_code == 2 and "pass --force" in again.stderr


@pytest.mark.slow
def test_init_then_run_promotes_a_model_on_each_own_table(tmp_path: Path) -> None:
    """What a user types: `pipeline init`, then `run`, in the data's folder, with MLOPS_DATA_ROOTS unset."""
    tables = own_tables(tmp_path)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLOPS_DATA_ROOTS", "MLOPS_ARTIFACT_ROOT", "MLFLOW_TRACKING_URI")
    }
    env["MLOPS_HOME"] = str(tmp_path / "home")
    cli = str(Path(sys.executable).with_name("mlops-ops"))
    for name, (data, target) in tables.items():
        init = subprocess.run([cli, "pipeline", "init", "--data", data.name, "--target", target], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)  # fmt: skip
        assert init.returncode == 0, init.stdout + init.stderr
        if name == "cancer":  # `suite: infer`: the run infers the suite beside the file
            (tmp_path / "cancer.suite.json").unlink()
            pipeline = tmp_path / "cancer.yaml"
            pipeline.write_text(pipeline.read_text().replace('suite: "cancer.suite.json"', "suite: infer"))
        done = subprocess.run([cli, "run", f"{name}.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "MLOPS_DATA_ROOTS not set: reading local data under" in done.stdout
        assert ": success in " in done.stdout and "decision    PASS" in done.stdout
        assert f"registry    {name} v1 @champion (set)" in done.stdout, done.stdout
    assert (tmp_path / "cancer.suite.json").is_file()


def test_run_refuses_a_broken_file_in_one_line(folder: Path) -> None:
    (folder / "bad.yaml").write_text(MISTAKES["bad cron"][0])
    done = CliRunner().invoke(main, ["run", str(folder / "bad.yaml")])
    assert done.exit_code == 2
    assert done.stderr.strip() == (
        f"mlops-ops: error: PipelineFileError: {folder / 'bad.yaml'}:3:11: schedule: '61 * * * *' is not a valid "
        "cron expression (minute hour day month weekday)"
    )


def test_the_form_shows_what_the_file_lists_and_fixes_the_rest(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (folder / "a.yaml").write_text(good("listed") + "form: [data, margin]\n")
    (folder / "b.yaml").write_text(good("fixed") + "form: []\n")
    bag = dagbag(folder, monkeypatch)
    listed, fixed = bag.dags["listed"], bag.dags["fixed"]
    assert set(listed.params) == {"data_uri", "min_improvement", "note"}
    assert listed.get_task("evaluate").min_improvement == "{{ params.min_improvement }}"
    assert listed.get_task("evaluate").gates == ["roc_auc >= 0.7"]
    assert set(fixed.params) == {"note"}
    assert fixed.get_task("ingest").source == str(folder / "data.csv")
    assert fixed.get_task("train").estimator_params == {"n_estimators": 10}
    assert fixed.get_task("train").runner_options == {"warm": False}


def test_a_key_the_form_cannot_show_is_an_error(folder: Path) -> None:
    (folder / "f.yaml").write_text(good() + "form: [data, colour]\n")
    code, out, _ = lint(folder / "f.yaml")
    assert code == 1
    assert out.startswith(f"{folder / 'f.yaml'}:23:14: form[1]: 'colour' cannot be in the form; expected one of data,")


@pytest.mark.parametrize(("validate", "form", "tasks"), [
    ("false", "[data]", ["ingest", "score", "drift"]),
    ("true", "[data]", ["ingest", "validate", "score", "drift"]),
    ("false", "[data, validate]", ["ingest", "validate_enabled", "validate", "score", "drift"]),
])  # fmt: skip
def test_scoring_validates_as_the_file_says(validate: str, form: str, tasks: list[str], folder: Path) -> None:
    from mlops_ops.authoring import scoring_pipeline

    dag = scoring_pipeline(
        "s", data=str(folder / "data.csv"), registered_model="m", suite="suite.json",
        validate=validate == "true", form=json.loads(form.replace("[", '["').replace(", ", '", "').replace("]", '"]')),
    )  # fmt: skip
    assert [t.task_id for t in dag.topological_sort()] == tasks


def test_suite_infer_means_the_suite_beside_the_file(folder: Path) -> None:
    from mlops_ops.authoring.parse import parse_file

    (folder / "churn.yaml").write_text(good().replace("suite: suite.json", "suite: infer"))
    assert parse_file(folder / "churn.yaml").pipeline.suite == str(folder / "churn.suite.json")  # type: ignore[attr-defined]


def test_the_dag_processor_serializes_the_good_dags_and_reports_the_broken_file(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DAG processor's own parse of one file (what it sends to the manager, which stores the errors)."""
    import structlog
    from airflow.dag_processing.processor import DagFileParseRequest, _parse_file

    (folder / "good.yaml").write_text(good("served"))
    (folder / "bad.yaml").write_text(MISTAKES["unknown key"][0].replace("dag_id: p1", "dag_id: p2"))
    monkeypatch.setenv("MLOPS_PIPELINES_DIR", str(folder))
    request = DagFileParseRequest(file=str(LOADER), bundle_path=LOADER.parent, bundle_name="dags-folder")
    result = _parse_file(request, structlog.get_logger())
    assert result is not None
    assert [dag.dag_id for dag in result.serialized_dags] == ["served"]
    assert result.import_errors == {
        "yaml_pipelines.py": f"InvalidPipelineFile: {folder / 'bad.yaml'}:3:1: shedule: unknown key 'shedule'; "
        "did you mean 'schedule'?"
    }


@pytest.mark.parametrize("mistake", list(MISTAKES), ids=lambda m: m.replace(" ", "-"))
def test_each_mistake_is_the_same_line_in_airflow_and_the_other_dag_loads(
    mistake: str, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (folder / "bad.yaml").write_text(MISTAKES[mistake][0].replace("dag_id: p1", "dag_id: broken"))
    (folder / "good.yaml").write_text(good("still_here"))
    _, out, _ = lint(folder / "bad.yaml")
    bag = dagbag(folder, monkeypatch)
    assert list(bag.dags) == ["still_here"]
    assert bag.import_errors == {str(LOADER): f"InvalidPipelineFile: {out.splitlines()[0]}"}


def test_lint_of_a_folder_without_pipeline_files_says_so(tmp_path: Path) -> None:
    code, _, err = lint(tmp_path)
    assert code == 2
    assert err.strip() == f"mlops-ops: error: SpecError: no pipeline files (*.yaml, *.yml) in {tmp_path}"
