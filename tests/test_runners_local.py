"""The local runner, cold and warm: the same results and lineage, exit codes, live stderr, kill, fallback."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_ops.context import RunContext
from mlops_ops.demo import DATA_DIR
from mlops_ops.runners import StepFailed, StepInvocation
from mlops_ops.runners.local import LocalRunner
from mlops_ops.runners.warm import DIR_ENV, ENABLED_ENV, IDLE_ENV
from mlops_ops.steps.registry import parse_spec
from mlops_ops.store import local_path
from tests.conftest import isolated_home, stop_warm_parents

pytestmark = pytest.mark.slow
FORKED = re.compile(r"step process (\d+) forked from warm parent (\d+)")
_IDS = re.compile(r"\b(m-)?[0-9a-f]{32}\b")


@pytest.fixture(scope="module")
def warm_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private folder for this module's warm parent, which is ended (by its pid) afterwards."""
    folder = tmp_path_factory.mktemp("warm")
    folder.chmod(0o700)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DIR_ENV, str(folder))
        mp.setenv(IDLE_ENV, "120")
        mp.delenv(ENABLED_ENV, raising=False)
        yield folder
    stop_warm_parents(folder)


def invocation(step: str, spec: dict[str, Any], home: Path, run_id: str = "r1") -> StepInvocation:
    ctx = RunContext(pipeline="runner-test", run_id=run_id, step=step)
    return StepInvocation(step=step, spec=spec, ctx=ctx, result_uri=str(home / "results" / f"{step}.json"))


def run(runner: LocalRunner, inv: StepInvocation) -> tuple[dict[str, Any], list[str]]:
    lines: list[str] = []
    return runner.run(inv, log=lines.append), lines


def normalise(value: Any, home: Path, ids: dict[str, str]) -> Any:
    """The value with the home folder and MLflow's random run and model ids replaced by stable names."""
    text = json.dumps(value, sort_keys=True).replace(str(home), "<home>")
    return json.loads(_IDS.sub(lambda m: ids.setdefault(m[0], f"<id{len(ids)}>"), text))


def spec_digest(step: str, spec: dict[str, Any]) -> str:
    canonical = json.dumps(parse_spec(step, spec).model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(canonical).hexdigest()


def lineage_tags(home: Path, run_id: str) -> dict[str, str]:
    from mlflow import MlflowClient

    run = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}").get_run(run_id)
    return dict(run.data.tags)


def ingest_and_train(runner: LocalRunner, home: Path) -> tuple[list[Any], list[str]]:
    """Ingest and train on the demo data in ``home``: the two manifests, their runs' tags, and the log."""
    with isolated_home(home):
        ingested, log1 = run(
            runner, invocation("ingest", {"source": str(DATA_DIR / "churn.csv"), "target": "churned"}, home)
        )
        spec = {"dataset": ingested, "target": "churned", "estimator_params": {"max_iter": 20}}
        trained, log2 = run(runner, invocation("train", spec, home))
        tags = [lineage_tags(home, ingested["mlflow_run_id"]), lineage_tags(home, trained["mlflow_run_id"])]
    return [ingested, trained, *tags], log1 + log2


def test_warm_and_cold_give_the_same_results_and_lineage(warm_dir: Path, tmp_path: Path) -> None:
    cold, cold_log = ingest_and_train(LocalRunner(warm=False), tmp_path / "cold")
    warm, warm_log = ingest_and_train(LocalRunner(), tmp_path / "warm")

    assert not any(FORKED.search(line) for line in cold_log)
    assert len([line for line in warm_log if FORKED.search(line)]) == 2, warm_log[:5]
    # Content-addressed snapshots: the very same bytes under the same digests.
    assert cold[0]["snapshot"]["digest"] == warm[0]["snapshot"]["digest"]
    assert cold[1]["metrics"] == warm[1]["metrics"]
    cold_ids: dict[str, str] = {}
    warm_ids: dict[str, str] = {}
    for side in (cold, warm):  # train's spec holds its home's paths, so its digest differs by design
        spec = {"dataset": side[0], "target": "churned", "estimator_params": {"max_iter": 20}}
        assert side[3].pop("mlops.spec_digest") == spec_digest("train", spec)[:16]
    for a, b in zip(
        normalise(cold, tmp_path / "cold", cold_ids), normalise(warm, tmp_path / "warm", warm_ids), strict=True
    ):
        assert {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)} == {}
    for part in ("snapshot", "train", "eval"):  # the snapshot files themselves, byte for byte
        cold_file = local_path(cold[0][part]["uri"])
        warm_file = local_path(warm[0][part]["uri"])
        assert cold_file is not None and warm_file is not None
        assert cold_file.read_bytes() == warm_file.read_bytes()


