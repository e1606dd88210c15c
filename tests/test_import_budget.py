"""Import budgets: a step loads only the heavy libraries it needs (docs/performance.md has the costs).

Every process that runs a step pays for what that step imports, so a new import of Great Expectations in
promote, say, costs seconds in every pipeline run. These tests look at ``sys.modules`` in fresh
interpreters: after importing each step module, and after each step really ran through the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlops_ops.demo import DATA_DIR, SUITE_PATH
from mlops_ops.steps import registry

#: Loaded by a step's ``run`` when it needs them, never when the registry imports the step's module.
HEAVY = ("sklearn", "scipy", "mlflow", "great_expectations", "matplotlib", "boto3")
#: What each step must not load while it runs, though a neighbour does: the budget of docs/performance.md.
NOT_NEEDED = {
    "ingest": ("sklearn", "mlflow.sklearn", "great_expectations", "matplotlib"),
    "validate": ("sklearn", "mlflow.sklearn", "matplotlib"),
    "train": ("great_expectations", "matplotlib"),
    "evaluate": ("great_expectations",),
    "promote": ("sklearn", "mlflow.sklearn", "great_expectations", "matplotlib"),
}
#: Runs the CLI as the console script does, then writes the loaded module names to $MODULES_OUT.
_CLI_WITH_DUMP = (
    "import atexit, json, os, sys\n"
    "atexit.register(lambda: open(os.environ['MODULES_OUT'], 'w').write(json.dumps(sorted(sys.modules))))\n"
    "from mlops_ops.cli import main\n"
    "sys.argv[0] = 'mlops-ops'\n"
    "main()\n"
)


def loaded_after(code: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("name", [d for d in registry.names() if registry.get(d).builtin])
def test_step_module_imports_no_heavy_library(name: str) -> None:
    """Importing a step's module (what the registry's loader does) loads at most the data libraries."""
    modules = loaded_after(f"import json, sys, mlops_ops.steps.{name}; print(json.dumps(sorted(sys.modules)))")
    assert f"mlops_ops.steps.{name}" in modules
    assert sorted(m for m in modules if m.split(".")[0] in HEAVY) == []


@pytest.fixture(scope="module")
def modules_by_step(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """The five steps of the training pipeline run through the CLI on the demo data, cold, one process each."""
    home = tmp_path_factory.mktemp("budget")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_"))}
    env |= {"MLOPS_HOME": str(home / "home")}
    found: dict[str, set[str]] = {}

    def step(name: str, spec: dict[str, Any]) -> Any:
        out = home / f"{name}.modules.json"
        argv = [sys.executable, "-c", _CLI_WITH_DUMP, "step", name, "--spec", json.dumps(spec), "--run-id", "budget"]
        done = subprocess.run(argv, env=env | {"MODULES_OUT": str(out)}, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        found[name] = set(json.loads(out.read_text()))
        return json.loads(done.stdout)

    ingested = step("ingest", {"source": str(DATA_DIR / "churn.csv"), "target": "churned"})
    validated = step("validate", {"dataset": ingested, "suite": str(SUITE_PATH)})
    spec = {"dataset": ingested, "target": "churned", "validation": validated, "estimator_params": {"max_iter": 20}}
    trained = step("train", spec)
    evaluated = step(
        "evaluate",
        {"dataset": ingested, "candidate": trained, "registered_model": "budget", "gates": ["roc_auc >= 0.5"]},
    )
    step("promote", {"evaluation": evaluated, "registered_model": "budget"})
    return found


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOT_NEEDED))
def test_running_step_loads_only_what_it_needs(modules_by_step: dict[str, set[str]], name: str) -> None:
    modules = modules_by_step[name]
    assert f"mlops_ops.steps.{name}" in modules  # the step really ran in this process
    assert sorted(m for m in NOT_NEEDED[name] if m in modules) == []


@pytest.mark.slow
def test_the_budget_is_not_vacuous(modules_by_step: dict[str, set[str]]) -> None:
    """Each library a budget keeps out is loaded by some other step, so the check can fail."""
    for name, kept_out in NOT_NEEDED.items():
        for module in kept_out:
            users = [other for other, modules in modules_by_step.items() if module in modules]
            assert users, f"{module} (kept out of {name}) is loaded by no step: drop it from the budget"


def test_docs_state_the_budget() -> None:
    """docs/performance.md lists the same budget as this test enforces."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "performance.md").read_text()
    for name, kept_out in NOT_NEEDED.items():
        row = next((line for line in text.splitlines() if line.startswith(f"| {name} ")), "")
        assert row, f"docs/performance.md has no budget row for {name}"
        for module in kept_out:
            assert f"`{module}`" in row, f"docs/performance.md does not keep {module} out of {name}"
