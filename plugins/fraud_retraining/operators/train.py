"""`automl_training`: train on the staged set with the local or SageMaker engine, register the version.

Registers but never promotes: the gate decides. Retries are idempotent: the version id and the
Autopilot job name derive from dag_id + run_id, so a retry overwrites its own version (unless
it already served) and reattaches to its own remote job.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from fraud_retraining.links import ModelVersionLink, RunReportLink

ENGINES = ("local", "sagemaker")


class AutoMLTrainingOperator(BaseOperator):
    """AutoML on `training_prefix` (training/<run_key>/ from the stage task's XCom).

    Returns {"version", "engine", "model_name", "artifact_prefix", "metrics", "best_estimator", ...}.
    """

    operator_extra_links = (RunReportLink(), ModelVersionLink())

    template_fields = (
        "training_prefix",
        "engine",
        "use_case_config",
        "time_budget_s",
        "seed",
        "sagemaker_role_arn",
        "sagemaker_objective",
    )

    def __init__(
        self,
        *,
        training_prefix: str,
        engine: str = "local",
        use_case_config: str | None = None,
        time_budget_s: float | str = 120,
        seed: int | str = 42,
        max_trials: int | None = None,
        refit_on_valid: bool = False,
        estimators: Sequence[str] | None = None,
        card_precision_k: int = 100,
        alert_budget: float | int = 0.01,
        sagemaker_role_arn: str | None = None,
        sagemaker_objective: str = "AUC",
        sagemaker_max_candidates: int | None = None,
        sagemaker_timeout_s: float | None = None,
        poll_interval_s: float = 60.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.training_prefix = training_prefix
        self.engine = engine
        self.use_case_config = use_case_config
        self.time_budget_s = time_budget_s
        self.seed = seed
        self.max_trials = max_trials
        self.refit_on_valid = refit_on_valid
        self.estimators = estimators
        self.card_precision_k = card_precision_k
        self.alert_budget = alert_budget
        self.sagemaker_role_arn = sagemaker_role_arn
        self.sagemaker_objective = sagemaker_objective
        self.sagemaker_max_candidates = sagemaker_max_candidates
        self.sagemaker_timeout_s = sagemaker_timeout_s
        self.poll_interval_s = poll_interval_s

    # --- shared -------------------------------------------------------------------------------

    def _config(self) -> Any:
        from fraud_retraining.config import load_use_case

        return load_use_case(self.use_case_config or None)

    def _location(self, cfg: Any) -> tuple[str, str]:
        """(bucket, key prefix) of the staged set; accepts "training/<run_key>/" or an s3:// URI."""
        prefix = str(self.training_prefix).strip()
        if not prefix:
            raise ValueError("training_prefix is empty: the stage task published no training set")
        if prefix.startswith("s3://"):
            bucket, _, key = prefix[len("s3://") :].partition("/")
            return bucket, key.rstrip("/") + "/"
        return cfg.s3.bucket, prefix.rstrip("/") + "/"

    @staticmethod
    def _run_identity(context: Context) -> dict[str, Any]:
        dag_run = context.get("dag_run")
        run_id = context.get("run_id") or dag_run.run_id
        dag_id = context["dag"].dag_id if context.get("dag") is not None else context["ti"].dag_id
        start, end = context.get("data_interval_start"), context.get("data_interval_end")
        # Manual runs in Airflow 3 may have no data interval; the run's own time stands in.
        as_of = end or context.get("logical_date") or getattr(dag_run, "run_after", None)
        return {"dag_id": dag_id, "run_id": run_id, "start": start, "end": end, "as_of": as_of}

    def _version(self, identity: dict[str, Any]) -> str:
        from datetime import UTC, datetime

        from fraud_retraining.registry import version_for_run

        return version_for_run(identity["dag_id"], identity["run_id"], identity["as_of"] or datetime.now(UTC))

    def _store_and_register(
        self, cfg: Any, s3: Any, bucket: str, prefix: str, result: Any, identity: dict[str, Any]
    ) -> dict[str, Any]:
        from airflow.providers.mongo.hooks.mongo import MongoHook

        from fraud_retraining.layout import model_prefix
        from fraud_retraining.registry import ModelRegistry, store_artifact_files

        manifest = result.details.get("manifest") or {}
        artifact_prefix = model_prefix(cfg, result.version)
        keys = store_artifact_files(s3, cfg.s3.bucket, artifact_prefix, result.files)
        lineage = {
            "dag_id": identity["dag_id"],
            "run_id": identity["run_id"],
            "data_interval": {
                "start": identity["start"].isoformat() if identity["start"] else None,
                "end": identity["end"].isoformat() if identity["end"] else None,
            },
            "training_data": f"s3://{bucket}/{prefix}",
            "training_window": manifest.get("window"),
            "rows": manifest.get("rows"),
            "frauds": manifest.get("frauds"),
            "data_hash": manifest.get("data_hash"),
            "features": manifest.get("features"),
            "engine": result.engine,
            "budget_s": result.budget_s,
            "elapsed_s": round(result.elapsed_s, 3),
            "seed": int(self.seed),
            "best_estimator": result.best_estimator,
            "trials": result.details.get("trials"),
            "library_versions": result.details.get("library_versions"),
        }
        with MongoHook(mongo_conn_id=cfg.mongo.conn_id) as hook:
            registry = ModelRegistry.for_use_case(cfg, hook.get_conn())
            registry.ensure_indexes()
            registry.register(
                result.version,
                engine=result.engine,
                lineage=lineage,
                metrics=result.metrics,
                artifact={"bucket": cfg.s3.bucket, "prefix": artifact_prefix, "keys": keys},
            )
        summary = {
            "version": result.version,
            "engine": result.engine,
            "model_name": cfg.model_name,
            "artifact_prefix": artifact_prefix,
            "best_estimator": result.best_estimator,
            "trials": result.details.get("trials"),
            "budget_s": result.budget_s,
            "elapsed_s": round(result.elapsed_s, 3),
            "metrics": result.metrics,
        }
        self.log.info(
            "registered %s version %s (%s): %s", cfg.model_name, result.version, result.engine, summary
        )
        return summary

    # --- execute ------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from fraud_retraining.engines import read_training_set

        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        cfg = self._config()
        s3 = S3Hook(aws_conn_id=cfg.s3.conn_id).get_conn()
        bucket, prefix = self._location(cfg)
        training_set = read_training_set(s3, bucket, prefix)
        identity = self._run_identity(context)
        version = self._version(identity)
        if self.engine == "sagemaker":
            return self._start_sagemaker(context, cfg, s3, bucket, prefix, training_set, identity)

        from fraud_retraining.engines.local import DEFAULT_ESTIMATORS, train_local

        result = train_local(
            training_set,
            version=version,
            time_budget_s=float(self.time_budget_s),
            seed=int(self.seed),
            estimators=tuple(self.estimators or DEFAULT_ESTIMATORS),
            card_precision_k=self.card_precision_k,
            alert_budget=self.alert_budget,
            max_trials=self.max_trials,
            refit_on_valid=self.refit_on_valid,
        )
        result.details["manifest"] = training_set.manifest
        return self._store_and_register(cfg, s3, bucket, prefix, result, identity)

    def _start_sagemaker(
        self,
        context: Context,
        cfg: Any,
        s3: Any,
        bucket: str,
        prefix: str,
        training_set: Any,
        identity: dict[str, Any],
    ) -> dict[str, Any]:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        from fraud_retraining.engines.sagemaker import (
            autopilot_job_name,
            build_job_request,
            start_or_attach,
            write_autopilot_inputs,
        )
        from fraud_retraining.layout import autopilot_input_prefix
        from fraud_retraining.triggers import AutoMLJobV2Trigger

        if not self.sagemaker_role_arn:
            raise ValueError("engine='sagemaker' needs sagemaker_role_arn (the Autopilot execution role)")
        job_name = autopilot_job_name(cfg.model_name, identity["dag_id"], identity["run_id"])
        channels = write_autopilot_inputs(s3, bucket, prefix, training_set)
        budget = float(self.time_budget_s)
        request = build_job_request(
            job_name=job_name,
            channels=channels,
            output_uri=f"s3://{bucket}/{autopilot_input_prefix(prefix)}output/",
            target=training_set.label,
            role_arn=self.sagemaker_role_arn,
            objective=self.sagemaker_objective,
            max_runtime_s=int(budget),
            max_candidates=self.sagemaker_max_candidates,
            tags={"dag_id": identity["dag_id"], "run_id": identity["run_id"], "model_name": cfg.model_name},
        )
        client = AwsBaseHook(aws_conn_id=cfg.s3.conn_id, client_type="sagemaker").get_conn()
        job = start_or_attach(client, request)
        self.log.info(
            "Autopilot job %s %s (%s)",
            job_name,
            "reattached" if job["attached"] else "created",
            job["status"],
        )
        # The deadline counts from the job's creation, so retries do not extend it.
        timeout = self.sagemaker_timeout_s if self.sagemaker_timeout_s is not None else budget + 1800.0
        created = job["created_epoch_s"] or time.time()
        if job["status"] in ("Completed", "Failed", "Stopped"):
            event = {"job_name": job_name, "status": job["status"], "terminal": True, "failure_reason": None}
            return self.execute_complete(context, event)
        self.defer(
            trigger=AutoMLJobV2Trigger(
                job_name=job_name,
                aws_conn_id=cfg.s3.conn_id,
                deadline_epoch_s=created + timeout,
                poll_interval_s=self.poll_interval_s,
            ),
            method_name="execute_complete",
        )
        raise AssertionError("defer() returned")  # defer raises TaskDeferred; this is unreachable

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger: register the best candidate, or fail with the remote reason."""
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.sdk.exceptions import AirflowFailException

        from fraud_retraining.engines import MANIFEST_FILE
        from fraud_retraining.engines.sagemaker import describe_failure, result_from_job

        job_name = event["job_name"]
        cfg = self._config()
        client = AwsBaseHook(aws_conn_id=cfg.s3.conn_id, client_type="sagemaker").get_conn()
        if event["status"] != "Completed":
            # No retry: a retry would reattach to this same ended job (its name is per run).
            reason = event.get("failure_reason") or describe_failure(client, job_name)
            raise AirflowFailException(f"Autopilot job {job_name} ended {event['status']}: {reason}")
        s3 = S3Hook(aws_conn_id=cfg.s3.conn_id).get_conn()
        bucket, prefix = self._location(cfg)
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=prefix + MANIFEST_FILE)["Body"].read())
        identity = self._run_identity(context)
        created = client.describe_auto_ml_job_v2(AutoMLJobName=job_name)["CreationTime"]
        result = result_from_job(
            client,
            manifest,
            job_name=job_name,
            version=self._version(identity),
            budget_s=float(self.time_budget_s),
            elapsed_s=time.time() - created.timestamp(),
        )
        result.details["manifest"] = manifest
        return self._store_and_register(cfg, s3, bucket, prefix, result, identity)