def test_exit_code_and_error_line_come_through_unchanged(warm_dir: Path, mlops_home: Path) -> None:
    missing = {"source": str(mlops_home / "missing.csv"), "target": "churned"}
    failures = {}
    for name, runner in (("cold", LocalRunner(warm=False)), ("warm", LocalRunner())):
        with pytest.raises(StepFailed) as caught:
            run(runner, invocation("ingest", missing, mlops_home))
        failures[name] = (caught.value.exit_code, caught.value.message)
    assert failures["cold"] == failures["warm"]
    assert failures["warm"][0] != 0 and failures["warm"][1].startswith(("DataError: ", "SpecError: "))

    bad_spec = {"source": str(DATA_DIR / "churn.csv"), "target": "churned", "no_such_field": 1}
    cold = subprocess.run(
        [str(Path(sys.executable).with_name("mlops-ops")), *invocation("ingest", bad_spec, mlops_home).args()],
        capture_output=True,
        text=True,
        check=False,
    )
    with pytest.raises(StepFailed) as caught:
        run(LocalRunner(), invocation("ingest", bad_spec, mlops_home))
    assert caught.value.exit_code == cold.returncode == 2
    assert f"mlops-ops: error: {caught.value.message}" == cold.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_stderr_streams_live_and_a_kill_stops_the_step(warm_dir: Path, mlops_home: Path, warm: bool) -> None:
    """The first log line arrives while the step still runs: killing the task then stops the step."""
    runner = LocalRunner(warm=warm)
    inv = invocation("ingest", {"source": str(DATA_DIR / "churn.csv"), "target": "churned"}, mlops_home)
    seen: list[str] = []

    def log(line: str) -> None:
        seen.append(line)
        if "mlops_ops.cli: step ingest:" in line:  # the step's first line; its work is still ahead
            runner.on_kill()

    with pytest.raises(StepFailed) as caught:
        runner.run(inv, log=log)
    assert caught.value.exit_code == -signal.SIGKILL
    assert not (mlops_home / "results" / "ingest.json").exists()
    assert not any("finished in" in line for line in seen)
    assert any(FORKED.search(line) for line in seen) is warm


