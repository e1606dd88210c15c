"""Eight promoters at once, every training run launched twice: one version per training run, one history.

Each round promotes four real candidates (trained once for the module) of a fresh model, each by two
processes, all eight released together. Registration must find the version a racing promoter made
instead of creating a second one (the look-up and the creation happen under one lock), and the alias
history must stay one chain ending on the best candidate. Run on a local store (``flock``) and on S3
(a lease object), 20 rounds each.
"""

from __future__ import annotations

import multiprocessing
import queue
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_ops.context import RunContext
from mlops_ops.demo import DATA_DIR
from mlops_ops.specs import EvaluateResult
from mlops_ops.steps import promote
from mlops_ops.steps.registry import parse_spec
from mlops_ops.store import store_for
from tests.conftest import isolated_home
from tests.servers.s3 import S3Server
from tests.test_concurrent_promotion import _step, chain_problems, registry

pytestmark = pytest.mark.slow

ROUNDS = 20
COPIES = 2  # promoters per training run
PARAMS = ({"max_iter": 40}, {"max_iter": 8, "max_depth": 3}, {"max_iter": 3, "max_depth": 2}, {"max_iter": 15})
TIMEOUT = 900.0


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with isolated_home(tmp_path_factory.mktemp("mlops-register-race")) as path:
        yield path


@pytest.fixture(scope="module")
def candidates(home: Path) -> list[EvaluateResult]:
    """Four trained and evaluated candidates (no champion yet), evaluated on the same rows."""
    ingested = _step("ingest", {"source": str(DATA_DIR / "churn.csv"), "target": "churned"}, "setup")
    found = []
    for i, params in enumerate(PARAMS):
        spec = {"dataset": ingested.model_dump(), "target": "churned", "estimator_params": params}
        trained = _step("train", spec, f"c{i}")
        evaluation = _step(
            "evaluate",
            {"dataset": ingested.model_dump(), "candidate": trained.model_dump(), "registered_model": "race-eval"},
            f"c{i}",
        )
        found.append(evaluation)
    assert len({e.candidate.mlflow_run_id for e in found}) == len(PARAMS)
    return found


def _worker(index: int, jobs: list[tuple[str, dict[str, Any]]], barrier: Any, out: Any) -> None:
    store = store_for()
    for model, spec in jobs:
        try:
            barrier.wait(timeout=TIMEOUT)
        except Exception:
            out.put((index, model, None, "the round's barrier broke"))
            return
        ctx = RunContext(pipeline="register-race", run_id=f"{model}-p{index}", step="promote")
        try:
            result = promote.run(parse_spec("promote", spec), ctx, store)  # type: ignore[arg-type]
            out.put((index, model, result.model_dump(mode="json"), None))
        except Exception:
            out.put((index, model, None, traceback.format_exc()))


def race(candidates: list[EvaluateResult], prefix: str) -> dict[str, list[dict[str, Any]]]:
    """Run the rounds; return each round's results (every promoter must succeed)."""
    promoters = [c for c in candidates for _ in range(COPIES)]
    models = [f"{prefix}-{r}" for r in range(ROUNDS)]
    jobs: list[list[tuple[str, dict[str, Any]]]] = [[] for _ in promoters]
    for model in models:
        for i, evaluation in enumerate(promoters):
            spec = {"evaluation": evaluation.model_dump(mode="json"), "registered_model": model}
            jobs[i].append((model, spec))
    mp = multiprocessing.get_context("spawn")
    barrier, out = mp.Barrier(len(promoters)), mp.Queue()
    workers = [mp.Process(target=_worker, args=(i, j, barrier, out)) for i, j in enumerate(jobs)]
    for worker in workers:
        worker.start()
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in models}
    errors = []
    try:
        for _ in range(len(promoters) * ROUNDS):
            _, model, result, error = out.get(timeout=TIMEOUT)
            if error:
                errors.append(f"{model}: {error.strip().splitlines()[-1]}")
            else:
                results[model].append(result)
    except queue.Empty:
        pytest.fail(f"the promoters did not all finish within {TIMEOUT:.0f}s")
    finally:
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.kill()
    assert not errors, errors
    return results


def audit(results: dict[str, list[dict[str, Any]]], candidates: list[EvaluateResult]) -> dict[str, int]:
    """Count duplicate versions and chain inconsistencies over all rounds (both must be zero)."""
    best = max(candidates, key=lambda c: c.candidate_metrics["roc_auc"]).candidate.mlflow_run_id
    counts = Counter[str]()
    for model, found in results.items():
        holder, versions = registry(model)
        per_run = Counter(tags["mlops.train.run_id"] for tags in versions.values())
        counts["duplicate versions"] += sum(n - 1 for n in per_run.values())
        counts["chain inconsistencies"] += len(chain_problems(holder, versions))
        counts["alias not on the best candidate"] += holder is None or versions[holder]["mlops.train.run_id"] != best
        counts["results naming another version"] += sum(
            1 for r in found if versions[r["version"]]["mlops.train.run_id"] not in per_run
        )
        counts["rounds"] += 1
        counts["promotions"] += len(found)
    return dict(counts)


def _expect(counts: dict[str, int]) -> None:
    assert counts == {
        "duplicate versions": 0,
        "chain inconsistencies": 0,
        "alias not on the best candidate": 0,
        "results naming another version": 0,
        "rounds": ROUNDS,
        "promotions": ROUNDS * len(PARAMS) * COPIES,
    }


def test_eight_promoters_register_one_version_per_training_run(candidates: list[EvaluateResult]) -> None:
    _expect(audit(race(candidates, "dup-file"), candidates))


@pytest.mark.integration
def test_eight_promoters_on_an_s3_store(
    candidates: list[EvaluateResult], s3_env: dict[str, str], s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_ARTIFACT_ROOT", f"s3://{s3_server.bucket}/register-race")
    _expect(audit(race(candidates, "dup-s3"), candidates))
