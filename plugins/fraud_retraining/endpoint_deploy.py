"""Roll a model version out to the scoring endpoint: the local server's admin API, or SageMaker.

Both paths end with a check of what really serves, because a deploy call that "succeeded" proves
nothing: the local server may have been restarted, and SageMaker rolls back blue/green updates
silently when its alarms fire.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import httpx

ENDPOINT_URL_ENV = "FRAUD_ENDPOINT_URL"


class EndpointDeployError(RuntimeError):
    """The new version is not serving; the message says why."""


# ---------------------------------------------------------------- local server


def deploy_local(
    base_url: str,
    admin_token: str,
    version: str,
    source: str,
    *,
    sample_rows: list[list[float]] | None = None,
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Ask the local endpoint to load, smoke-test and switch to `version`; verify /ping after."""
    spec: dict[str, Any] = {"version": version, "source": source}
    if sample_rows:
        spec["sample_rows"] = sample_rows
    headers = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s) as http:
        try:
            response = http.post("/admin/deploy", json=spec, headers=headers)
        except httpx.HTTPError as exc:
            raise EndpointDeployError(f"endpoint {base_url} unreachable: {exc}") from None
        if response.status_code != 200:
            raise EndpointDeployError(
                f"deploy of {version} refused ({response.status_code}): {_reason(response)}"
            )
        ping = http.get("/ping")
    served = ping.json().get("model_version") if ping.status_code == 200 else None
    if served != version:
        raise EndpointDeployError(
            f"after deploy /ping reports {ping.status_code} version {served!r}, not {version!r}"
        )
    status = response.json()
    return {
        "engine": "local",
        "version": version,
        "previous_version": status.get("previous_version"),
        "endpoint_url": base_url,
    }


def rollback_local(base_url: str, admin_token: str, *, timeout_s: float = 30.0) -> dict[str, Any]:
    """Switch the local endpoint back to its previous model."""
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s) as http:
        response = http.post("/admin/rollback", headers={"Authorization": f"Bearer {admin_token}"})
    if response.status_code != 200:
        raise EndpointDeployError(f"rollback refused ({response.status_code}): {_reason(response)}")
    return response.json()


def _reason(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text[:500]


# ---------------------------------------------------------------- SageMaker


@dataclass(frozen=True)
class SageMakerDeploySpec:
    """What a SageMaker real-time endpoint needs to serve one model version."""

    endpoint_name: str
    model_name: str  # the use case's model name; resource names add the version
    version: str
    image_uri: str
    model_data_url: str  # s3://.../model.tar.gz in the SageMaker container layout
    execution_role_arn: str
    instance_type: str = "ml.m5.large"
    initial_instance_count: int = 1
    traffic_wait_s: int = 300  # blue/green baking period before the old fleet is terminated
    termination_wait_s: int = 120
    alarm_names: tuple[str, ...] = ()  # CloudWatch alarms that trigger SageMaker's auto-rollback


def sagemaker_resource_name(model_name: str, version: str) -> str:
    """A SageMaker-legal, per-version name (alphanumerics and hyphens, at most 63 chars)."""
    name = re.sub(r"[^A-Za-z0-9-]+", "-", f"{model_name}-{version}").strip("-")
    return name[:63].rstrip("-")


def blue_green_deployment_config(spec: SageMakerDeploySpec) -> dict[str, Any]:
    config: dict[str, Any] = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {
                "Type": "ALL_AT_ONCE",
                "WaitIntervalInSeconds": spec.traffic_wait_s,
            },
            "TerminationWaitInSeconds": spec.termination_wait_s,
        }
    }
    if spec.alarm_names:
        config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": name} for name in spec.alarm_names]}
    return config


def _already_exists(exc: Exception) -> bool:
    message = str(exc).lower()
    return "already exist" in message or "cannot create already existing" in message