def test_killing_the_task_process_kills_the_forked_step(warm_dir: Path, mlops_home: Path) -> None:
    """A task process killed outright (SIGKILL, no clean-up) still takes its step with it."""
    script = (
        "import json, sys\n"
        "from mlops_ops.runners.local import LocalRunner\n"
        "from tests.test_runners_local import invocation\n"
        "from pathlib import Path\n"
        "inv = invocation('ingest', json.loads(sys.argv[1]), Path(sys.argv[2]))\n"
        "LocalRunner().run(inv, log=lambda line: print(line, flush=True))\n"
    )
    spec = json.dumps({"source": str(DATA_DIR / "churn.csv"), "target": "churned"})
    task = subprocess.Popen(
        [sys.executable, "-c", script, spec, str(mlops_home)], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    assert task.stdout is not None
    step_pid = None
    for line in task.stdout:
        found = FORKED.search(line)
        if found:
            step_pid = int(found[1])
        if step_pid and "mlops_ops.cli: step ingest:" in line:
            break
    assert step_pid is not None, "the task never forked its step from the warm parent"
    task.kill()
    task.wait()
    assert _ends(step_pid), f"step process {step_pid} outlived its task"
    assert not (mlops_home / "results" / "ingest.json").exists()


def _ends(pid: int, within: float = 60.0) -> bool:
    """Whether process ``pid`` is gone (or a zombie) within ``within`` seconds; a bound, not a speed test."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False


def test_unusable_warm_folder_falls_back_to_a_cold_process(tmp_path: Path, mlops_home: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)  # others could reach a socket here: the warm executor refuses the folder
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DIR_ENV, str(shared))
        mp.delenv(ENABLED_ENV, raising=False)
        result, lines = run(LocalRunner(), invocation("ingest", {"source": str(DATA_DIR / "churn.csv")}, mlops_home))
    assert result["snapshot"]["rows"] == 5000
    assert any("must be a folder of this user with mode 0700" in line and "cold" in line for line in lines)
    assert not any(FORKED.search(line) for line in lines)
    assert not list(shared.iterdir())


def test_setting_turns_the_warm_executor_off(tmp_path: Path, mlops_home: Path) -> None:
    folder = tmp_path / "w"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DIR_ENV, str(folder))
        mp.setenv(ENABLED_ENV, "0")
        result, lines = run(LocalRunner(), invocation("ingest", {"source": str(DATA_DIR / "churn.csv")}, mlops_home))
    assert result["snapshot"]["rows"] == 5000
    assert not any(FORKED.search(line) or "warm executor" in line for line in lines)
    assert not folder.exists()


# --------------------------------------------- reuse: an unchanged step returns its result with no process


def execute(inv: StepInvocation, root: str, *, force: bool = False) -> tuple[dict[str, Any], list[str], bool]:
    """What the operator's execute does around the runner: look up, else run and record."""
    from mlops_ops import cache

    lines: list[str] = []
    runner = LocalRunner(warm=False)
    found = cache.lookup(inv, root, runner, force=force, say=lines.append)
    if found.result is not None:
        return cache.reuse(found, inv, lines.append), lines, True
    result = runner.run(inv, log=lines.append)
    cache.record(found, inv, root, result)
    return result, lines, False


def test_unchanged_steps_are_reused_and_equal_what_the_step_returns(mlops_home: Path, tmp_path: Path) -> None:
    from mlops_ops.settings import artifact_root

    root = artifact_root()
    source = tmp_path / "data.csv"
    source.write_bytes((DATA_DIR / "churn.csv").read_bytes())
    ingest_spec = {"source": str(source), "target": "churned"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_DATA_ROOTS", f"{tmp_path}{os.pathsep}{DATA_DIR.parent}")
        first, _, reused = execute(invocation("ingest", ingest_spec, mlops_home, "r1"), root)
        assert not reused
        again, lines, reused = execute(invocation("ingest", ingest_spec, mlops_home, "r2"), root)
        assert reused and again == first
        assert any(line.startswith("reused ingest result from pipeline runner-test run r1") for line in lines)
        assert json.loads((mlops_home / "results" / "ingest.json").read_text()) == first

        os.utime(source)  # touched, same bytes: hashed again and still reused
        assert execute(invocation("ingest", ingest_spec, mlops_home, "r3"), root)[2]
        forced, lines, reused = execute(invocation("ingest", ingest_spec, mlops_home, "r4"), root, force=True)
        assert not reused and any("force=True" in line for line in lines)
        assert {k: v for k, v in forced.items() if k != "mlflow_run_id"} == {
            k: v for k, v in first.items() if k != "mlflow_run_id"
        }

        source.write_bytes(source.read_bytes().replace(b"\n", b"\r\n", 1))  # other bytes, same rows
        changed, lines, reused = execute(invocation("ingest", ingest_spec, mlops_home, "r5"), root)
        assert not reused and any(f"{source} changed since the stored run" in line for line in lines)

        train_spec = {"dataset": changed, "target": "churned", "estimator_params": {"max_iter": 10}}
        trained, _, reused = execute(invocation("train", train_spec, mlops_home, "t1"), root)
        assert not reused and trained["cached"] is False
        reused_train, _, reused = execute(invocation("train", train_spec, mlops_home, "t2"), root)
        really, _, _ = execute(invocation("train", train_spec, mlops_home, "t3"), root, force=True)
    # The step itself, run again, finds its training done and says so: the reused result is exactly that.
    assert reused and reused_train == really and really["cached"] is True


def test_a_result_whose_artifacts_are_gone_is_not_reused(mlops_home: Path) -> None:
    from mlops_ops.settings import artifact_root
    from mlops_ops.store import local_path

    spec = {"source": str(DATA_DIR / "churn.csv"), "target": "churned"}
    first, _, _ = execute(invocation("ingest", spec, mlops_home, "r1"), artifact_root())
    snapshot = local_path(first["train"]["uri"])
    assert snapshot is not None
    snapshot.unlink()
    _, lines, reused = execute(invocation("ingest", spec, mlops_home, "r2"), artifact_root())
    assert not reused and any(f"{first['train']['uri']} is gone" in line for line in lines)
    assert snapshot.exists()  # the step ran and wrote it again


# ------------------------------------------------------------------------- the warm parent by itself


def parent(folder: Path, key: str, idle: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "mlops_ops.runners.warm", "--foreground", "--dir", str(folder), "--key", key]
    argv += ["--bin", str(Path(sys.executable).parent), "--idle", idle, "--preload", "click"]
    return subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)


def test_parent_exits_when_idle_and_removes_its_socket(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    folder.mkdir(mode=0o700)
    first = parent(folder, "k1", idle="1")
    assert first.stderr is not None
    lines = [line for line in first.stderr]  # until it exits, by itself
    assert first.wait() == 0
    assert any("ready" in line for line in lines) and any("idle" in line for line in lines), lines
    assert not (folder / "warm-k1.sock").exists()


def test_a_second_parent_of_the_same_key_leaves_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    folder.mkdir(mode=0o700)
    first = parent(folder, "k2", idle="600")
    try:
        assert first.stderr is not None
        for line in first.stderr:  # wait until it holds the lock and listens
            if "ready" in line:
                break
        second = parent(folder, "k2", idle="600")
        assert second.wait() == 0
        assert first.poll() is None and (folder / "warm-k2.sock").exists()
    finally:
        first.terminate()
        first.wait()


def test_forked_step_creates_files_with_the_task_umask(warm_dir: Path, mlops_home: Path) -> None:
    from mlops_ops.runners.local import entrypoint
    from mlops_ops.runners.warm import prestart

    inv = invocation("ingest", {"source": str(DATA_DIR / "churn.csv")}, mlops_home)
    prestart(LocalRunner().environment(inv), entrypoint())  # if not up yet: started with this umask (022)
    previous = os.umask(0o077)
    try:
        _, lines = run(LocalRunner(), inv)
    finally:
        os.umask(previous)
    assert any(FORKED.search(line) for line in lines)
    made = [p for p in (mlops_home / "artifacts").rglob("*") if p.is_dir()]
    assert made and all(p.stat().st_mode & 0o077 == 0 for p in made), [oct(p.stat().st_mode) for p in made]


def test_a_parent_that_dies_while_starting_leaves_the_step_to_a_cold_process(tmp_path: Path, mlops_home: Path) -> None:
    from mlops_ops.runners.warm import PRELOAD_ENV

    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "dies_on_import.py").write_text("import os\nos._exit(3)\n")
    folder = tmp_path / "w"
    folder.mkdir(mode=0o700)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DIR_ENV, str(folder))
        mp.setenv(PRELOAD_ENV, "dies_on_import")
        mp.setenv("PYTHONPATH", str(tmp_path / "lib"))
        mp.delenv(ENABLED_ENV, raising=False)
        result, lines = run(LocalRunner(), invocation("ingest", {"source": str(DATA_DIR / "churn.csv")}, mlops_home))
    assert result["snapshot"]["rows"] == 5000
    assert any("the warm parent exited" in line and "cold" in line for line in lines), lines[:3]


