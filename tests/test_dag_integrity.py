"""DAG integrity in the Astro CLI's manner: no import errors, tags, owners, retries, cheap parsing."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY_MODULES = ("pandas", "pyarrow", "flaml", "lightgbm", "xgboost", "sklearn", "numpy", "fastapi")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert dagbag.dag_ids, "the dags/ folder must define at least one DAG"


def test_every_dag_has_tags_owner_and_retries(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"
            assert task.retries >= 2, f"{dag_id}.{task.task_id} retries={task.retries}"
            assert task.execution_timeout is not None, f"{dag_id}.{task.task_id} has no execution_timeout"
            assert task.on_failure_callback, f"{dag_id}.{task.task_id} has no failure alert"


def test_retraining_dag_uses_data_intervals(dagbag) -> None:
    dag = dagbag.dags["fraud_model_retraining"]
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable", type(dag.timetable)
    assert dag.max_active_runs == 1


def test_dag_files_parse_without_heavy_imports() -> None:
    """Parsing a DAG file must not import ML/dataframe libraries (the dag-processor parses often)."""
    code = (
        "import sys, runpy\n"
        f"sys.path.insert(0, {str(REPO / 'plugins')!r})\n"
        f"for f in {sorted(str(p) for p in (REPO / 'dags').glob('*.py'))!r}:\n"
        "    runpy.run_path(f)\n"
        f"heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip().splitlines()[-1:] in ([], [""]), f"heavy imports at parse time: {out.stdout}"


def test_retraining_dag_reads_like_the_pipeline(dagbag) -> None:
    dag = dagbag.dags["fraud_model_retraining"]
    chain = [
        "extract_from_mongo",
        "stage_to_s3",
        "automl_training",
        "model_evaluation_gate",
        "endpoint_update",
    ]
    for upstream, downstream in itertools.pairwise(chain):
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)
    # The stray sweep is off the training path: only the report waits for it.
    assert dag.get_task("sweep_stray_documents").downstream_task_ids == {"run_report"}
    assert "prepare_storage" in dag.get_task("sweep_stray_documents").upstream_task_ids
    params = dag.params.dump()
    for name in ("training_window_days", "training_budget_s", "training_engine", "gate_floors"):
        assert name in params
    assert params["force_deploy"] is False and params["endpoint_engine"] == "local"
    outlets = {t: [a.name for a in dag.get_task(t).outlets] for t in chain}
    assert outlets["extract_from_mongo"] == ["fraud_raw_transactions", "fraud_raw_labels"]
    assert outlets["automl_training"] == ["fraud_model_versions"]
    assert outlets["endpoint_update"] == ["fraud_model_champion"]
    # Choosing training_engine=sagemaker in the trigger form needs the Autopilot role wired in.
    for task_id, field in (
        ("automl_training", "sagemaker_role_arn"),
        ("endpoint_update", "execution_role_arn"),
    ):
        assert "fraud_sagemaker_execution_role_arn" in getattr(dag.get_task(task_id), field)
