"""Endpoint rollout: local admin API over real loopback HTTP, SageMaker against moto's server over HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import lightgbm as lgb
import numpy as np
import pytest
import uvicorn

from fraud_retraining import model_artifact
from fraud_retraining.endpoint_deploy import (
    EndpointDeployError,
    SageMakerDeploySpec,
    blue_green_deployment_config,
    deploy_local,
    deploy_sagemaker,
    rollback_local,
    sagemaker_resource_name,
    start_sagemaker_deploy,
    verify_serving_config,
)
from fraud_retraining.operators.endpoint_update import EndpointUpdateOperator
from fraud_retraining.serving import SMOKE_SAMPLE_FILE, create_app

FEATURES = ["amount", "customer_mean_7d", "terminal_risk_7d"]
TOKEN = "deploy-test-token"


def _model_dir(root: Path, version: str, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(400, len(FEATURES)))
    y = (X[:, 0] > 0.8).astype(int)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 5}, lgb.Dataset(X, label=y), 10)
    directory = model_artifact.write_model_dir(
        model_artifact.serialize_model(booster, FEATURES, version), root / version
    )
    (directory / SMOKE_SAMPLE_FILE).write_text(json.dumps({"instances": X[:3].tolist()}))
    return directory


@pytest.fixture
def local_endpoint(tmp_path: Path) -> Iterator[tuple[str, dict[str, Path]]]:
    dirs = {"v1": _model_dir(tmp_path, "v1", 1), "v2": _model_dir(tmp_path, "v2", 2)}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(initial_source=str(dirs["v1"]), admin_token=TOKEN)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield f"http://127.0.0.1:{port}", dirs
    server.should_exit = True
    thread.join(timeout=10)


def test_deploy_local_switches_and_verifies(local_endpoint) -> None:
    url, dirs = local_endpoint
    result = deploy_local(url, TOKEN, "v2", str(dirs["v2"]))
    assert result == {"engine": "local", "version": "v2", "previous_version": "v1", "endpoint_url": url}
    assert rollback_local(url, TOKEN)["current_version"] == "v1"


def test_deploy_local_reports_the_servers_reason(local_endpoint, tmp_path: Path) -> None:
    url, _ = local_endpoint
    with pytest.raises(EndpointDeployError, match="failed to load"):
        deploy_local(url, TOKEN, "v9", str(tmp_path / "missing"))
    with pytest.raises(EndpointDeployError, match="403"):
        deploy_local(url, "wrong-token", "v9", str(tmp_path / "missing"))


def test_operator_local_engine_from_env(local_endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    url, dirs = local_endpoint
    monkeypatch.setenv("FRAUD_ENDPOINT_URL", url)
    monkeypatch.setenv("FRAUD_ENDPOINT_ADMIN_TOKEN", TOKEN)
    operator = EndpointUpdateOperator(
        task_id="endpoint_update",
        version="v2",
        source=str(dirs["v2"]),
        endpoint_conn_id="absent_conn",
        promote=False,
    )
    summary = operator.execute({})
    assert summary["version"] == "v2"
    assert json.loads(json.dumps(summary)) == summary
    assert TOKEN not in json.dumps(summary)


def test_operator_local_engine_fails_with_the_reason(local_endpoint, monkeypatch, tmp_path: Path) -> None:
    url, _ = local_endpoint
    monkeypatch.setenv("FRAUD_ENDPOINT_URL", url)
    monkeypatch.setenv("FRAUD_ENDPOINT_ADMIN_TOKEN", TOKEN)
    operator = EndpointUpdateOperator(
        task_id="endpoint_update",
        version="v5",
        source=str(tmp_path / "nope"),
        endpoint_conn_id="absent_conn",
        promote=False,
    )
    with pytest.raises(EndpointDeployError, match="failed to load"):
        operator.execute({})


def test_sagemaker_names_and_blue_green_config() -> None:
    assert (
        sagemaker_resource_name("card_fraud", "2026-12-04T10:00:00+00:00")
        == "card-fraud-2026-12-04T10-00-00-00-00"
    )
    assert len(sagemaker_resource_name("m" * 50, "v" * 50)) == 63
    spec = _spec("v1", alarms=("fraud-endpoint-5xx",))
    config = blue_green_deployment_config(spec)
    assert config["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == "ALL_AT_ONCE"
    assert config["AutoRollbackConfiguration"] == {"Alarms": [{"AlarmName": "fraud-endpoint-5xx"}]}


def _spec(version: str, alarms: tuple[str, ...] = ()) -> SageMakerDeploySpec:
    return SageMakerDeploySpec(
        endpoint_name="card-fraud-endpoint",
        model_name="card-fraud",
        version=version,
        image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/fraud-serving:latest",
        model_data_url=f"s3://fraud-retraining/models/card-fraud/{version}/model.tar.gz",
        execution_role_arn="arn:aws:iam::123456789012:role/fraud-sagemaker",
        alarm_names=alarms,
    )


@pytest.fixture
def sagemaker(s3_endpoint_url: str, s3_client):
    # Same moto server as S3; endpoint names are unique per test since the server is shared.
    return boto3.client(
        "sagemaker",
        endpoint_url=s3_endpoint_url,
        region_name=s3_client.meta.region_name,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _unique_spec(version: str) -> SageMakerDeploySpec:
    spec = _spec(version)
    return SageMakerDeploySpec(**{**spec.__dict__, "endpoint_name": f"ep-{time.monotonic_ns()}"})


def test_sagemaker_first_deploy_creates_and_verifies(sagemaker) -> None:
    spec = _unique_spec("v1")
    result = deploy_sagemaker(sagemaker, spec, timeout_s=30, poll_interval_s=0.2)
    assert result["action"] == "created"
    assert result["endpoint_config_name"] == "card-fraud-v1"
    assert (
        sagemaker.describe_endpoint(EndpointName=spec.endpoint_name)["EndpointConfigName"] == "card-fraud-v1"
    )
    model = sagemaker.describe_model(ModelName="card-fraud-v1")
    assert model["PrimaryContainer"]["ModelDataUrl"] == spec.model_data_url
    # A retry of the same version is idempotent: the existing model/config are reused.
    again = deploy_sagemaker(sagemaker, spec, timeout_s=30, poll_interval_s=0.2)
    assert again["action"] == "already-serving"


def test_sagemaker_silent_rollback_is_detected(sagemaker) -> None:
    spec_v1 = _unique_spec("v1")
    deploy_sagemaker(sagemaker, spec_v1, timeout_s=30, poll_interval_s=0.2)
    # The endpoint settled, but on v1's config: exactly what a rolled-back v2 update looks like.
    description = sagemaker.describe_endpoint(EndpointName=spec_v1.endpoint_name)
    with pytest.raises(EndpointDeployError, match="rolled the update back"):
        verify_serving_config(description, sagemaker_resource_name("card-fraud", "v2"))


def test_sagemaker_update_failure_fails_with_reason(sagemaker) -> None:
    spec_v1 = _unique_spec("v1")
    deploy_sagemaker(sagemaker, spec_v1, timeout_s=30, poll_interval_s=0.2)
    spec_v2 = SageMakerDeploySpec(**{**spec_v1.__dict__, "version": "v2"})
    # moto 5.2.5 does not implement UpdateEndpoint (it answers 500): the error must surface,
    # never be mistaken for success.
    with pytest.raises(EndpointDeployError, match="UpdateEndpoint"):
        start_sagemaker_deploy(sagemaker, spec_v2)


def test_operator_sagemaker_engine_over_aws_connection(airflow_connections, s3_endpoint_url) -> None:
    endpoint_name = f"op-ep-{time.monotonic_ns()}"
    operator = EndpointUpdateOperator(
        task_id="endpoint_update",
        engine="sagemaker",
        promote=False,
        version="v7",
        source="models/card-fraud/v7/",
        endpoint_name=endpoint_name,
        image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/fraud-serving:latest",
        model_data_url="s3://fraud-retraining/models/card-fraud/v7/model.tar.gz",
        execution_role_arn="arn:aws:iam::123456789012:role/fraud-sagemaker",
        poll_interval_s=0.2,
        wait_timeout_s=30,
    )
    from airflow.sdk.exceptions import TaskDeferred

    # The worker slot is released while SageMaker rolls out: the task defers to a trigger.
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({})
    trigger = deferred.value.trigger
    assert deferred.value.method_name == "execute_complete"
    assert trigger.serialize()[0] == "fraud_retraining.triggers.SageMakerEndpointTrigger"
    assert trigger.endpoint_name == endpoint_name

    async def first_event():
        async for event in trigger.run():
            return event.payload

    event = asyncio.run(asyncio.wait_for(first_event(), timeout=60))
    assert event["timed_out"] is False
    summary = operator.execute_complete({}, event, **deferred.value.kwargs)
    assert summary["endpoint_config_name"] == "card-fraud-v7"
    assert summary["status"] == "InService"
    assert summary["deployed"] is True

    # SageMaker rolled the update back silently: another config serves. The task must fail.
    rolled_back = {**event, "description": {**event["description"], "EndpointConfigName": "card-fraud-v6"}}
    with pytest.raises(EndpointDeployError, match="rolled the update back"):
        operator.execute_complete({}, rolled_back, **deferred.value.kwargs)
    timed_out = {"timed_out": True, "description": {**event["description"], "EndpointStatus": "Updating"}}
    with pytest.raises(EndpointDeployError, match="still Updating"):
        operator.execute_complete({}, timed_out, **deferred.value.kwargs)