def test_a_starting_parent_serves_steps_between_and_during_its_imports(tmp_path: Path, mlops_home: Path) -> None:
    """The first steps on a machine do not wait for the whole preload: two steps that asked during the first
    import are forked before the second, and while that one takes a minute, one step's end reaches its task
    and a kill of the other's task stops that step."""
    import threading

    from mlops_ops.runners.warm import PRELOAD_ENV

    lib = _slow_modules(tmp_path / "lib")
    folder = tmp_path / "w"
    folder.mkdir(mode=0o700)
    spec = {"source": str(DATA_DIR / "churn.csv"), "target": "churned"}
    outcome: dict[str, Any] = {}
    killed = LocalRunner()

    def kill_on_first_line(line: str) -> None:
        if "mlops_ops.cli: step ingest:" in line:
            killed.on_kill()

    def finishes() -> None:
        outcome["result"], outcome["lines"] = run(LocalRunner(), invocation("ingest", spec, mlops_home))

    def is_killed() -> None:
        try:
            killed.run(invocation("ingest", spec, mlops_home, run_id="r2"), log=kill_on_first_line)
        except StepFailed as exc:
            outcome["killed"] = exc.exit_code

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(DIR_ENV, str(folder))
            mp.setenv(PRELOAD_ENV, "slow_first,slow_second")
            mp.setenv("PYTHONPATH", str(lib))
            mp.delenv(ENABLED_ENV, raising=False)
            tasks = [threading.Thread(target=finishes), threading.Thread(target=is_killed)]
            for task in tasks:
                task.start()
            for task in tasks:
                task.join(timeout=300)
        parent_log = next(folder.glob("warm-*.log")).read_text()
        assert outcome["result"]["snapshot"]["rows"] == 5000
        assert any(FORKED.search(line) for line in outcome["lines"]), outcome["lines"][:3]
        assert outcome["killed"] == -signal.SIGKILL
        assert "imported slow_first" in parent_log
        assert "imported slow_second" not in parent_log, parent_log  # all the above happened during that import
    finally:
        stop_warm_parents(folder)


