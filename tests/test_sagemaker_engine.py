"""SageMaker Autopilot V2 engine against moto's SageMaker API over HTTP (the standalone server)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import time

import boto3
import pytest
from test_local_engine import (
    TRAINING_PREFIX,
    fake_context,
    make_staged_set,
    upload_staged_set,
)

import local_stack
from fraud_retraining.config import load_use_case
from fraud_retraining.engines import read_training_set
from fraud_retraining.engines.sagemaker import (
    CSV_CONTENT_TYPE,
    autopilot_job_name,
    build_job_request,
    job_outcome,
    start_or_attach,
    write_autopilot_inputs,
)
from fraud_retraining.registry import ModelRegistry
from fraud_retraining.triggers import TIMED_OUT, AutoMLJobV2Trigger

ROLE = "arn:aws:iam::123456789012:role/fraud-autopilot-execution"


@pytest.fixture
def sagemaker_client(s3_endpoint_url):
    return boto3.client(
        "sagemaker",
        endpoint_url=s3_endpoint_url,
        aws_access_key_id=local_stack.LOCAL_S3_KEY_ID,
        aws_secret_access_key=local_stack.LOCAL_S3_SECRET,
        region_name=local_stack.LOCAL_REGION,
    )


@pytest.fixture
def staged(s3_client, s3_bucket):
    manifest, frames = make_staged_set(train_rows=1500)
    upload_staged_set(s3_client, s3_bucket, TRAINING_PREFIX, manifest, frames)
    return s3_bucket, manifest


def _unique_run_id() -> str:
    # moto's server keeps jobs for the whole session, so each test uses its own DAG run.
    return f"manual__{time.time_ns()}"


def _operator(config_path: str, **overrides):
    from fraud_retraining.operators.train import AutoMLTrainingOperator

    arguments = {
        "task_id": "automl_training",
        "engine": "sagemaker",
        "training_prefix": TRAINING_PREFIX,
        "use_case_config": config_path,
        "time_budget_s": 3600,
        "sagemaker_role_arn": ROLE,
        "poll_interval_s": 0.2,
        **overrides,
    }
    return AutoMLTrainingOperator(**arguments)


def test_job_name_is_short_valid_stable_and_per_run() -> None:
    name = autopilot_job_name("card-fraud", "fraud_model_retraining", "scheduled__2026-12-03T00:00:00+00:00")
    assert len(name) <= 32
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}", name)
    assert name == autopilot_job_name(
        "card-fraud", "fraud_model_retraining", "scheduled__2026-12-03T00:00:00+00:00"
    )
    assert name != autopilot_job_name(
        "card-fraud", "fraud_model_retraining", "scheduled__2026-12-04T00:00:00+00:00"
    )
    long_name = autopilot_job_name("a_very_long_model_name_with_underscores", "d", "r")
    assert len(long_name) == 32 and "_" not in long_name


def test_request_carries_target_objective_and_completion_criteria() -> None:
    request = build_job_request(
        job_name="card-fraud-abc",
        channels={"training": "s3://b/t/", "validation": "s3://b/v/"},
        output_uri="s3://b/o/",
        target="is_fraud",
        role_arn=ROLE,
        objective="AUC",
        max_runtime_s=7200,
        max_candidates=10,
    )
    tabular = request["AutoMLProblemTypeConfig"]["TabularJobConfig"]
    assert tabular["TargetAttributeName"] == "is_fraud"
    assert tabular["ProblemType"] == "BinaryClassification"
    assert tabular["CompletionCriteria"] == {"MaxAutoMLJobRuntimeInSeconds": 7200, "MaxCandidates": 10}
    assert request["AutoMLJobObjective"] == {"MetricName": "AUC"}
    assert [c["ChannelType"] for c in request["AutoMLJobInputDataConfig"]] == ["training", "validation"]
    assert {c["ContentType"] for c in request["AutoMLJobInputDataConfig"]} == {CSV_CONTENT_TYPE}
    with pytest.raises(ValueError, match="objective"):
        build_job_request(
            job_name="x", channels={}, output_uri="s3://b/", target="y", role_arn=ROLE, objective="MSE"
        )


def test_inputs_are_csv_with_header_and_only_features_and_label(s3_client, staged) -> None:
    bucket, manifest = staged
    training_set = read_training_set(s3_client, bucket, TRAINING_PREFIX)
    channels = write_autopilot_inputs(s3_client, bucket, TRAINING_PREFIX, training_set)
    assert channels["training"] == f"s3://{bucket}/{TRAINING_PREFIX}autopilot/training/"
    body = s3_client.get_object(Bucket=bucket, Key=f"{TRAINING_PREFIX}autopilot/training/training.csv")[
        "Body"
    ]
    rows = list(csv.reader(io.StringIO(body.read().decode())))
    assert rows[0] == [*manifest["features"], "is_fraud"]
    assert len(rows) - 1 == manifest["rows"]["train"]


def test_create_then_retry_reattaches_to_the_same_job(sagemaker_client) -> None:
    name = autopilot_job_name("card-fraud", "dag", _unique_run_id())
    request = build_job_request(
        job_name=name,
        channels={"training": "s3://b/t/", "validation": "s3://b/v/"},
        output_uri="s3://b/o/",
        target="is_fraud",
        role_arn=ROLE,
    )
    first = start_or_attach(sagemaker_client, request)
    second = start_or_attach(sagemaker_client, request)
    assert (first["attached"], second["attached"]) == (False, True)
    assert first["job_name"] == second["job_name"] == name
    assert second["status"] == "InProgress"
    jobs = sagemaker_client.list_auto_ml_jobs(NameContains=name)["AutoMLJobSummaries"]
    assert len(jobs) == 1


def test_operator_defers_and_a_retry_reattaches(
    s3_client, staged, mongo_db, airflow_connections, tmp_path, use_case_config_file, sagemaker_client
) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    bucket, _ = staged
    operator = _operator(use_case_config_file(database=mongo_db.name, bucket=bucket))
    context = fake_context(_unique_run_id())
    with pytest.raises(TaskDeferred) as first:
        operator.execute(context)
    with pytest.raises(TaskDeferred) as retry:
        operator.execute(context)
    trigger = first.value.trigger
    assert isinstance(trigger, AutoMLJobV2Trigger)
    assert first.value.method_name == "execute_complete"
    assert retry.value.trigger.job_name == trigger.job_name
    # The deadline counts from the job's creation, so the retry does not extend it.
    assert retry.value.trigger.deadline_epoch_s == pytest.approx(trigger.deadline_epoch_s)
    assert len(sagemaker_client.list_auto_ml_jobs(NameContains=trigger.job_name)["AutoMLJobSummaries"]) == 1
    described = sagemaker_client.describe_auto_ml_job_v2(AutoMLJobName=trigger.job_name)
    tabular = described["AutoMLProblemTypeConfig"]["TabularJobConfig"]
    assert tabular["TargetAttributeName"] == "is_fraud"
    assert tabular["CompletionCriteria"]["MaxAutoMLJobRuntimeInSeconds"] == 3600
    assert described["RoleArn"] == ROLE
    classpath, kwargs = trigger.serialize()
    assert classpath == "fraud_retraining.triggers.AutoMLJobV2Trigger"
    assert AutoMLJobV2Trigger(**kwargs).serialize() == (classpath, kwargs)


def test_trigger_timeout_stops_the_remote_job(sagemaker_client, airflow_connections) -> None:
    name = autopilot_job_name("card-fraud", "dag", _unique_run_id())
    start_or_attach(
        sagemaker_client,
        build_job_request(
            job_name=name,
            channels={"training": "s3://b/t/"},
            output_uri="s3://b/o/",
            target="y",
            role_arn=ROLE,
        ),
    )
    trigger = AutoMLJobV2Trigger(
        job_name=name, aws_conn_id="aws_default", deadline_epoch_s=time.time() + 0.5, poll_interval_s=0.1
    )

    async def first_event():
        async for event in trigger.run():
            return event.payload
        return None

    payload = asyncio.run(asyncio.wait_for(first_event(), timeout=60))
    assert payload["status"] == TIMED_OUT
    assert payload["remote_status_after_stop"] == "Stopped"
    assert sagemaker_client.describe_auto_ml_job_v2(AutoMLJobName=name)["AutoMLJobStatus"] == "Stopped"

    # Polling an ended job fires at once with its own status.
    payload = asyncio.run(asyncio.wait_for(first_event(), timeout=60))
    assert payload["status"] == "Stopped" and payload["terminal"]


def test_failure_surfaces_the_remote_reason(
    sagemaker_client, s3_client, staged, mongo_db, airflow_connections, tmp_path, use_case_config_file
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    name = autopilot_job_name("card-fraud", "dag", _unique_run_id())
    start_or_attach(
        sagemaker_client,
        build_job_request(
            job_name=name,
            channels={"training": "s3://b/t/"},
            output_uri="s3://b/o/",
            target="y",
            role_arn=ROLE,
        ),
    )
    description = sagemaker_client.describe_auto_ml_job_v2(AutoMLJobName=name)
    failed = {
        **description,
        "AutoMLJobStatus": "Failed",
        "FailureReason": "ClientError: target column y not found",
    }
    outcome = job_outcome(failed)
    assert outcome["terminal"] and outcome["failure_reason"] == "ClientError: target column y not found"

    bucket, _ = staged
    operator = _operator(use_case_config_file(database=mongo_db.name, bucket=bucket))
    with pytest.raises(AirflowFailException, match="target column y not found"):
        operator.execute_complete(fake_context(), outcome)
    # Without a reason in the event, the operator asks SageMaker for it.
    with pytest.raises(AirflowFailException, match=f"{name} ended Stopped: no FailureReason given"):
        operator.execute_complete(fake_context(), {"job_name": name, "status": "Stopped"})


def test_completed_job_registers_best_candidate(
    s3_client, staged, mongo_db, airflow_connections, tmp_path, use_case_config_file, sagemaker_client
) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    bucket, manifest = staged
    config_path = use_case_config_file(database=mongo_db.name, bucket=bucket)
    operator = _operator(config_path)
    context = fake_context(_unique_run_id())
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)
    job_name = deferred.value.trigger.job_name
    # moto never finishes a job; the trigger's event is what says Completed in real life.
    summary = operator.execute_complete(context, {"job_name": job_name, "status": "Completed"})
    json.dumps(summary)
    assert summary["engine"] == "sagemaker"
    assert summary["best_estimator"] == "best_candidate"  # moto's canned candidate name
    model = json.loads(
        s3_client.get_object(Bucket=bucket, Key=summary["artifact_prefix"] + "model.json")["Body"].read()
    )
    assert model["job_name"] == job_name and model["feature_names"] == manifest["features"]
    assert model["inference_containers"]
    leaderboard = json.loads(
        s3_client.get_object(Bucket=bucket, Key=summary["artifact_prefix"] + "leaderboard.json")[
            "Body"
        ].read()
    )
    assert leaderboard["candidates"][0]["candidate"] == "best_candidate"
    cfg = load_use_case(config_path)
    entry = ModelRegistry(mongo_db[cfg.mongo.registry_collection], cfg.model_name).get(summary["version"])
    assert entry["engine"] == "sagemaker"
    assert entry["metrics"]["autopilot"]["objective_value"] is not None
    assert entry["lineage"]["data_hash"] == manifest["data_hash"]
