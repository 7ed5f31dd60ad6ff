"""SageMaker Autopilot V2 engine (CreateAutoMLJobV2): plain functions over a boto3 `sagemaker` client.

Flow: the operator copies the staged train/valid splits to CSV under the training prefix,
creates (or, on retry, reattaches to) one Autopilot job per DAG run, defers to
`fraud_retraining.triggers.AutoMLJobV2Trigger` until the job ends or the timeout stops it,
then records the best candidate in the registry.

Input format: CSV with a header row (`text/csv;header=present`). Autopilot V2 tabular jobs also
accept Parquet, but every column of the input becomes a feature; the staged Parquet files carry
id, time, customer and terminal columns that must not be learnt from. Writing a copy with only
the manifest's features plus the label is needed either way, and CSV is also the row format the
Autopilot inference containers and our endpoint take in `/invocations`, so one format serves
training, batch checks and serving.

What a real AWS account needs
-----------------------------
Bucket layout (one bucket, cfg.s3.bucket):
    training/<run_key>/train|valid|test.parquet, manifest.json     written by the stage task
    training/<run_key>/autopilot/train/train.csv                    written here (training channel)
    training/<run_key>/autopilot/validation/validation.csv          written here (validation channel)
    training/<run_key>/autopilot/output/<job name>/...              written by Autopilot
    models/<model_name>/<version>/model.json, leaderboard.json ...  written by the operator
IAM:
  * The execution role passed as `role_arn` (trusted by sagemaker.amazonaws.com) needs
    s3:GetObject and s3:ListBucket on training/<run_key>/autopilot/*, s3:PutObject on
    training/<run_key>/autopilot/output/*, the managed policy AmazonSageMakerFullAccess's
    training/processing/transform actions for the jobs Autopilot launches, CloudWatch Logs
    write, and kms:Decrypt/GenerateDataKey if the bucket uses SSE-KMS.
  * The Airflow worker and triggerer identity (aws_default) needs sagemaker:CreateAutoMLJobV2,
    DescribeAutoMLJobV2, StopAutoMLJob, ListCandidatesForAutoMLJob, AddTags, iam:PassRole on
    that execution role only, and s3:GetObject/PutObject on training/* and models/*.
Budgets: Autopilot bills for every candidate it trains; `MaxAutoMLJobRuntimeInSeconds` caps the
whole job and the trigger's timeout stops it if it still runs past the task's own deadline.
A real Autopilot job needs an hour-scale budget to produce candidates; the local engine's 120 s
default is far too small for it.
"""

from __future__ import annotations

import hashlib
import io
import re
from typing import Any

from botocore.exceptions import ClientError

from fraud_retraining.engines import TrainingResult, TrainingSet, json_bytes, library_versions
from fraud_retraining.layout import autopilot_input_prefix

ENGINE_NAME = "sagemaker"
ARTIFACT_FORMAT = "sagemaker-autopilot-v2/1"
CSV_CONTENT_TYPE = "text/csv;header=present"
OBJECTIVES = ("F1", "AUC", "Accuracy", "Precision", "Recall", "BalancedAccuracy", "LogLoss")
TERMINAL_STATUSES = ("Completed", "Failed", "Stopped")
MAX_JOB_NAME = 32
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")


def autopilot_job_name(model_name: str, dag_id: str, run_id: str) -> str:
    """<= 32 chars, unique per DAG run, identical on every retry of it (so retries reattach)."""
    digest = hashlib.sha256(f"{dag_id}\x00{run_id}".encode()).hexdigest()
    stem = _NAME_UNSAFE.sub("-", model_name).strip("-")[:12].strip("-") or "automl"
    return f"{stem}-{digest[: MAX_JOB_NAME - len(stem) - 1]}"


