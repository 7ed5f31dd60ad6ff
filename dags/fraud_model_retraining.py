"""Fraud-model retraining: wiring only. Logic lives in plugins/fraud_retraining.

Runs once per daily data interval [data_interval_start, data_interval_end) on
CronDataIntervalTimetable, so scheduled runs and backfills carry real intervals:

    prepare_storage >> extract_from_mongo (mapped over time slices) >> stage_to_s3
        >> automl_training >> model_evaluation_gate >> endpoint_update
        >> run_report (teardown: every run, written to S3 even after a failure)
    prepare_storage >> sweep_stray_documents >> run_report   (off the training path)

The gate records its decision (and every rule's numbers) in the registry; a failed gate is a
normal outcome, not a failed run: endpoint_update is then SKIPPED with the reason and the
champion keeps serving. Backfill runs and catch-up runs for old intervals never deploy; a
manual run with `force_deploy` may (the gate still has to pass). Assets: the raw zone is an
outlet of the extract, every registered model version of the training task, and the live
champion of endpoint_update, so other DAGs can schedule on any of them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param, task

from fraud_retraining.config import load_use_case
from fraud_retraining.notifier import RetrainingFailureNotifier
from fraud_retraining.operators.endpoint_update import EndpointUpdateOperator
from fraud_retraining.operators.extract import ExtractIntervalOperator, SweepStraysOperator
from fraud_retraining.operators.gate import ModelEvaluationGateOperator
from fraud_retraining.operators.prepare_storage import PrepareStorageOperator
from fraud_retraining.operators.report import RunReportOperator
from fraud_retraining.operators.stage import StageTrainingSetOperator
from fraud_retraining.operators.train import AutoMLTrainingOperator

# Empty renders as "use $FRAUD_USE_CASE_CONFIG or the bundled config".
USE_CASE_CONFIG = "{{ params.use_case_config or '' }}"
STAGE_SUMMARY = "ti.xcom_pull(task_ids='stage_to_s3')"
TRAIN_SUMMARY = "ti.xcom_pull(task_ids='automl_training')"
GATE_SUMMARY = "ti.xcom_pull(task_ids='model_evaluation_gate')"
# The role SageMaker runs as, for Autopilot training and for hosting (README, "SageMaker").
SAGEMAKER_EXECUTION_ROLE = "{{ var.value.get('fraud_sagemaker_execution_role_arn', '') }}"

# Asset URIs are fixed when the DAG is parsed: they name the default use case's locations.
_CFG = load_use_case()
RAW_TRANSACTIONS = Asset(
    name="fraud_raw_transactions", uri=f"s3://{_CFG.s3.bucket}/{_CFG.s3.raw_prefix}/transactions/"
)
RAW_LABELS = Asset(name="fraud_raw_labels", uri=f"s3://{_CFG.s3.bucket}/{_CFG.s3.raw_prefix}/labels/")
MODEL_VERSIONS = Asset(
    name="fraud_model_versions", uri=f"s3://{_CFG.s3.bucket}/{_CFG.s3.models_prefix}/{_CFG.model_name}/"
)
LIVE_CHAMPION = Asset(name="fraud_model_champion", uri=f"fraud-endpoint://{_CFG.model_name}/champion")

default_args = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=15),
    "execution_timeout": timedelta(minutes=30),
    # Log line always; JSON POST to $FRAUD_ALERT_WEBHOOK_URL when set (run, task, reason).
    "on_failure_callback": RetrainingFailureNotifier(),
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
        "training_window_days": Param(
            56, type="integer", minimum=7, maximum=365, description="Days of labelled data to train on."
        ),
        "training_engine": Param("local", enum=["local", "sagemaker"], description="AutoML engine."),
        "training_budget_s": Param(
            120, type="integer", minimum=10, maximum=86400, description="AutoML wall-clock budget in seconds."
        ),
        "gate_floors": Param(
            {"auc_roc": 0.75, "average_precision": 0.30},
            type="object",
            description="Absolute floors on holdout metrics the challenger must reach.",
        ),
        "gate_tolerance": Param(
            0.01,
            type="number",
            minimum=0,
            maximum=1,
            description="Allowed drop of average precision vs champion.",
        ),
        "gate_min_train_frauds": Param(
            50, type="integer", minimum=1, description="Refuse models trained on fewer frauds than this."
        ),
        "force_deploy": Param(
            False,
            type="boolean",
            description="Manual runs only: deploy even if this is not the latest interval (the gate must still pass; backfills never deploy).",
        ),
        "endpoint_engine": Param(
            "local", enum=["local", "sagemaker"], description="Where endpoint_update deploys the model."
        ),
        "alert_budget": Param(
            0.01,
            type="number",
            exclusiveMinimum=0,
            description="Alert budget (share of transactions) for recall.",
        ),
    },
    doc_md=__doc__,
) as dag:
    prepare_storage = PrepareStorageOperator(
        task_id="prepare_storage",
        use_case_config=USE_CASE_CONFIG,
        execution_timeout=timedelta(minutes=5),
    )

    @task(task_id="plan_extract_slices", execution_timeout=timedelta(minutes=2))
    def plan_extract_slices(params: dict | None = None) -> list[int]:
        return list(range(int((params or {}).get("extract_slices", 1))))

    extract_from_mongo = ExtractIntervalOperator.partial(
        task_id="extract_from_mongo",
        use_case_config=USE_CASE_CONFIG,
        n_slices="{{ params.extract_slices }}",
        execution_timeout=timedelta(minutes=60),
        outlets=[RAW_TRANSACTIONS, RAW_LABELS],
    ).expand(slice_index=plan_extract_slices())

    # Documents whose time is not a date, which no slice's range query sees: quarantined by a
    # once-per-interval sweep. Nothing downstream reads strays but the report, so the sweep (a
    # pass over the interval's documents by insert time; a whole-collection scan on SecantusDB)
    # runs beside the training path instead of on it.
    sweep_stray_documents = SweepStraysOperator(
        task_id="sweep_stray_documents",
        use_case_config=USE_CASE_CONFIG,
        execution_timeout=timedelta(minutes=30),
    )

    stage_to_s3 = StageTrainingSetOperator(
        task_id="stage_to_s3",
        use_case_config=USE_CASE_CONFIG,
        training_window_days="{{ params.training_window_days }}",
        execution_timeout=timedelta(minutes=30),
    )

    automl_training = AutoMLTrainingOperator(
        task_id="automl_training",
        training_prefix="{{ " + STAGE_SUMMARY + "['training_prefix'] }}",
        use_case_config=USE_CASE_CONFIG,
        engine="{{ params.training_engine }}",
        time_budget_s="{{ params.training_budget_s }}",
        sagemaker_role_arn=SAGEMAKER_EXECUTION_ROLE,
        execution_timeout=timedelta(hours=3),
        outlets=[MODEL_VERSIONS],
    )

    model_evaluation_gate = ModelEvaluationGateOperator(
        task_id="model_evaluation_gate",
        training_prefix="{{ " + STAGE_SUMMARY + "['training_prefix'] }}",
        challenger_version="{{ " + TRAIN_SUMMARY + "['version'] }}",
        use_case_config=USE_CASE_CONFIG,
        floors="{{ params.gate_floors | tojson }}",
        tolerance="{{ params.gate_tolerance }}",
        min_train_frauds="{{ params.gate_min_train_frauds }}",
        alert_budget="{{ params.alert_budget }}",
        execution_timeout=timedelta(minutes=20),
    )

    endpoint_update = EndpointUpdateOperator(
        task_id="endpoint_update",
        gate="{{ " + GATE_SUMMARY + " | tojson }}",
        training_prefix="{{ " + STAGE_SUMMARY + "['training_prefix'] }}",
        use_case_config=USE_CASE_CONFIG,
        force_deploy="{{ params.force_deploy }}",
        engine="{{ params.endpoint_engine }}",
        # SageMaker hosting needs a serving image and a packaged model; set these Variables for AWS.
        image_uri="{{ var.value.get('fraud_sagemaker_image_uri', '') }}",
        model_data_url="{{ var.value.get('fraud_sagemaker_model_data_url', '') }}",
        execution_role_arn=SAGEMAKER_EXECUTION_ROLE,
        execution_timeout=timedelta(minutes=30),
        outlets=[LIVE_CHAMPION],
    )

    prepare_storage >> [extract_from_mongo, sweep_stray_documents]
    extract_from_mongo >> stage_to_s3
    stage_to_s3 >> automl_training >> model_evaluation_gate >> endpoint_update

    # Every run leaves a report, also when something upstream failed. As a teardown it runs once
    # everything before it is done (like trigger_rule "all_done"), but its own success does not
    # turn a failed run green: the run's state still comes from the tasks before it.
    run_report = RunReportOperator(
        task_id="run_report",
        use_case_config=USE_CASE_CONFIG,
        training_prefix="{{ (" + STAGE_SUMMARY + " or {}).get('training_prefix') or '' }}",
        challenger_version="{{ (" + TRAIN_SUMMARY + " or {}).get('version') or '' }}",
        gate_summary="{{ " + GATE_SUMMARY + " | tojson }}",
        deploy_summary="{{ ti.xcom_pull(task_ids='endpoint_update', key='outcome') | tojson }}",
        execution_timeout=timedelta(minutes=15),
    ).as_teardown()
    [endpoint_update, sweep_stray_documents] >> run_report
