"""``mlops-ops rollback`` and ``mlops-ops history`` on a real MLflow SQLite registry, and a rollback racing a promotion."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from mlops_ops.cli import main
from mlops_ops.lineage import history
from mlops_ops.store import store_for
from tests.conftest import isolated_home


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    with isolated_home(tmp_path / "mlops") as path:
        path.mkdir()
        yield path


def cli(*args: str, code: int = 0) -> Any:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == code, result.output
    return result


def versions(name: str, count: int) -> list[str]:
    """``count`` versions of ``name`` as promote registers them (the source is not read)."""
    from mlops_ops.lineage import client

    mlflow_client = client()
    mlflow_client.create_registered_model(name)
    return [str(mlflow_client.create_model_version(name, source="file:///nowhere").version) for _ in range(count)]


def promoted(name: str, *numbers: str) -> None:
    from mlops_ops import lineage

    for number in numbers:
        lineage.move_alias(name, "champion", number, f"promoted v{number}", "pytest")


def chain_is_unbroken(moves: list[dict[str, str]]) -> None:
    """Each move starts where the one before it ended."""
    for before, after in itertools.pairwise(moves):
        assert after["from"] == before["to"], moves


def test_rollback_goes_to_the_previous_holder_and_is_recorded(home: Path) -> None:
    from mlops_ops import lineage

    versions("m", 3)
    promoted("m", "1", "2", "3")
    out = cli("rollback", "m", "--reason", "v3 mislabels churners").output
    assert out.strip() == "m@champion: version 3 -> version 2 (rollback: v3 mislabels churners)"
    assert str(lineage.version_by_alias("m", "champion").version) == "2"
    moves = history.alias_history("m")
    assert [(m["from"], m["to"], m["kind"]) for m in moves] == [
        ("", "1", "promotion"),
        ("1", "2", "promotion"),
        ("2", "3", "promotion"),
        ("3", "2", "rollback"),
    ]
    assert moves[-1]["actor"].endswith("(mlops-ops rollback)") and moves[-1]["moved_at"]
    chain_is_unbroken(moves)


def test_rollback_is_idempotent_and_a_new_one_goes_further_back(home: Path) -> None:
    versions("m", 3)
    promoted("m", "1", "2", "3")
    cli("rollback", "m", "--reason", "bad")
    again = cli("rollback", "m", "--reason", "bad").output
    assert again.strip() == "m@champion: stays on version 2 (already rolled back: rollback: bad)"
    further = cli("rollback", "m", "--reason", "v2 is bad too").output
    assert further.strip() == "m@champion: version 2 -> version 1 (rollback: v2 is bad too)"
    assert history.holders(history.alias_history("m")) == ["1"]
    assert cli("rollback", "m", "--to", "1", "--reason", "x").output.strip() == (
        "m@champion: stays on version 1 (champion already points at version 1)"
    )


def test_rollback_to_a_named_version_and_history_as_json(home: Path) -> None:
    versions("m", 3)
    promoted("m", "1", "2", "3")
    cli("rollback", "m", "--to", "1", "--reason", "back to the first")
    moves = json.loads(cli("history", "m", "--json").output)
    assert [(m["from"], m["to"]) for m in moves] == [("", "1"), ("1", "2"), ("2", "3"), ("3", "1")]
    text = cli("history", "m").output.splitlines()
    assert len(text) == 4 and "v3   -> v1" not in text[-1] and "rollback" in text[-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("rollback", "m", "--to", "9", "--reason", "r"), "SpecError: registered model 'm' has no version '9'"),
        (("rollback", "nobody", "--reason", "r"), "SpecError: registered model 'nobody' has no history of alias 'champion'"),
        (("rollback", "m", "--to", "v2", "--reason", "r"), "SpecError: --to 'v2' is not a version number"),
        (("history", "nobody"), "SpecError: registered model 'nobody' has no history of alias 'champion'"),
    ],
)  # fmt: skip
def test_mistakes_are_one_line_errors_with_exit_2(home: Path, args: tuple[str, ...], message: str) -> None:
    versions("m", 2)
    promoted("m", "1", "2")
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"mlops-ops: error: {message}")


def test_the_first_holder_cannot_be_rolled_back(home: Path) -> None:
    versions("m", 1)
    promoted("m", "1")
    result = CliRunner().invoke(main, ["rollback", "m", "--reason", "r"])
    assert result.exit_code == 2 and "the first it ever held: nothing to roll back to" in result.output


def _promotion(name: str, number: str, seen: str) -> Any:
    """The promote step's spec for a candidate already registered as ``number``, evaluated against ``seen``."""
    from mlops_ops.specs import PromoteSpec

    candidate = {
        "mlflow_run_id": f"run-{number}", "model_uri": "file:///nowhere", "task": "classification",
        "target": "churned", "estimator": "e.E", "dataset_digest": "d", "dataset_uri": "file:///d",
    }  # fmt: skip
    evaluation = {
        "passed": True, "candidate": candidate, "candidate_metrics": {"roc_auc": 0.9},
        "champion_version": seen, "dataset_digest": "d",
    }  # fmt: skip
    return PromoteSpec(evaluation=evaluation, registered_model=name)


def test_rollback_racing_a_promotion_leaves_one_unbroken_history(home: Path) -> None:
    """Both take the alias's lock: whichever goes first, the other sees its move, and no move is lost."""
    from mlops_ops import lineage
    from mlops_ops.steps import promote

    store = store_for()
    outcomes = []
    for round_number in range(4):
        name = f"race-{round_number}"
        versions(name, 3)
        promoted(name, "1", "2")
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def promote_v3(
            name: str = name, barrier: threading.Barrier = barrier, errors: list[BaseException] = errors
        ) -> None:
            try:
                barrier.wait()
                with store.lock(promote.lock_key(name, "champion")):
                    promote.settle(_promotion(name, "3", "2"), "3", "roc_auc")
            except BaseException as exc:
                errors.append(exc)

        def roll_back(
            name: str = name, barrier: threading.Barrier = barrier, errors: list[BaseException] = errors
        ) -> None:
            try:
                barrier.wait()
                history.rollback(name, "bad v2", store=store)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=promote_v3), threading.Thread(target=roll_back)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == []
        moves = history.alias_history(name)
        assert len(moves) == 4, moves
        chain_is_unbroken(moves)
        holder = str(lineage.version_by_alias(name, "champion").version)
        assert moves[-1]["to"] == holder
        outcomes.append(tuple(m["kind"] for m in moves[2:]))
    print(f"\norders seen: {sorted(set(outcomes))}")
