"""The Airflow-native baseline: the same five step functions as TaskFlow tasks, in the task processes.

``benchmarks/pipeline.py compare`` copies this file alone into a DAGs folder and runs it under
``airflow dags test`` with ``-c '{"data": PATH}'``; results travel between tasks through XCom as JSON.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import dag, get_current_context, task

PARAMS = {"data": "", "target": "churned", "model": "bench"}


def _call(step: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run step function ``step`` here, in this task's process, as a plain script would."""
    from mlops_ops.context import RunContext
    from mlops_ops.steps import registry
    from mlops_ops.store import store_for

    declared = registry.get(step)
    ctx = RunContext(pipeline="taskflow", run_id=str(get_current_context()["run_id"]), step=step)
    result = declared.load()(declared.parse(spec), ctx, store_for())
    return result.model_dump(mode="json")  # type: ignore[no-any-return]


@dag(dag_id="taskflow_bench", schedule=None, catchup=False, params=PARAMS)
def taskflow_bench() -> None:
    @task
    def ingest() -> dict[str, Any]:
        params = get_current_context()["params"]
        return _call("ingest", {"source": params["data"], "target": params["target"]})

    @task
    def validate(dataset: dict[str, Any]) -> dict[str, Any]:
        from mlops_ops.demo import SUITE_PATH

        return _call("validate", {"dataset": dataset, "suite": str(SUITE_PATH)})

    @task
    def train(dataset: dict[str, Any], validation: dict[str, Any]) -> dict[str, Any]:
        params = {"max_iter": 100, "learning_rate": 0.1}
        spec = {"dataset": dataset, "target": "churned", "validation": validation, "estimator_params": params}
        return _call("train", spec)

    @task
    def evaluate(dataset: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
        spec = {"dataset": dataset, "candidate": candidate, "registered_model": "bench", "gates": ["roc_auc >= 0.75"]}
        return _call("evaluate", spec)

    @task
    def promote(evaluation: dict[str, Any]) -> dict[str, Any]:
        return _call("promote", {"evaluation": evaluation, "registered_model": "bench"})

    ingested = ingest()
    promote(evaluate(ingested, train(ingested, validate(ingested))))


taskflow_bench()
