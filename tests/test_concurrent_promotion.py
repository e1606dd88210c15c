"""Two promotions racing for one alias, in two processes, against a real MLflow registry (SQLite).

Each round registers two candidates of a fresh model, both evaluated against "no champion yet", and
releases both processes through a barrier the moment their versions are registered, so both enter the
read-compare-move of the alias together. The alias must end where the rule in ``mlops_ops.steps.promote``
says, and the history tags must form one chain. The same race without the lock must break that.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import queue
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_ops.context import RunContext
from mlops_ops.demo import DATA_DIR
from mlops_ops.errors import StoreError
from mlops_ops.lineage import VersionRecord
from mlops_ops.specs import EvaluateResult
from mlops_ops.steps import promote
from mlops_ops.steps import registry as steps
from mlops_ops.steps.registry import parse_spec
from mlops_ops.store import Store, store_for
from tests.conftest import isolated_home
from tests.servers.s3 import S3Server

pytestmark = pytest.mark.slow

ALIAS = "champion"
TAG = f"mlops.alias.{ALIAS}."
#: Rounds per race: each scenario (better, tie, other rows) several times, over both registration orders.
ROUNDS = 12
SCENARIOS = ("better", "tie", "other-rows")
BARRIER_TIMEOUT = 120.0
RESULT_TIMEOUT = 600.0


# ------------------------------------------------------------------------------------------- candidates


def _step(name: str, spec: dict[str, Any], run_id: str) -> Any:
    ctx = RunContext(pipeline="race-setup", run_id=run_id, step=name)
    return steps.get(name).load()(parse_spec(name, spec), ctx, store_for())


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One embedded home for the module: training the two candidates once is most of its cost."""
    with isolated_home(tmp_path_factory.mktemp("mlops-race")) as path:
        yield path