def start_sagemaker_deploy(sm_client: Any, spec: SageMakerDeploySpec) -> dict[str, Any]:
    """CreateModel + CreateEndpointConfig (idempotent per version), then Create- or UpdateEndpoint."""
    resource_name = sagemaker_resource_name(spec.model_name, spec.version)
    try:
        sm_client.create_model(
            ModelName=resource_name,
            PrimaryContainer={"Image": spec.image_uri, "ModelDataUrl": spec.model_data_url},
            ExecutionRoleArn=spec.execution_role_arn,
        )
    except Exception as exc:
        if not _already_exists(exc):
            raise
    try:
        sm_client.create_endpoint_config(
            EndpointConfigName=resource_name,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": resource_name,
                    "InstanceType": spec.instance_type,
                    "InitialInstanceCount": spec.initial_instance_count,
                }
            ],
        )
    except Exception as exc:
        if not _already_exists(exc):
            raise
    try:
        current = sm_client.describe_endpoint(EndpointName=spec.endpoint_name)
    except Exception as exc:
        if "could not find" not in str(exc).lower():
            raise
        current = None
    if current is None:
        sm_client.create_endpoint(EndpointName=spec.endpoint_name, EndpointConfigName=resource_name)
        action = "created"
    elif current.get("EndpointConfigName") == resource_name:
        action = "already-serving"  # a retry after a successful update: nothing to do
    else:
        try:
            sm_client.update_endpoint(
                EndpointName=spec.endpoint_name,
                EndpointConfigName=resource_name,
                DeploymentConfig=blue_green_deployment_config(spec),
            )
        except Exception as exc:
            raise EndpointDeployError(
                f"UpdateEndpoint {spec.endpoint_name} -> {resource_name} failed: {exc}"
            ) from None
        action = "updated"
    return {"endpoint_name": spec.endpoint_name, "endpoint_config_name": resource_name, "action": action}


def wait_for_endpoint(
    sm_client: Any,
    endpoint_name: str,
    expected_config_name: str,
    *,
    timeout_s: float = 3600.0,
    poll_interval_s: float = 30.0,
) -> dict[str, Any]:
    """Bounded poll until the endpoint leaves Creating/Updating; then require our config to serve."""
    deadline = time.monotonic() + timeout_s
    while True:
        description = sm_client.describe_endpoint(EndpointName=endpoint_name)
        status = description["EndpointStatus"]
        if status not in ("Creating", "Updating", "SystemUpdating", "RollingBack"):
            break
        if time.monotonic() >= deadline:
            raise EndpointDeployError(f"endpoint {endpoint_name} still {status} after {timeout_s:.0f}s")
        time.sleep(poll_interval_s)
    return verify_serving_config(description, expected_config_name)


def verify_serving_config(description: dict[str, Any], expected_config_name: str) -> dict[str, Any]:
    """Fail unless the endpoint is InService on `expected_config_name` (catches silent rollbacks)."""
    status = description.get("EndpointStatus")
    serving = description.get("EndpointConfigName")
    if status != "InService":
        reason = description.get("FailureReason", "")
        raise EndpointDeployError(
            f"endpoint {description.get('EndpointName')} is {status}: {reason}".rstrip(": ")
        )
    if serving != expected_config_name:
        raise EndpointDeployError(
            f"endpoint {description.get('EndpointName')} serves config {serving!r}, not {expected_config_name!r}"
            " (SageMaker rolled the update back)"
        )
    return {
        "endpoint_name": description.get("EndpointName"),
        "endpoint_config_name": serving,
        "status": status,
    }


def deploy_sagemaker(
    sm_client: Any,
    spec: SageMakerDeploySpec,
    *,
    timeout_s: float = 3600.0,
    poll_interval_s: float = 30.0,
) -> dict[str, Any]:
    """The whole SageMaker rollout: create/update, wait (bounded poll), verify what serves."""
    started = start_sagemaker_deploy(sm_client, spec)
    verified = wait_for_endpoint(
        sm_client,
        spec.endpoint_name,
        started["endpoint_config_name"],
        timeout_s=timeout_s,
        poll_interval_s=poll_interval_s,
    )
    return {"engine": "sagemaker", "version": spec.version, "action": started["action"], **verified}
