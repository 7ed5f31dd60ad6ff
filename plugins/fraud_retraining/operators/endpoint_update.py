"""`endpoint_update`: roll the gated model version out to the scoring endpoint, then promote it.

In the DAG it receives the gate's XCom. It first decides whether this run may change the live
champion (fraud_retraining.deploy_policy: gate verdict, backfill, catch-up, older data than the
champion); a "no" is a normal outcome: the task is SKIPPED with the reason (also pushed as XCom
key "outcome"), the run stays green and the champion keeps serving. A "yes" deploys, checks what
really serves, then moves the registry's champion pointer by compare-and-set on the champion
read before the deploy; if another promotion won meanwhile, the endpoint is rolled back and
the task fails.

engine="local": the local server's admin API (URL and token from the Airflow connection
`endpoint_conn_id` if it exists, else env FRAUD_ENDPOINT_URL / FRAUD_ENDPOINT_ADMIN_TOKEN).
engine="sagemaker": CreateModel, CreateEndpointConfig, Create/UpdateEndpoint (blue/green), a bounded
poll until the endpoint settles, then a check that our endpoint config really serves.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import BaseOperator, Context

from fraud_retraining.links import ModelVersionLink, RunReportLink

ENGINES = ("local", "sagemaker")


class EndpointUpdateOperator(BaseOperator):
    """Deploy `version` (stored at `source`) and fail with the reason if it does not end up serving.

    Returns {"engine", "version", ...} (local: previous_version; sagemaker: endpoint_config_name, action).
    """

    operator_extra_links = (RunReportLink(), ModelVersionLink())

    template_fields = (
        "version",
        "source",
        "gate",
        "training_prefix",
        "use_case_config",
        "force_deploy",
        "engine",
        "endpoint_conn_id",
        "endpoint_name",
        "model_name",
        "image_uri",
        "model_data_url",
        "execution_role_arn",
    )

    def __init__(
        self,
        *,
        version: str | None = None,
        source: str | None = None,
        gate: dict[str, Any] | str | None = None,
        training_prefix: str | None = None,
        use_case_config: str | None = None,
        force_deploy: bool | str = False,
        promote: bool = True,
        smoke_rows: int = 20,
        engine: str = "local",
        endpoint_conn_id: str = "fraud_endpoint",
        aws_conn_id: str = "aws_default",
        endpoint_name: str = "card-fraud",
        model_name: str = "card-fraud",
        image_uri: str | None = None,
        model_data_url: str | None = None,
        execution_role_arn: str | None = None,
        instance_type: str = "ml.m5.large",
        alarm_names: tuple[str, ...] = (),
        wait_timeout_s: float = 3600.0,
        poll_interval_s: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.version = version
        self.source = source
        self.gate = gate
        self.training_prefix = training_prefix
        self.use_case_config = use_case_config
        self.force_deploy = force_deploy
        self.promote = promote
        self.smoke_rows = smoke_rows
        self.engine = engine
        self.endpoint_conn_id = endpoint_conn_id
        self.aws_conn_id = aws_conn_id
        self.endpoint_name = endpoint_name
        self.model_name = model_name
        self.image_uri = image_uri
        self.model_data_url = model_data_url
        self.execution_role_arn = execution_role_arn
        self.instance_type = instance_type
        self.alarm_names = alarm_names
        self.wait_timeout_s = wait_timeout_s
        self.poll_interval_s = poll_interval_s

    def execute(self, context: Context) -> dict[str, Any]:
        from fraud_retraining.config import load_use_case
        from fraud_retraining.layout import model_prefix

        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        cfg = load_use_case(self.use_case_config or None)
        gate = _as_dict(self.gate)
        version = self.version or (gate or {}).get("challenger_version")
        if not version:
            raise ValueError("no model version to deploy: pass version= or the gate's XCom as gate=")
        source = self.source or f"s3://{cfg.s3.bucket}/{model_prefix(cfg, version)}"
        registry = self._registry(cfg) if self.promote else None
        expected_champion = registry.champion_version() if registry is not None else None
        decision = None
        if gate is not None:
            decision = self._decide(context, gate, registry, expected_champion)
            if not decision.deploy:
                from airflow.sdk.exceptions import AirflowSkipException

                outcome = {"deployed": False, "version": version, **decision.to_dict()}
                context["ti"].xcom_push(key="outcome", value=outcome)
                self.log.info("not deploying %s: %s", version, decision.reason)
                raise AirflowSkipException(f"not deploying {version}: {decision.reason}")
        if expected_champion == version:
            # A retry after a successful deploy and promotion: verify it serves, change nothing.
            self.log.info("%s is already the champion; verifying it serves", version)
        if self.engine == "local":
            summary = self._deploy_local(version, source, cfg)
        else:
            summary = self._deploy_sagemaker(version, expected_champion, decision)
        return self._finish(context, registry, summary, version, expected_champion, decision)

    def _finish(
        self,
        context: Context,
        registry: Any,
        summary: dict[str, Any],
        version: str,
        expected_champion: str | None,
        decision: Any,
    ) -> dict[str, Any]:
        """After the endpoint verifiably serves `version`: promote it, record the outcome."""
        if registry is not None and expected_champion != version:
            summary["promotion"] = self._promote(context, registry, version, expected_champion, decision)
        outcome = {
            "deployed": True,
            "version": version,
            "previous_champion": expected_champion,
            **(decision.to_dict() if decision else {"action": "deploy", "reason": "direct deploy"}),
        }
        if context.get("ti") is not None:
            context["ti"].xcom_push(key="outcome", value=outcome)
        return {**summary, **outcome}

    def _registry(self, cfg: Any) -> Any:
        from airflow.providers.mongo.hooks.mongo import MongoHook

        from fraud_retraining.registry import ModelRegistry

        # The hook's client lives as long as the task; the registry only needs the collection.
        return ModelRegistry.for_use_case(cfg, MongoHook(mongo_conn_id=cfg.mongo.conn_id).get_conn())

    def _decide(self, context: Context, gate: dict[str, Any], registry: Any, champion: str | None) -> Any:
        from datetime import timedelta

        from fraud_retraining.deploy_policy import decide_deployment

        dag_run = context.get("dag_run")
        run_type = getattr(getattr(dag_run, "run_type", None), "value", getattr(dag_run, "run_type", None))
        champion_end = None
        if registry is not None and champion:
            champion_doc = registry.get(champion) or {}
            champion_end = ((champion_doc.get("lineage") or {}).get("data_interval") or {}).get("end")
        dag = context.get("dag")
        period = timedelta(days=1)
        timetable = getattr(dag, "timetable", None)
        if timetable is not None and hasattr(timetable, "_delta"):  # a fixed-delta timetable
            period = timetable._delta
        return decide_deployment(
            gate_passed=bool(gate.get("passed")),
            gate_reasons=list(gate.get("reasons") or []),
            run_type=str(run_type or "manual"),
            interval_end=context.get("data_interval_end"),
            run_started_at=getattr(dag_run, "start_date", None),
            schedule_period=period,
            force_deploy=_truthy(self.force_deploy),
            champion_interval_end=champion_end,
        )

    def _promote(
        self, context: Context, registry: Any, version: str, expected: str | None, decision: Any
    ) -> dict[str, Any]:
        from fraud_retraining.registry import PromotionConflict

        dag_run = context.get("dag_run")
        actor = f"{getattr(dag_run, 'dag_id', self.dag_id)}/{getattr(dag_run, 'run_id', '')}"
        try:
            pointer = registry.promote(
                version,
                expected_champion=expected,
                reason=decision.reason if decision else "direct deploy",
                actor=actor,
            )
        except PromotionConflict as conflict:
            # Another promotion won while we deployed: put the endpoint back, keep the registry's truth.
            if self.engine == "local":
                from fraud_retraining.endpoint_deploy import rollback_local

                url, token = self._endpoint_url_and_token()
                rollback_local(url, token)
            raise RuntimeError(f"deployed {version} but lost the promotion race: {conflict}") from conflict
        return {"champion": pointer.get("version"), "generation": pointer.get("generation")}

    def _endpoint_url_and_token(self) -> tuple[str, str]:
        from airflow.sdk import BaseHook

        url = os.environ.get("FRAUD_ENDPOINT_URL", "")
        token = os.environ.get("FRAUD_ENDPOINT_ADMIN_TOKEN", "")
        try:
            conn = BaseHook.get_connection(self.endpoint_conn_id)
        except Exception:  # the connection is optional: env vars are the fallback
            conn = None
        if conn is not None and conn.host:
            scheme = conn.schema or "http"
            url = f"{scheme}://{conn.host}" + (f":{conn.port}" if conn.port else "")
            token = conn.password or token
        if not url or not token:
            raise ValueError(
                f"no endpoint URL/admin token: set connection {self.endpoint_conn_id!r} "
                "or env FRAUD_ENDPOINT_URL and FRAUD_ENDPOINT_ADMIN_TOKEN"
            )
        return url, token

    def _smoke_sample(self, cfg: Any) -> list[list[float]] | None:
        """The first rows of the run's holdout: the new model must score them before it serves."""
        if not self.training_prefix:
            return None
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from fraud_retraining.evaluation import read_holdout
        from fraud_retraining.features import FEATURE_COLUMNS, feature_matrix

        s3 = S3Hook(aws_conn_id=cfg.s3.conn_id).get_conn()
        holdout, manifest = read_holdout(s3, cfg.s3.bucket, str(self.training_prefix).rstrip("/") + "/")
        rows = holdout.head(int(self.smoke_rows))
        columns = manifest.get("features") or FEATURE_COLUMNS
        return feature_matrix(rows, columns).tolist() if len(rows) else None

    def _deploy_local(self, version: str, source: str, cfg: Any) -> dict[str, Any]:
        from fraud_retraining.endpoint_deploy import deploy_local

        url, token = self._endpoint_url_and_token()
        self.log.info("deploying model %s from %s to %s", version, source, url)
        return deploy_local(url, token, version, source, sample_rows=self._smoke_sample(cfg))

    def _sagemaker_spec(self, version: str) -> Any:
        from fraud_retraining.endpoint_deploy import SageMakerDeploySpec

        missing = [n for n in ("image_uri", "model_data_url", "execution_role_arn") if not getattr(self, n)]
        if missing:
            raise ValueError(f"engine='sagemaker' needs {missing}")
        return SageMakerDeploySpec(
            endpoint_name=self.endpoint_name,
            model_name=self.model_name,
            version=version,
            image_uri=str(self.image_uri),
            model_data_url=str(self.model_data_url),
            execution_role_arn=str(self.execution_role_arn),
            instance_type=self.instance_type,
            alarm_names=tuple(self.alarm_names),
        )

    def _sagemaker_client(self) -> Any:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        return AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="sagemaker").get_conn()

    def _deploy_sagemaker(self, version: str, expected_champion: str | None, decision: Any) -> dict[str, Any]:
        """Create/Update the endpoint, then defer to the triggerer until it settles (no worker
        slot is held for the blue/green rollout, which takes many minutes on AWS)."""
        import time

        from fraud_retraining.endpoint_deploy import start_sagemaker_deploy, verify_serving_config
        from fraud_retraining.triggers import SageMakerEndpointTrigger

        sm_client = self._sagemaker_client()
        started = start_sagemaker_deploy(sm_client, self._sagemaker_spec(version))
        self.log.info("SageMaker endpoint %s: %s", started["endpoint_name"], started["action"])
        if started["action"] == "already-serving":
            description = sm_client.describe_endpoint(EndpointName=self.endpoint_name)
            verified = verify_serving_config(description, started["endpoint_config_name"])
            return {"engine": "sagemaker", "version": version, "action": started["action"], **verified}
        self.defer(
            trigger=SageMakerEndpointTrigger(
                endpoint_name=self.endpoint_name,
                aws_conn_id=self.aws_conn_id,
                deadline_epoch_s=time.time() + self.wait_timeout_s,
                poll_interval_s=self.poll_interval_s,
            ),
            method_name="execute_complete",
            kwargs={
                "version": version,
                "expected_config_name": started["endpoint_config_name"],
                "action": started["action"],
                "expected_champion": expected_champion,
                "decision": decision.to_dict() if decision else None,
            },
        )
        raise AssertionError("defer() returned")  # defer raises TaskDeferred

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any],
        version: str,
        expected_config_name: str,
        action: str,
        expected_champion: str | None,
        decision: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Resume after the trigger: require our config InService (not rolled back), then promote."""
        from fraud_retraining.config import load_use_case
        from fraud_retraining.deploy_policy import DeploymentDecision
        from fraud_retraining.endpoint_deploy import EndpointDeployError, verify_serving_config

        description = event["description"]
        if event.get("timed_out"):
            raise EndpointDeployError(
                f"endpoint {description.get('EndpointName')} still {description.get('EndpointStatus')} "
                f"after {self.wait_timeout_s:.0f}s"
            )
        verified = verify_serving_config(description, expected_config_name)
        summary = {"engine": "sagemaker", "version": version, "action": action, **verified}
        cfg = load_use_case(self.use_case_config or None)
        registry = self._registry(cfg) if self.promote else None
        restored = DeploymentDecision(**decision) if decision else None
        return self._finish(context, registry, summary, version, expected_champion, restored)


def _as_dict(value: dict[str, Any] | str | None) -> dict[str, Any] | None:
    import json

    if value is None or value == "" or value == "None":
        return None
    return json.loads(value) if isinstance(value, str) else dict(value)


def _truthy(value: bool | str) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in {"true", "1", "yes"}
