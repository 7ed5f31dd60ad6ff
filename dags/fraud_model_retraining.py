"""Fraud-model retraining: wiring only. Logic lives in plugins/fraud_retraining.

Runs once per daily data interval [data_interval_start, data_interval_end) on
CronDataIntervalTimetable, so scheduled runs and backfills carry real intervals:

    prepare_storage >> extract_from_mongo (mapped over time slices)
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, task

from fraud_retraining.alerts import alert_on_failure
from fraud_retraining.operators.extract import ExtractIntervalOperator
from fraud_retraining.operators.prepare_storage import PrepareStorageOperator

default_args = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=15),
    "execution_timeout": timedelta(minutes=30),
    "on_failure_callback": alert_on_failure,
}

with DAG(
    dag_id="fraud_model_retraining",
    description="MongoDB transactions -> S3 Parquet -> training set -> AutoML -> gate -> endpoint",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=default_args,
    tags=["fraud", "ml", "retraining"],
    params={
        "use_case_config": Param(
            None,
            type=["null", "string"],
            description="Path of the use-case YAML; empty: $FRAUD_USE_CASE_CONFIG or the bundled one.",
        ),
        "extract_slices": Param(
            1,
            type="integer",
            minimum=1,
            maximum=48,
            description="Time slices the interval is split into, extracted in parallel (one Parquet part each).",
        ),
    },
    doc_md=__doc__,
) as dag:
    prepare_storage = PrepareStorageOperator(
        task_id="prepare_storage",
        use_case_config="{{ params.use_case_config or '' }}",
        execution_timeout=timedelta(minutes=5),
    )

    @task(task_id="plan_extract_slices", execution_timeout=timedelta(minutes=2))
    def plan_extract_slices(params: dict | None = None) -> list[int]:
        return list(range(int((params or {}).get("extract_slices", 1))))

    extract_from_mongo = ExtractIntervalOperator.partial(
        task_id="extract_from_mongo",
        use_case_config="{{ params.use_case_config or '' }}",
        n_slices="{{ params.extract_slices }}",
        execution_timeout=timedelta(minutes=60),
    ).expand(slice_index=plan_extract_slices())

    prepare_storage >> extract_from_mongo
