"""The pipelines package: the training chain as a task group, and the gate skipping its chain in a real run.

The gate runs under ``dag.test()`` through the local runner: a real ``mlops-ops step gate`` process against
the embedded MLflow SQLite registry, so the skip follows the step's real decision.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

GATE_DAG = """
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
from mlops_ops.pipelines.tasks import GateOperator

with DAG(dag_id="gate_only", schedule=None, render_template_as_native_obj=True,
         params={"cooldown_hours": 6.0, "force": False}) as dag:
    gate = GateOperator(task_id="gate", spec={
        "registered_model": "gated", "cooldown_hours": "{{ params.cooldown_hours }}", "force": "{{ params.force }}",
        "trigger": "{{ dag_run.run_type }}"})
    gate >> EmptyOperator(task_id="train") >> EmptyOperator(task_id="promote")
"""


def _bag(path: Path, dag_id: str) -> Any:
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    bag = DagBag(str(path))
    assert bag.import_errors == {}
    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(bag, "dags-folder", None)
    return bag.get_dag(dag_id)


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_training_chain_builds_five_chained_tasks_in_a_group(airflow_db: Path, tmp_path: Path) -> None:
    (tmp_path / "chain.py").write_text(
        "from airflow.sdk import DAG\n"
        "from mlops_ops.pipelines import training_chain\n"
        "with DAG(dag_id='chained', schedule=None) as dag:\n"
        "    c = training_chain(data_uri='d.csv', target='y', registered_model='m', suite='s.json',\n"
        "                       gate_metric='rmse', gate_threshold='3', group_id='retrain', prefix_group_id=True)\n"
    )
    dag = _bag(tmp_path / "chain.py", "chained")
    ids = ["retrain.ingest", "retrain.validate", "retrain.train", "retrain.evaluate", "retrain.promote"]
    assert sorted(dag.task_ids) == sorted(ids)
    for upstream, downstream in itertools.pairwise(ids):
        assert downstream in dag.task_dict[upstream].downstream_task_ids
    assert dag.task_dict["retrain.promote"].upstream_task_ids == {"retrain.evaluate"}
    # rmse is an error metric in specs.METRICS: the gate compares with <=.
    evaluate = dag.task_dict["retrain.evaluate"]
    assert evaluate.gates == ["rmse {{ '<=' if ('rmse') in ['log_loss', 'mae', 'rmse'] else '>=' }} 3"]


@pytest.mark.slow
def test_a_gate_that_says_no_skips_its_chain_and_says_why(
    airflow_db: Path, mlops_home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "gate_only.py").write_text(GATE_DAG)
    dag = _bag(tmp_path / "gate_only.py", "gate_only")

    first = dag.test()
    assert _states(first) == {"gate": "success", "train": "success", "promote": "success"}
    assert first.get_task_instance("gate").xcom_pull(task_ids="gate")["go"] is True

    second = dag.test()
    assert _states(second) == {"gate": "success", "train": "skipped", "promote": "skipped"}
    decision = second.get_task_instance("gate").xcom_pull(task_ids="gate")
    assert decision["go"] is False and decision["reason"].startswith("cooldown: a training let through by the gate")

    forced = dag.test(run_conf={"force": True})
    assert _states(forced) == {"gate": "success", "train": "success", "promote": "success"}


def test_the_chain_with_approval_waits_for_a_human_between_evaluate_and_promote() -> None:
    from airflow.sdk import DAG

    from mlops_ops.operators.approval import ApprovedPromoteOperator, PromotionApprovalOperator
    from mlops_ops.pipelines.chain import training_chain

    with DAG("approval_chain", schedule=None, render_template_as_native_obj=True) as dag:
        chain = training_chain(data_uri="d.csv", target="y", registered_model="m", suite="s.json", approval=True)
    assert isinstance(chain.approve, PromotionApprovalOperator) and isinstance(chain.promote, ApprovedPromoteOperator)
    assert dag.task_ids == ["ingest", "validate", "train", "evaluate", "approve", "promote"]
    assert chain.approve.upstream_task_ids == {"evaluate"}
    assert chain.promote.upstream_task_ids == {"evaluate", "approve"}
    with DAG("plain_chain", schedule=None) as plain:
        assert training_chain(data_uri="d.csv", target="y", registered_model="m", suite="s.json").approve is None
    assert "approve" not in plain.task_ids


@pytest.mark.parametrize(
    ("policy", "alias"), [("champion", "champion"), ("challenger", "challenger"), ("approval", "champion")]
)
def test_the_alias_a_promotion_policy_moves(policy: str, alias: str) -> None:
    from jinja2 import Environment

    from mlops_ops.pipelines import policy_alias

    templated = policy_alias("{{ params.promotion_policy }}")
    assert Environment().from_string(templated).render(params={"promotion_policy": policy}) == alias
    assert Environment().from_string(policy_alias(policy)).render() == alias