def _slow_modules(lib: Path) -> Path:
    """``slow_first`` takes 3 s to import; ``slow_second`` imports another module every 0.1 s for a minute."""
    (lib / "slow_parts").mkdir(parents=True)
    (lib / "slow_parts" / "__init__.py").write_text("")
    for i in range(600):
        (lib / "slow_parts" / f"m{i}.py").write_text("")
    (lib / "slow_first.py").write_text("import time\ntime.sleep(3)\n")
    (lib / "slow_second.py").write_text(
        "import importlib, time\nfor i in range(600):\n    time.sleep(0.1)\n"
        "    importlib.import_module(f'slow_parts.m{i}')\n"
    )
    return lib


def test_a_killed_warm_parent_fails_the_step_in_one_line_and_takes_the_step_along(
    tmp_path: Path, mlops_home: Path
) -> None:
    from mlops_ops.runners.warm import PRELOAD_ENV

    folder = tmp_path / "w"
    folder.mkdir(mode=0o700)
    forked: dict[str, int] = {}

    def log(line: str) -> None:
        found = FORKED.search(line)
        if found:
            forked.update(step=int(found[1]), parent=int(found[2]))
        if "mlops_ops.cli: step ingest:" in line:  # the step runs: its parent dies now
            os.kill(forked["parent"], signal.SIGKILL)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DIR_ENV, str(folder))
        mp.setenv(PRELOAD_ENV, "click")
        mp.delenv(ENABLED_ENV, raising=False)
        with pytest.raises(StepFailed) as caught:
            LocalRunner().run(invocation("ingest", {"source": str(DATA_DIR / "churn.csv")}, mlops_home), log=log)
    assert caught.value.exit_code == 1
    assert caught.value.message == f"the warm parent {forked['parent']} ended before process {forked['step']} did"
    assert _ends(forked["step"]), "the step outlived its warm parent"
    assert not (mlops_home / "results" / "ingest.json").exists()


_LEAVING = """
import atexit, sys, threading, time
from mlops_ops.runners.warm.child import leave

atexit.register(lambda: print("atexit handler ran", file=sys.stderr))
threading.Thread(target=lambda: (time.sleep(0.3), sys.stdout.write(" and a thread's"))).start()
sys.stdout.write("buffered output")  # a pipe: block-buffered, lost unless flushed
leave(None if sys.argv[1] == "None" else int(sys.argv[1]) if sys.argv[1].lstrip("-").isdigit() else sys.argv[1])
"""


@pytest.mark.parametrize(
    ("code", "status", "said"), [("None", 0, ""), ("3", 3, ""), ("-1", 255, ""), ("no model", 1, "no model\n")]
)
def test_a_forked_step_leaves_as_the_interpreter_would(code: str, status: int, said: str) -> None:
    """What ``leave`` keeps of a normal exit: the exit status, joined threads, atexit handlers, flushed streams."""
    done = subprocess.run([sys.executable, "-c", _LEAVING, code], capture_output=True, text=True, check=False)
    normal = subprocess.run(
        [sys.executable, "-c", _LEAVING.replace("leave(", "sys.exit("), code],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == normal.returncode == status
    assert done.stdout == normal.stdout == "buffered output and a thread's"
    assert done.stderr == normal.stderr == said + "atexit handler ran\n"