@pytest.fixture(scope="module")
def evaluations(home: Path) -> dict[str, EvaluateResult]:
    """Two real candidates, each evaluated on the same rows with no champion yet; ``better`` has the higher AUC."""
    ingested = _step("ingest", {"source": str(DATA_DIR / "churn.csv"), "target": "churned"}, "setup")
    found = []
    for run_id, estimator, params in (
        ("a", "sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 50}),
        ("b", "sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 3, "max_depth": 2}),
    ):
        trained = _step(
            "train",
            {"dataset": ingested.model_dump(), "target": "churned", "estimator": estimator, "estimator_params": params},
            run_id,
        )
        spec = {"dataset": ingested.model_dump(), "candidate": trained.model_dump(), "registered_model": "race-eval"}
        evaluation = _step("evaluate", spec, run_id)
        assert evaluation.passed and evaluation.champion_version is None
        found.append(evaluation)
    better, worse = sorted(found, key=lambda e: e.candidate_metrics["roc_auc"], reverse=True)
    assert better.candidate_metrics["roc_auc"] > worse.candidate_metrics["roc_auc"]
    return {"better": better, "worse": worse}


def _pair(evaluations: dict[str, EvaluateResult], scenario: str) -> tuple[EvaluateResult, EvaluateResult]:
    """The two racers of a scenario."""
    better, worse = evaluations["better"], evaluations["worse"]
    if scenario == "tie":
        worse = worse.model_copy(update={"candidate_metrics": dict(better.candidate_metrics)})
    elif scenario == "other-rows":
        worse = worse.model_copy(update={"dataset_digest": "0" * 64})
    return better, worse


# ---------------------------------------------------------------------------------------------- racing


def _race_worker(label: str, jobs: list[tuple[str, dict[str, Any]]], barrier: Any, out: Any, locked: bool) -> None:
    """Run ``jobs`` (model, promote spec) one by one, meeting the other worker right after registration."""
    compare = promote.compare_metric
    met: list[str] = []

    def registered_then_wait(spec: Any) -> str:
        # Called once the version is registered (and the registration lock released), before the alias lock.
        barrier.wait(timeout=BARRIER_TIMEOUT)
        met.append(spec.registered_model)
        return compare(spec)

    promote.compare_metric = registered_then_wait  # type: ignore[assignment]
    if not locked:
        Store.lock = lambda self, key, **kw: contextlib.nullcontext()  # type: ignore[method-assign]
    store = store_for()
    for model, spec in jobs:
        ctx = RunContext(pipeline="race", run_id=f"{label}-{model}", step="promote")
        try:
            result = promote.run(parse_spec("promote", spec), ctx, store)  # type: ignore[arg-type]
        except Exception:
            out.put((label, model, None, traceback.format_exc()))
            if model not in met:  # failed before the barrier: the other worker would wait in vain
                barrier.abort()
                return
            continue
        out.put((label, model, result.model_dump(mode="json"), None))


def race(evaluations: dict[str, EvaluateResult], prefix: str, *, locked: bool = True) -> list[dict[str, Any]]:
    """Race the two candidates of each round in two processes; return each round with its results and errors."""
    rounds: list[dict[str, Any]] = [
        {"model": f"{prefix}-{i}", "scenario": SCENARIOS[i % len(SCENARIOS)]} for i in range(ROUNDS)
    ]
    jobs: dict[str, list[tuple[str, dict[str, Any]]]] = {"better": [], "worse": []}
    for r in rounds:
        for label, evaluation in zip(jobs, _pair(evaluations, r["scenario"]), strict=True):
            spec = {"evaluation": evaluation.model_dump(mode="json"), "registered_model": r["model"], "alias": ALIAS}
            jobs[label].append((r["model"], spec))
    mp = multiprocessing.get_context("spawn")
    barrier, out = mp.Barrier(2), mp.Queue()
    workers = [mp.Process(target=_race_worker, args=(label, j, barrier, out, locked)) for label, j in jobs.items()]
    for worker in workers:
        worker.start()
    for r in rounds:
        r.update(results={}, errors={})
    by_model = {r["model"]: r for r in rounds}
    try:
        for _ in range(2 * ROUNDS):
            label, model, result, error = out.get(timeout=RESULT_TIMEOUT)
            by_model[model]["errors" if error else "results"][label] = error or result
    except queue.Empty:
        pytest.fail(f"the racing promotions did not all finish within {RESULT_TIMEOUT:.0f}s: {rounds}")
    finally:
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.kill()
    return rounds


# --------------------------------------------------------------------------------------------- checking


def registry(model: str) -> tuple[str | None, dict[str, dict[str, str]]]:
    """The alias's holder and every version's tags."""
    from mlops_ops import lineage

    holder = lineage.version_by_alias(model, ALIAS)
    versions = lineage.client().search_model_versions(f"name = '{model}'")
    return (str(holder.version) if holder else None), {str(v.version): dict(v.tags) for v in versions}


def expected_holder(
    r: dict[str, Any], evaluations: dict[str, EvaluateResult], versions: dict[str, dict[str, str]]
) -> str:
    """Where the rule says the alias ends: the better model, else (tie, other rows) the later version."""
    if r["scenario"] == "better":
        run_id = evaluations["better"].candidate.mlflow_run_id
        return next(v for v, tags in versions.items() if tags["mlops.train.run_id"] == run_id)
    return max(versions, key=int)


def chain_problems(holder: str | None, versions: dict[str, dict[str, str]]) -> list[str]:
    """The history must be one chain: from the holder back through ``previous`` to "none", covering every
    moved version, with ``replaced_by`` pointing forward along each link."""
    found, chain, at = [], [], holder
    while at not in (None, "none") and at not in chain:
        chain.append(at)
        at = versions[at].get(TAG + "previous")
    moved = {v for v, tags in versions.items() if TAG + "previous" in tags}
    if at != "none" or set(chain) != moved:
        found.append(f"history forks: chain from the holder {chain} (ends at {at}) but moved versions {sorted(moved)}")
    for newer, older in itertools.pairwise(chain):
        if (forward := versions[older].get(TAG + "replaced_by")) != newer:
            found.append(f"version {older} is followed by {newer} but says replaced_by={forward}")
    return found


def result_problems(
    results: list[dict[str, Any]], holder: str | None, versions: dict[str, dict[str, str]]
) -> list[str]:
    """Each run's result must agree with the registry, and only the holder's run may believe it moved the alias."""
    found = []
    believers = [x for x in results if x["moved"] and TAG + "replaced_by" not in versions[x["version"]]]
    if len(believers) != 1:
        found.append(f"{len(believers)} runs believe they moved {ALIAS} and still hold it: {believers}")
    for x in results:
        tags = versions[x["version"]]
        if x["moved"] and tags.get(TAG + "previous") != (x["previous_version"] or "none"):
            found.append(
                f"result of version {x['version']} says previous {x['previous_version']}, tags say "
                f"{tags.get(TAG + 'previous')}"
            )
        if not x["moved"] and not (x["reason"].startswith("superseded") and tags.get(TAG + "superseded_by") == holder):
            found.append(f"version {x['version']} did not move but is not recorded as superseded by {holder}: {x}")
    return found


def problems(r: dict[str, Any], evaluations: dict[str, EvaluateResult]) -> list[str]:
    """What is wrong with one round's final registry state and results (empty: all consistent)."""
    if r["errors"]:
        return [f"{label} failed: {error.strip().splitlines()[-1]}" for label, error in r["errors"].items()]
    holder, versions = registry(r["model"])
    want = expected_holder(r, evaluations, versions)
    found = [] if holder == want else [f"{ALIAS} is on version {holder}, the rule says {want}"]
    return found + chain_problems(holder, versions) + result_problems(list(r["results"].values()), holder, versions)


def assert_settled(rounds: list[dict[str, Any]], evaluations: dict[str, EvaluateResult]) -> None:
    report = {r["model"]: p for r in rounds if (p := problems(r, evaluations))}
    assert not report, f"{len(report)} of {len(rounds)} rounds inconsistent: {report}"
    # Both registration orders happened, so both the "champion unchanged" and the "re-check" paths ran.
    superseded = [x for r in rounds for x in r["results"].values() if not x["moved"]]
    replaced = [r for r in rounds if all(x["moved"] for x in r["results"].values())]
    assert superseded and replaced, "every round went the same way; the race did not exercise both outcomes"


# ------------------------------------------------------------------------------------------------ tests


def test_racing_promotions_settle_by_the_rule(evaluations: dict[str, EvaluateResult]) -> None:
    rounds = race(evaluations, "race-file")
    assert_settled(rounds, evaluations)
    lock_file = Path(store_for().uri(promote.lock_key("race-file-0", ALIAS)).removeprefix("file://"))
    assert lock_file.is_file()


@pytest.mark.integration
def test_racing_promotions_with_an_s3_lease(
    evaluations: dict[str, EvaluateResult], s3_env: dict[str, str], s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_ARTIFACT_ROOT", f"s3://{s3_server.bucket}/race")
    rounds = race(evaluations, "race-s3")
    assert_settled(rounds, evaluations)
    leases = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix="race/locks/")
    assert leases.get("KeyCount", 0) == 0, "a lease was left behind after every promotion finished"


def test_without_the_lock_the_race_breaks_history(evaluations: dict[str, EvaluateResult]) -> None:
    """The race above is real: with the lock switched off, rounds end with forked history."""
    rounds = race(evaluations, "race-unlocked", locked=False)
    broken = [r["model"] for r in rounds if problems(r, evaluations)]
    assert broken, "no round went wrong without the lock, so the race test could not detect a missing lock"


# ------------------------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("mine", "theirs", "wins"),
    [
        (
            ("3", {"mlops.metric.roc_auc": "0.9", "mlops.eval_dataset.digest": "d"}),
            ("4", {"mlops.metric.roc_auc": "0.8", "mlops.eval_dataset.digest": "d"}),
            True,
        ),
        (
            ("5", {"mlops.metric.roc_auc": "0.8", "mlops.eval_dataset.digest": "d"}),
            ("4", {"mlops.metric.roc_auc": "0.9", "mlops.eval_dataset.digest": "d"}),
            False,
        ),
        (
            ("5", {"mlops.metric.roc_auc": "0.9", "mlops.eval_dataset.digest": "d"}),
            ("4", {"mlops.metric.roc_auc": "0.9", "mlops.eval_dataset.digest": "d"}),
            True,
        ),
        (
            ("3", {"mlops.metric.roc_auc": "0.9", "mlops.eval_dataset.digest": "d"}),
            ("4", {"mlops.metric.roc_auc": "0.9", "mlops.eval_dataset.digest": "d"}),
            False,
        ),
        (
            ("3", {"mlops.metric.roc_auc": "0.99", "mlops.eval_dataset.digest": "d"}),
            ("4", {"mlops.metric.roc_auc": "0.5", "mlops.eval_dataset.digest": "e"}),
            False,
        ),
        (
            ("5", {"mlops.metric.roc_auc": "0.5", "mlops.eval_dataset.digest": "d"}),
            ("4", {"mlops.eval_dataset.digest": "d"}),
            True,
        ),
    ],
    ids=["better", "worse", "tie-later", "tie-earlier", "other-rows-earlier", "missing-metric-later"],
)
def test_outranks(mine: tuple[str, dict[str, str]], theirs: tuple[str, dict[str, str]], wins: bool) -> None:
    ours, others = VersionRecord(*mine).evaluated("roc_auc"), VersionRecord(*theirs).evaluated("roc_auc")
    assert promote.outranks("classification", "roc_auc", ours, others)[0] is wins


def test_outranks_lower_is_better() -> None:
    mine = VersionRecord("3", {"mlops.metric.rmse": "1.5", "mlops.eval_dataset.digest": "d"}).evaluated("rmse")
    theirs = VersionRecord("4", {"mlops.metric.rmse": "2.5", "mlops.eval_dataset.digest": "d"}).evaluated("rmse")
    wins, why = promote.outranks("regression", "rmse", mine, theirs)
    assert wins and why == "rmse 1.5 against version 4's 2.5 is better"


# ----------------------------------------------------------------------------------------------- locks


def _contend(store: Store, key: str, **lock_args: Any) -> str:
    """Try to take ``key`` in another thread while this one holds it; return the other thread's error."""
    errors: list[str] = []

    def other() -> None:
        try:
            with store.lock(key, timeout=0.5, **lock_args):
                errors.append("took a lock that was held")
        except StoreError as exc:
            errors.append(str(exc))

    with store.lock(key, **lock_args):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    with store.lock(key, timeout=5, **lock_args):
        pass  # released: free again at once
    return errors[0]


def test_file_lock_excludes_and_times_out(tmp_path: Path) -> None:
    error = _contend(Store(str(tmp_path)), "locks/x.lock")
    assert error.startswith(f"the lock {tmp_path / 'locks/x.lock'} was not free within 0s; another process holds it")


@pytest.mark.integration
def test_s3_lease_excludes_and_times_out(s3_env: dict[str, str], s3_server: S3Server) -> None:
    store = Store(f"s3://{s3_server.bucket}/lease-test")
    error = _contend(store, "locks/x.lease")
    assert error.startswith(
        f"the lease s3://{s3_server.bucket}/lease-test/locks/x.lease was not free within 0s; it is held by "
    )
    assert " pid " in error


@pytest.mark.integration
def test_s3_lease_of_a_dead_holder_is_taken_over(
    s3_env: dict[str, str], s3_server: S3Server, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(f"s3://{s3_server.bucket}/lease-test")
    dead = store.lock("locks/dead.lease", ttl=1)
    dead.__enter__()  # its holder "dies": the lease is never released
    started = time.monotonic()
    with store.lock("locks/dead.lease", timeout=30):
        waited = time.monotonic() - started
        dead.__exit__(None, None, None)  # the late holder's release must not delete the new lease
        assert store.exists(store.uri("locks/dead.lease"))
    assert 1.0 <= waited < 30
    assert "took over the lease" in caplog.text and "was taken over before it was released" in caplog.text
    assert not store.exists(store.uri("locks/dead.lease"))
