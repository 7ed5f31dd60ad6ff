"""The whole retraining DAG, end to end, over consecutive intervals of simulated data with drift.

`airflow dags test` (which is `dag.test()`) against the embedded stack: SecantusDB, moto's S3
server and the scoring endpoint on loopback. The story a user would check in the UI:

1. before the drift, the first run trains, passes the gate on floors alone and deploys;
2. a new fraud tactic appears (small night-time amounts on a set of terminals); a run after it
   trains a challenger that beats the stale champion on the same holdout and is deployed;
3. a broken label feed relabels the training period at random; the challenger trained on it is
   rejected, endpoint_update is skipped with the gate's reason, the run still succeeds, and the
   champion keeps serving.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import demo
import httpx
import numpy as np
import pymongo
import pytest

import local_stack
from fraud_retraining.config import load_use_case
from fraud_retraining.extract import extract_interval
from fraud_retraining.registry import ModelRegistry
from fraud_retraining.seeding import seed
from fraud_retraining.simulator import SimulationParams, simulate
from fraud_retraining.storage import ensure_bucket

pytestmark = pytest.mark.e2e

START = datetime(2026, 3, 1, tzinfo=UTC)
DRIFT_DAY = 32
RUN_DAYS = {"before_drift": 37, "after_drift": 67, "broken_labels": 68}  # logical dates, as day indexes
BIN = Path(sys.executable).parent
CONF = {
    "training_window_days": 7,
    "training_budget_s": 15,
    "gate_min_train_frauds": 20,
    "gate_floors": {"auc_roc": 0.6, "average_precision": 0.1},
}


def day(index: int) -> datetime:
    return START + timedelta(days=index)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, mongo_server, s3_server, mongo_client, s3_client, use_case_config_path):
    state_dir = tmp_path_factory.mktemp("e2e-stack")
    cfg = load_use_case(use_case_config_path)
    endpoint = local_stack.start_service(
        "endpoint",
        None,
        state_dir,
        env={
            "FRAUD_ENDPOINT_ADMIN_TOKEN": "e2e-admin-token",
            "FRAUD_S3_ENDPOINT_URL": local_stack.s3_endpoint(s3_server.port),
            "AWS_ACCESS_KEY_ID": local_stack.LOCAL_S3_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": local_stack.LOCAL_S3_SECRET,
            "AWS_DEFAULT_REGION": local_stack.LOCAL_REGION,
        },
    )
    env = {
        **os.environ,
        **local_stack.connection_env(mongo_server.port, s3_server.port),
        **local_stack.airflow_env(state_dir),
        "FRAUD_ENDPOINT_URL": f"http://127.0.0.1:{endpoint.port}",
        "FRAUD_ENDPOINT_ADMIN_TOKEN": "e2e-admin-token",
        "FRAUD_USE_CASE_CONFIG": use_case_config_path,
    }
    # Simulated history with the drift, seeded as of the last run, and extracted up to the
    # first run's interval (each DAG run then extracts its own interval).
    params = SimulationParams(
        n_customers=800,
        n_terminals=1600,
        n_days=RUN_DAYS["broken_labels"],
        start_date=START.date(),
        seed=11,
        drift_start_day=DRIFT_DAY,
        drift_terminal_share=0.3,
    )
    frame = simulate(params, cfg)
    coll = mongo_client[cfg.mongo.database][cfg.mongo.collection]
    seed(coll, frame, cfg, as_of=day(RUN_DAYS["broken_labels"]))
    ensure_bucket(s3_client, cfg.s3.bucket)
    history_client = pymongo.MongoClient(local_stack.mongo_uri(mongo_server.port), tz_aware=True)
    for index in range(RUN_DAYS["before_drift"] - 1):
        extract_interval(history_client, s3_client, cfg, day(index), day(index + 1))
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
    yield {"cfg": cfg, "env": env, "state_dir": state_dir, "endpoint": endpoint, "frame": frame, "coll": coll}
    local_stack.stop_service(endpoint)


@pytest.fixture(scope="module")
def use_case_config_path(tmp_path_factory) -> str:
    import yaml

    from fraud_retraining.config import DEFAULT_CONFIG_PATH

    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    raw["mongo"]["database"] = f"e2e_{uuid.uuid4().hex[:8]}"
    raw["s3"]["bucket"] = f"e2e-{uuid.uuid4().hex[:12]}"
    path = tmp_path_factory.mktemp("e2e-config") / "use_case.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def run_dag(pipeline: dict, day_index: int, state_dir: Path) -> dict:
    """`airflow dags test` for the interval ending at day_index; then read what each task did."""
    logical = day(day_index).isoformat()
    log = state_dir / f"dag-test-{day_index}.log"
    with open(log, "w") as handle:
        result = subprocess.run(
            [
                str(BIN / "airflow"),
                "dags",
                "test",
                "fraud_model_retraining",
                logical,
                "--conf",
                json.dumps(CONF),
            ],
            env=pipeline["env"],
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=900,
            check=False,
        )
    summary = demo.read_latest_run(pipeline["env"])
    summary["tasks"] = {t["task"]: t for t in summary["tasks"] if t["map_index"] in (-1, 0)}
    assert result.returncode == 0, local_stack._tail(log, 80)
    assert summary["interval"][1].startswith(day(day_index).strftime("%Y-%m-%d")), summary["interval"]
    return summary


def serving_version(pipeline: dict) -> str | None:
    return (
        httpx.get(f"http://127.0.0.1:{pipeline['endpoint'].port}/ping", timeout=10)
        .json()
        .get("model_version")
    )


def test_drift_retrains_deploys_and_a_worse_model_is_rejected(pipeline, mongo_client, tmp_path) -> None:
    cfg = pipeline["cfg"]
    registry = ModelRegistry.for_use_case(cfg, mongo_client)

    # 1. Before the drift: the first model passes on floors alone and goes live.
    first = run_dag(pipeline, RUN_DAYS["before_drift"], tmp_path)
    assert first["state"].endswith("success"), first
    gate1 = first["tasks"]["model_evaluation_gate"]["result"]
    assert gate1["passed"] is True and gate1["champion_version"] is None, gate1
    deploy1 = first["tasks"]["endpoint_update"]
    assert deploy1["state"].endswith("success"), deploy1
    v1 = deploy1["result"]["version"]
    assert registry.champion_version() == v1 and serving_version(pipeline) == v1

    # Catch the raw zone up to the day before the next run (what the daily runs in between did).
    client = pymongo.MongoClient(pipeline["env"]["MONGO_URI"], tz_aware=True)
    s3 = _s3(pipeline)
    for index in range(RUN_DAYS["before_drift"], RUN_DAYS["after_drift"] - 1):
        extract_interval(client, s3, cfg, day(index), day(index + 1))

    # 2. After the drift: the challenger beats the stale champion on the same holdout and deploys.
    second = run_dag(pipeline, RUN_DAYS["after_drift"], tmp_path)
    gate2 = second["tasks"]["model_evaluation_gate"]["result"]
    assert gate2["passed"] is True and gate2["champion_version"] == v1, gate2
    challenger_ap = gate2["challenger"]["average_precision"]
    champion_ap = gate2["champion"]["average_precision"]
    assert challenger_ap > champion_ap + 0.05, (challenger_ap, champion_ap)
    v2 = second["tasks"]["endpoint_update"]["result"]["version"]
    assert v2 != v1 and registry.champion_version() == v2 and serving_version(pipeline) == v2

    # 3. A broken label feed relabels the training period at random (new label events in the
    #    next interval); the challenger trained on them must be rejected.
    frame = pipeline["frame"]
    f = cfg.fields
    as_of = day(RUN_DAYS["broken_labels"])
    in_train = frame[
        (frame[f.time] >= day(RUN_DAYS["broken_labels"] - 35))
        & (frame[f.time] < day(RUN_DAYS["broken_labels"] - 28))
    ]
    shuffled = np.random.default_rng(3).permutation(in_train[f.label].to_numpy())
    relabeled_at = as_of - timedelta(hours=1)
    pipeline["coll"].bulk_write(
        [
            pymongo.UpdateOne({f.id: tx_id}, {"$set": {f.label: int(label), f.labeled_at: relabeled_at}})
            for tx_id, label in zip(in_train[f.id], shuffled, strict=True)
        ],
        ordered=False,
    )
    third = run_dag(pipeline, RUN_DAYS["broken_labels"], tmp_path)
    assert third["state"].endswith("success"), third  # a failed gate is a normal outcome
    gate3 = third["tasks"]["model_evaluation_gate"]["result"]
    assert gate3["passed"] is False and gate3["champion_version"] == v2, gate3
    update3 = third["tasks"]["endpoint_update"]
    assert update3["state"].endswith("skipped"), update3
    assert update3["result"]["reason"].startswith("gate failed: "), update3
    assert registry.champion_version() == v2 and serving_version(pipeline) == v2
    assert registry.get(third["tasks"]["automl_training"]["result"]["version"])["gate"]["passed"] is False

    # Every run left its report; this one says FAIL and why, with every section available.
    report = third["tasks"]["run_report"]
    assert report["state"].endswith("success"), report
    summary = report["result"]
    assert summary["decision"] == "fail" and summary["deployment"].startswith("skipped"), summary
    assert all(section["available"] for section in summary["sections"]), summary["sections"]
    page = _s3(pipeline).get_object(Bucket=summary["bucket"], Key=summary["key"])["Body"].read().decode()
    assert "gate failed" in page.lower() or "fail" in page.lower()
    assert 'src="data:image/png;base64,' in page  # self-contained: no external assets
    assert 'src="http' not in page and "<link " not in page
    for run in (first, second):
        assert run["tasks"]["run_report"]["result"]["decision"] == "pass"


def _s3(pipeline: dict):
    import boto3

    env = pipeline["env"]
    return boto3.client(
        "s3",
        endpoint_url=env["S3_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
