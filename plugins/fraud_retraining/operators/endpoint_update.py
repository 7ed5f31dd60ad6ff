"""`endpoint_update`: roll the gated model version out to the scoring endpoint.

engine="local": the local server's admin API (URL and token from the Airflow connection
`endpoint_conn_id` if it exists, else env FRAUD_ENDPOINT_URL / FRAUD_ENDPOINT_ADMIN_TOKEN).
engine="sagemaker": CreateModel, CreateEndpointConfig, Create/UpdateEndpoint (blue/green), a bounded
poll until the endpoint settles, then a check that our endpoint config really serves.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import BaseOperator, Context

ENGINES = ("local", "sagemaker")


class EndpointUpdateOperator(BaseOperator):
    """Deploy `version` (stored at `source`) and fail with the reason if it does not end up serving.

    Returns {"engine", "version", ...} (local: previous_version; sagemaker: endpoint_config_name, action).
    """

    template_fields = (
        "version",
        "source",
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
        version: str,
        source: str,
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
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.engine == "local":
            return self._deploy_local()
        return self._deploy_sagemaker()

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

    def _deploy_local(self) -> dict[str, Any]:
        from fraud_retraining.endpoint_deploy import deploy_local

        url, token = self._endpoint_url_and_token()
        self.log.info("deploying model %s from %s to %s", self.version, self.source, url)
        return deploy_local(url, token, self.version, self.source)

    def _deploy_sagemaker(self) -> dict[str, Any]:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        from fraud_retraining.endpoint_deploy import SageMakerDeploySpec, deploy_sagemaker

        missing = [n for n in ("image_uri", "model_data_url", "execution_role_arn") if not getattr(self, n)]
        if missing:
            raise ValueError(f"engine='sagemaker' needs {missing}")
        spec = SageMakerDeploySpec(
            endpoint_name=self.endpoint_name,
            model_name=self.model_name,
            version=self.version,
            image_uri=str(self.image_uri),
            model_data_url=str(self.model_data_url),
            execution_role_arn=str(self.execution_role_arn),
            instance_type=self.instance_type,
            alarm_names=tuple(self.alarm_names),
        )
        sm_client = AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="sagemaker").get_conn()
        return deploy_sagemaker(
            sm_client, spec, timeout_s=self.wait_timeout_s, poll_interval_s=self.poll_interval_s
        )
