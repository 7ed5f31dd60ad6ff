"""endpoint_update in its DAG role: the deploy decision, deploy, registry promotion, races.

Real servers throughout: SecantusDB for the registry, moto's S3 server for the model artifacts
and the holdout, and the scoring endpoint on loopback HTTP loading models by s3:// URI.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import uvicorn
from airflow.sdk.exceptions import AirflowSkipException

from fraud_retraining import endpoint_deploy, model_artifact
from fraud_retraining.config import load_use_case
from fraud_retraining.features import FEATURE_COLUMNS
from fraud_retraining.layout import model_prefix
from fraud_retraining.operators.endpoint_update import EndpointUpdateOperator
from fraud_retraining.registry import ModelRegistry, store_artifact_files
from fraud_retraining.serving import create_app

TOKEN = "endpoint-update-test-token"
DAY = datetime(2026, 11, 10, tzinfo=UTC)
TRAINING_PREFIX = "training/run-under-test/"


class FakeTI:
    """Collects what the operator pushes to XCom besides its return value."""

    def __init__(self) -> None:
        self.pushed: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = json.loads(json.dumps(value))  # must be small JSON


def context(run_type: str = "scheduled", interval_end: datetime = DAY, started: datetime | None = None):
    dag_run = SimpleNamespace(
        run_type=run_type,
        start_date=started or interval_end + timedelta(minutes=3),
        dag_id="fraud_model_retraining",
        run_id=f"{run_type}__{interval_end.isoformat()}",
    )
    return {"ti": FakeTI(), "dag_run": dag_run, "data_interval_end": interval_end, "dag": None}


def _model_files(version: str, seed: int) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(300, len(FEATURE_COLUMNS)))
    y = (X[:, 0] > 0.8).astype(int)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 4}, lgb.Dataset(X, label=y), 5)
    return model_artifact.serialize_model(booster, FEATURE_COLUMNS, version)


@pytest.fixture
def stack(
    mongo_client,
    mongo_db,
    s3_client,
    s3_bucket,
    s3_endpoint_url,
    airflow_connections,
    use_case_config_file,
    monkeypatch,
) -> Iterator[SimpleNamespace]:
    config_path = use_case_config_file(database=mongo_db.name, bucket=s3_bucket)
    cfg = load_use_case(config_path)
    registry = ModelRegistry.for_use_case(cfg, mongo_client)
    for i, version in enumerate(("v1", "v2", "v3"), start=1):
        prefix = model_prefix(cfg, version)
        store_artifact_files(s3_client, s3_bucket, prefix, _model_files(version, i))
        registry.register(
            version,
            engine="local",
            lineage={"data_interval": {"start": None, "end": (DAY - timedelta(days=3 - i)).isoformat()}},
            metrics={},
            artifact={"bucket": s3_bucket, "prefix": prefix},
        )
    holdout = pd.DataFrame(
        np.random.default_rng(0).normal(size=(30, len(FEATURE_COLUMNS))), columns=FEATURE_COLUMNS
    )
    buffer = io.BytesIO()
    holdout.to_parquet(buffer)
    s3_client.put_object(Bucket=s3_bucket, Key=TRAINING_PREFIX + "test.parquet", Body=buffer.getvalue())
    s3_client.put_object(
        Bucket=s3_bucket,
        Key=TRAINING_PREFIX + "manifest.json",
        Body=json.dumps({"features": FEATURE_COLUMNS}),
    )
    # The endpoint (in this process) loads models by s3:// URI from the test S3 server.
    monkeypatch.setenv("FRAUD_S3_ENDPOINT_URL", s3_endpoint_url)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(admin_token=TOKEN), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("FRAUD_ENDPOINT_URL", url)
    monkeypatch.setenv("FRAUD_ENDPOINT_ADMIN_TOKEN", TOKEN)
    yield SimpleNamespace(cfg=cfg, config_path=config_path, registry=registry, url=url)
    server.should_exit = True
    thread.join(timeout=10)


def operator(stack: SimpleNamespace, version: str, passed: bool = True, **kwargs) -> EndpointUpdateOperator:
    gate = {
        "passed": passed,
        "reasons": ["all rules hold"] if passed else ["average_precision 0.1 vs floor 0.3"],
    }
    return EndpointUpdateOperator(
        task_id="endpoint_update",
        gate=json.dumps({**gate, "challenger_version": version}),
        training_prefix=TRAINING_PREFIX,
        use_case_config=stack.config_path,
        endpoint_conn_id="absent_conn",
        **kwargs,
    )


def serving(stack: SimpleNamespace) -> str | None:
    return httpx.get(stack.url + "/ping").json().get("model_version")


def test_first_passing_model_deploys_and_becomes_champion(stack) -> None:
    ctx = context()
    summary = operator(stack, "v1").execute(ctx)
    assert summary["deployed"] is True and summary["version"] == "v1"
    assert summary["previous_champion"] is None
    assert summary["promotion"] == {"champion": "v1", "generation": 1}
    assert ctx["ti"].pushed["outcome"]["deployed"] is True
    assert stack.registry.champion_version() == "v1" and serving(stack) == "v1"
    history = stack.registry.history()
    assert history[-1]["actor"] == "fraud_model_retraining/scheduled__" + DAY.isoformat()
    # A retry of the same task changes nothing: the version already serves and is champion.
    again = operator(stack, "v1").execute(context())
    assert again["deployed"] is True and "promotion" not in again
    assert len(stack.registry.history()) == 1


def test_failed_gate_skips_and_the_champion_keeps_serving(stack) -> None:
    operator(stack, "v1").execute(context())
    ctx = context()
    with pytest.raises(AirflowSkipException, match=r"gate failed: average_precision 0\.1 vs floor 0\.3"):
        operator(stack, "v2", passed=False).execute(ctx)
    assert ctx["ti"].pushed["outcome"] == {
        "deployed": False,
        "version": "v2",
        "action": "skip",
        "reason": "gate failed: average_precision 0.1 vs floor 0.3",
    }
    assert stack.registry.champion_version() == "v1" and serving(stack) == "v1"


def test_backfill_and_catch_up_runs_never_deploy(stack) -> None:
    operator(stack, "v1").execute(context())
    with pytest.raises(AirflowSkipException, match="backfill runs never replace the live champion"):
        operator(stack, "v2", force_deploy="True").execute(context(run_type="backfill"))
    with pytest.raises(AirflowSkipException, match="catch-up run"):
        operator(stack, "v2").execute(context(started=DAY + timedelta(days=5)))
    assert stack.registry.champion_version() == "v1" and serving(stack) == "v1"
    # A manual run with force_deploy may deploy a past interval's model (the gate passed).
    forced = operator(stack, "v2", force_deploy="True").execute(
        context(run_type="manual", started=DAY + timedelta(days=5))
    )
    assert forced["reason"] == "manual run with force_deploy"
    assert stack.registry.champion_version() == "v2" and serving(stack) == "v2"


def test_model_that_fails_to_load_leaves_the_champion_serving(stack, s3_client) -> None:
    operator(stack, "v1").execute(context())
    s3_client.put_object(
        Bucket=stack.cfg.s3.bucket, Key=model_prefix(stack.cfg, "v2") + "booster.txt", Body=b"not a booster"
    )
    with pytest.raises(endpoint_deploy.EndpointDeployError, match="failed to load"):
        operator(stack, "v2").execute(context())
    assert stack.registry.champion_version() == "v1" and serving(stack) == "v1"


def test_lost_promotion_race_rolls_the_endpoint_back(stack, monkeypatch) -> None:
    operator(stack, "v1").execute(context())
    real_deploy = endpoint_deploy.deploy_local

    def deploy_while_someone_else_promotes(*args, **kwargs):
        result = real_deploy(*args, **kwargs)
        stack.registry.promote("v3", expected_champion="v1", reason="a concurrent run", actor="other")
        return result

    monkeypatch.setattr(endpoint_deploy, "deploy_local", deploy_while_someone_else_promotes)
    with pytest.raises(RuntimeError, match="lost the promotion race"):
        operator(stack, "v2").execute(context())
    assert stack.registry.champion_version() == "v3"  # the winner's promotion stands
    assert serving(stack) == "v1"  # our deploy was undone