def write_autopilot_inputs(
    s3_client: Any, bucket: str, training_set_prefix: str, training_set: TrainingSet
) -> dict[str, str]:
    """Write train and validation CSVs (features + label, with header); return channel -> S3 prefix URI."""
    base = autopilot_input_prefix(training_set_prefix)
    columns = [*training_set.features, training_set.label]
    channels = {}
    for channel, split in (("training", "train"), ("validation", "valid")):
        key = f"{base}{channel}/{channel}.csv"
        buffer = io.StringIO()
        getattr(training_set, split)[columns].to_csv(buffer, index=False)
        s3_client.put_object(
            Bucket=bucket, Key=key, Body=buffer.getvalue().encode("utf-8"), ContentType="text/csv"
        )
        channels[channel] = f"s3://{bucket}/{base}{channel}/"
    return channels


def build_job_request(
    *,
    job_name: str,
    channels: dict[str, str],
    output_uri: str,
    target: str,
    role_arn: str,
    objective: str = "AUC",
    max_runtime_s: int = 3600,
    max_candidates: int | None = None,
    mode: str = "AUTO",
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The CreateAutoMLJobV2 request for a binary fraud label."""
    if objective not in OBJECTIVES:
        raise ValueError(
            f"objective {objective!r} is not a binary-classification Autopilot metric {OBJECTIVES}"
        )
    if len(job_name) > MAX_JOB_NAME:
        raise ValueError(f"job name {job_name!r} is longer than {MAX_JOB_NAME} characters")
    completion: dict[str, Any] = {"MaxAutoMLJobRuntimeInSeconds": int(max_runtime_s)}
    if max_candidates:
        completion["MaxCandidates"] = int(max_candidates)
    return {
        "AutoMLJobName": job_name,
        "AutoMLJobInputDataConfig": [
            {
                "ChannelType": channel,
                "ContentType": CSV_CONTENT_TYPE,
                "CompressionType": "None",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri}},
            }
            for channel, uri in channels.items()
        ],
        "OutputDataConfig": {"S3OutputPath": output_uri},
        "AutoMLProblemTypeConfig": {
            "TabularJobConfig": {
                "TargetAttributeName": target,
                "ProblemType": "BinaryClassification",
                "CompletionCriteria": completion,
                "Mode": mode,
            }
        },
        "AutoMLJobObjective": {"MetricName": objective},
        "RoleArn": role_arn,
        "Tags": [{"Key": key, "Value": value[:256]} for key, value in sorted((tags or {}).items())],
    }


def _error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def start_or_attach(sagemaker_client: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Create the job, or attach to the one a previous try of this run created.

    Returns {"job_name", "attached", "status", "created_epoch_s"}.
    """
    name = request["AutoMLJobName"]
    try:
        sagemaker_client.create_auto_ml_job_v2(**request)
        attached = False
    except ClientError as err:
        if _error_code(err) != "ResourceInUse":
            raise
        attached = True
    description = sagemaker_client.describe_auto_ml_job_v2(AutoMLJobName=name)
    created = description.get("CreationTime")
    return {
        "job_name": name,
        "attached": attached,
        "status": description["AutoMLJobStatus"],
        "created_epoch_s": created.timestamp() if created is not None else None,
    }


def job_outcome(description: dict[str, Any]) -> dict[str, Any]:
    """A small JSON-safe summary of DescribeAutoMLJobV2: status, whether it ended, why it failed."""
    status = description["AutoMLJobStatus"]
    return {
        "job_name": description["AutoMLJobName"],
        "status": status,
        "secondary_status": description.get("AutoMLJobSecondaryStatus"),
        "terminal": status in TERMINAL_STATUSES,
        "failure_reason": description.get("FailureReason") or None,
    }


def stop_job(sagemaker_client: Any, job_name: str) -> str:
    """Ask Autopilot to stop (idempotent); return the status it reports afterwards."""
    try:
        sagemaker_client.stop_auto_ml_job(AutoMLJobName=job_name)
    except ClientError as err:
        # Stopping a job that has already ended is not an error for us.
        if _error_code(err) not in {"ValidationException", "ResourceNotFound"}:
            raise
    return sagemaker_client.describe_auto_ml_job_v2(AutoMLJobName=job_name)["AutoMLJobStatus"]


def list_candidates(sagemaker_client: Any, job_name: str) -> tuple[list[dict[str, Any]], str]:
    """Every candidate Autopilot trained, best first, and where the list came from."""
    try:
        pages = sagemaker_client.get_paginator("list_candidates_for_auto_ml_job").paginate(
            AutoMLJobName=job_name, SortBy="FinalObjectiveMetricValue", SortOrder="Descending"
        )
        return [c for page in pages for c in page.get("Candidates", [])], "ListCandidatesForAutoMLJob"
    except ClientError as err:
        # Some S3/SageMaker emulators lack this call; the best candidate is still recorded.
        return [], f"ListCandidatesForAutoMLJob unavailable: {_error_code(err) or err}"


def result_from_job(
    sagemaker_client: Any,
    manifest: dict[str, Any],
    *,
    job_name: str,
    version: str,
    budget_s: float,
    elapsed_s: float,
) -> TrainingResult:
    """The registry entry of a completed job: best candidate, its metrics, the containers to deploy."""
    description = sagemaker_client.describe_auto_ml_job_v2(AutoMLJobName=job_name)
    best = description.get("BestCandidate")
    if not best:
        raise RuntimeError(f"Autopilot job {job_name} ended without a best candidate")
    candidates, source = list_candidates(sagemaker_client, job_name)
    if not candidates:
        candidates = [best]
        source = f"{source}; best candidate only"
    leaderboard = [_candidate_row(candidate) for candidate in candidates]
    objective = best.get("FinalAutoMLJobObjectiveMetric", {})
    metrics = {
        "autopilot": {
            "objective": objective.get("MetricName"),
            "objective_value": objective.get("Value"),
            "candidate_metrics": [
                {"name": m.get("MetricName"), "set": m.get("Set"), "value": m.get("Value")}
                for m in best.get("CandidateProperties", {}).get("CandidateMetrics", [])
            ],
        }
    }
    model_metadata = {
        "format": ARTIFACT_FORMAT,
        "kind": "autopilot",
        "engine": ENGINE_NAME,
        "version": version,
        "feature_names": list(manifest["features"]),
        "job_name": job_name,
        "job_arn": description.get("AutoMLJobArn"),
        "candidate_name": best.get("CandidateName"),
        "inference_containers": best.get("InferenceContainers", []),
        "content_type": "text/csv",
    }
    chosen = {"candidate_name": best.get("CandidateName"), "objective": objective, "job_name": job_name}
    files = {
        "model.json": json_bytes(model_metadata),
        "leaderboard.json": json_bytes({"source": source, "candidates": leaderboard}),
        "metrics.json": json_bytes(metrics),
        "chosen_config.json": json_bytes(chosen),
        "training_manifest.json": json_bytes(manifest),
    }
    return TrainingResult(
        engine=ENGINE_NAME,
        version=version,
        files=files,
        metrics=metrics,
        best_estimator=str(best.get("CandidateName")),
        best_config=chosen,
        leaderboard=leaderboard,
        budget_s=float(budget_s),
        elapsed_s=float(elapsed_s),
        details={"trials": len(leaderboard), "library_versions": library_versions(), "chosen": chosen},
    )


def _candidate_row(candidate: dict[str, Any]) -> dict[str, Any]:
    objective = candidate.get("FinalAutoMLJobObjectiveMetric", {})
    started, ended = candidate.get("CreationTime"), candidate.get("EndTime")
    seconds = (ended - started).total_seconds() if started and ended else None
    return {
        "candidate": candidate.get("CandidateName"),
        "status": candidate.get("CandidateStatus"),
        "objective": objective.get("MetricName"),
        "validation_score": objective.get("Value"),
        "fit_seconds": seconds,
        "steps": [step.get("CandidateStepType") for step in candidate.get("CandidateSteps", [])],
    }


def describe_failure(sagemaker_client: Any, job_name: str) -> str:
    """The job's FailureReason (or its status if it gives none), for the task's error message."""
    outcome = job_outcome(sagemaker_client.describe_auto_ml_job_v2(AutoMLJobName=job_name))
    return outcome["failure_reason"] or f"no FailureReason given (status {outcome['status']})"
