"""Live scoring handler: Lambda events against the real MongoDB wire server and a real local
endpoint (the serving app in a uvicorn thread on loopback) with a tiny trained model."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pymongo
import pytest
import uvicorn
import yaml
from pymongo import monitoring
from scoring import lambda_function
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from fraud_retraining import extract, model_artifact
from fraud_retraining.config import DEFAULT_CONFIG_PATH, UseCaseConfig, load_use_case
from fraud_retraining.features import FEATURE_COLUMNS, compute_features
from fraud_retraining.scoring import (
    MAX_DOCUMENT_BYTES,
    HttpEndpointClient,
    LiveScorer,
    SageMakerEndpointClient,
    ScoringSettings,
    fetch_history,
    live_features,
    live_features_many,
    validate_transaction,
)
from fraud_retraining.seeding import seed
from fraud_retraining.serving import SMOKE_SAMPLE_FILE, create_app
from fraud_retraining.simulator import SimulationParams, simulate

MODEL_VERSION = "live-test-v1"
N_DAYS = 45


# ---------------------------------------------------------------- shared fixtures (also used by
# tests/test_change_stream_scorer.py)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_in_thread(app: Any) -> tuple[str, uvicorn.Server, threading.Thread]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    return f"http://127.0.0.1:{port}", server, thread


def train_model_dir(root: Path) -> Path:
    """A real LightGBM model over FEATURE_COLUMNS: fraud when the amount is high or the terminal
    has known frauds, so scores vary with the features the handler builds."""
    rng = np.random.default_rng(11)
    X = np.abs(rng.normal(size=(1500, len(FEATURE_COLUMNS)))) * 50
    X[:, FEATURE_COLUMNS.index("terminal_fraud_share_30d")] = rng.random(1500) * 0.3
    y = (
        (X[:, FEATURE_COLUMNS.index("amount")] > 90)
        | (X[:, FEATURE_COLUMNS.index("terminal_fraud_share_30d")] > 0.2)
    ).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 7, "seed": 1},
        lgb.Dataset(X, label=y),
        num_boost_round=20,
    )
    directory = model_artifact.write_model_dir(
        model_artifact.serialize_model(booster, FEATURE_COLUMNS, MODEL_VERSION), root / MODEL_VERSION
    )
    (directory / SMOKE_SAMPLE_FILE).write_text(json.dumps({"instances": X[:5].tolist()}))
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def endpoint_url(model_dir: Path) -> Iterator[str]:
    url, server, thread = serve_in_thread(create_app(initial_source=str(model_dir), admin_token="unused"))
    yield url
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def slow_endpoint_url() -> Iterator[str]:
    """An endpoint that answers after 2 s: the handler's timeout must cut it short."""

    async def invocations(request: Any) -> JSONResponse:
        await asyncio.sleep(2.0)
        return JSONResponse({"scores": [0.1], "model_version": "slow"})

    url, server, thread = serve_in_thread(
        Starlette(routes=[Route("/invocations", invocations, methods=["POST"])])
    )
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def dead_endpoint_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def write_config(directory: Path, database: str) -> str:
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    raw["mongo"]["database"] = database
    path = directory / "use_case.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture(scope="module")
def history(
    mongo_client: pymongo.MongoClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """45 simulated days ending now, seeded as the bank writes them (late labels due at now,
    1 % malformed documents of every kind), in a database of this module's own."""
    database = f"t_scoring_{uuid.uuid4().hex[:10]}"
    config_path = write_config(tmp_path_factory.mktemp("cfg"), database)
    cfg = load_use_case(config_path)
    now = datetime.now(UTC).replace(microsecond=0)
    params = SimulationParams(
        n_customers=150,
        n_terminals=200,
        n_days=N_DAYS,
        start_date=(now - timedelta(days=N_DAYS)).date(),
        seed=5,
    )
    frame = simulate(params, cfg)
    frame = frame[frame[cfg.fields.time] < pd.Timestamp(now)].reset_index(drop=True)
    db = mongo_client[database]
    summary = seed(db[cfg.mongo.collection], frame, cfg, as_of=now, malformed_share=0.01, seed_value=5)
    assert summary["malformed_by_kind"].get("oversized")
    yield {"db": db, "cfg": cfg, "config_path": config_path, "frame": frame, "as_of": now}
    mongo_client.drop_database(database)


def make_scorer(history: dict[str, Any], url: str, **overrides: Any) -> LiveScorer:
    settings = ScoringSettings(endpoint_url=url, **overrides)
    client = HttpEndpointClient(
        url,
        timeout_s=settings.endpoint_timeout_s,
        connect_timeout_s=settings.endpoint_connect_timeout_s,
        max_attempts=settings.endpoint_max_attempts,
    )
    return LiveScorer(history["db"], history["cfg"], settings, client)


def live_event(history: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A new transaction now, by a customer and at a terminal with history."""
    cfg: UseCaseConfig = history["cfg"]
    f = cfg.fields
    frame = history["frame"]
    busy = frame[f.terminal].value_counts().index[0]
    row = frame[frame[f.terminal] == busy].iloc[-1]
    event = {
        f.id: f"live-{uuid.uuid4().hex[:12]}",
        f.time: (history["as_of"] - timedelta(seconds=1)).isoformat().replace("+00:00", "Z"),
        f.customer: int(row[f.customer]),
        f.terminal: int(busy),
        f.amount: 42.5,
    }
    event.update(changes)
    return event


# ---------------------------------------------------------------- the Lambda entry point


@pytest.fixture
def lambda_env(
    monkeypatch: pytest.MonkeyPatch, history: dict[str, Any], mongo_uri: str, endpoint_url: str
) -> Iterator[None]:
    monkeypatch.setenv("MONGO_URI", mongo_uri)
    monkeypatch.setenv("FRAUD_USE_CASE_CONFIG", history["config_path"])
    monkeypatch.setenv("FRAUD_ENDPOINT_URL", endpoint_url)
    monkeypatch.setenv("FRAUD_SCORING_THRESHOLD", "0.5")
    monkeypatch.delenv("FRAUD_SAGEMAKER_ENDPOINT_NAME", raising=False)
    lambda_function.reset_clients()
    yield
    lambda_function.reset_clients()


def _body(response: dict[str, Any]) -> dict[str, Any]:
    assert response["headers"]["Content-Type"] == "application/json"
    return json.loads(response["body"])


def test_plain_event_is_scored_and_recorded(lambda_env: None, history: dict[str, Any]) -> None:
    event = live_event(history)
    response = lambda_function.lambda_handler(event, None)
    assert response["statusCode"] == 200
    body = _body(response)
    assert body["status"] == "scored"
    assert body["tx_id"] == event["tx_id"]
    assert 0.0 <= body["fraud_probability"] <= 1.0
    assert body["decision"] == ("decline" if body["fraud_probability"] >= 0.5 else "approve")
    assert body["model_version"] == MODEL_VERSION
    assert body["latency_ms"] > 0
    assert set(body["timings_ms"]) == {"validate", "features", "endpoint", "record"}
    assert body["recorded"] == "new"
    stored = history["db"]["scores"].find_one({"_id": event["tx_id"]})
    assert stored["fraud_probability"] == body["fraud_probability"]
    assert stored["model_version"] == MODEL_VERSION
    assert set(stored["features"]) == set(FEATURE_COLUMNS)


def test_clients_are_created_once_per_container(lambda_env: None, history: dict[str, Any]) -> None:
    lambda_function.lambda_handler(live_event(history), None)
    first = lambda_function._scorer()
    lambda_function.lambda_handler(live_event(history), None)
    assert lambda_function._scorer() is first


@pytest.mark.parametrize("base64_body", [False, True])
def test_api_gateway_proxy_event(lambda_env: None, history: dict[str, Any], base64_body: bool) -> None:
    tx = live_event(history, amount=500.0)
    body = json.dumps(tx)
    event = {
        "httpMethod": "POST",
        "path": "/score",
        "headers": {"Content-Type": "application/json"},
        "requestContext": {"requestId": "r-1", "stage": "prod"},
        "isBase64Encoded": base64_body,
        "body": base64.b64encode(body.encode()).decode() if base64_body else body,
    }
    response = lambda_function.lambda_handler(event, None)
    assert response["statusCode"] == 200
    answer = _body(response)
    assert answer["tx_id"] == tx["tx_id"]
    assert answer["status"] == "scored"
    assert answer["model_version"] == MODEL_VERSION


def _gateway(body: str | None, **extra: Any) -> dict[str, Any]:
    return {"version": "2.0", "routeKey": "POST /score", "requestContext": {}, "body": body, **extra}


BAD_INPUTS = {
    "missing field": (
        lambda e: {k: v for k, v in e.items() if k != "customer_id"},
        "missing_field:customer_id",
    ),
    "null field": (lambda e: {**e, "terminal_id": None}, "missing_field:terminal_id"),
    "amount as text": (lambda e: {**e, "amount": "12.50 EUR"}, "wrong_type:amount"),
    "amount as bool": (lambda e: {**e, "amount": True}, "wrong_type:amount"),
    "customer as text": (lambda e: {**e, "customer_id": "7"}, "wrong_type:customer_id"),
    "customer as float": (lambda e: {**e, "customer_id": 7.5}, "wrong_type:customer_id"),
    "id not a string": (lambda e: {**e, "tx_id": 123}, "wrong_type:tx_id"),
    "empty id": (lambda e: {**e, "tx_id": " "}, "wrong_type:tx_id"),
    "NaN amount": (lambda e: {**e, "amount": math.nan}, "not_finite:amount"),
    "infinite amount": (lambda e: {**e, "amount": math.inf}, "not_finite:amount"),
    "negative amount": (lambda e: {**e, "amount": -3.0}, "negative_amount:amount"),
    "terminal beyond int64": (lambda e: {**e, "terminal_id": 2**70}, "out_of_range:terminal_id"),
    "unparseable time": (lambda e: {**e, "tx_datetime": "yesterday noon"}, "wrong_type:tx_datetime"),
    "time as number": (lambda e: {**e, "tx_datetime": 1764800000}, "wrong_type:tx_datetime"),
    "future time": (
        lambda e: {**e, "tx_datetime": (datetime.now(UTC) + timedelta(days=2)).isoformat()},
        "future_time:tx_datetime",
    ),
    "event not an object": (lambda e: [e], "not_an_object"),
    "body not JSON": (lambda e: _gateway("{tx_id: oops"), "invalid_json"),
    "empty body": (lambda e: _gateway(None), "invalid_json"),
    "body a JSON list": (lambda e: _gateway(json.dumps([e])), "not_an_object"),
    "bad base64": (lambda e: _gateway("not base64!!", isBase64Encoded=True), "invalid_json"),
    "body too large": (lambda e: _gateway(json.dumps({**e, "note": "x" * 40_000})), "too_large"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_400_with_the_reason(lambda_env: None, history: dict[str, Any], case: str) -> None:
    make_event, reason = BAD_INPUTS[case]
    event = live_event(history)
    response = lambda_function.lambda_handler(make_event(event), None)
    assert response["statusCode"] == 400, response
    body = _body(response)
    assert body["status"] == "invalid"
    assert body["reason"] == reason
    assert body["message"]
    assert "Traceback" not in response["body"]
    assert history["db"]["scores"].find_one({"_id": event["tx_id"]}) is None


# ---------------------------------------------------------------- endpoint down / slow


@pytest.mark.parametrize(("fail_open", "decision"), [(True, "approve"), (False, "decline")])
def test_endpoint_down_answers_degraded(history: dict[str, Any], fail_open: bool, decision: str) -> None:
    scorer = make_scorer(history, dead_endpoint_url(), fail_open=fail_open, endpoint_max_attempts=2)
    event = live_event(history)
    started = time.monotonic()
    outcome = scorer.score_event(event)
    assert time.monotonic() - started < 3
    assert outcome.status == "degraded"
    assert outcome.decision == decision
    assert "connection failed" in outcome.reason
    assert "after 2 attempt(s)" in outcome.reason
    assert outcome.fraud_probability is None
    from fraud_retraining.scoring import handler_response

    response = handler_response(outcome)
    assert response["statusCode"] == 200
    assert response["headers"]["X-Fraud-Scoring-Degraded"] == "true"
    assert json.loads(response["body"])["message"].startswith("fail-open" if fail_open else "fail-closed")
    # Nothing recorded: the change-stream scorer (or a retry) scores it once the endpoint is back.
    assert history["db"]["scores"].find_one({"_id": event["tx_id"]}) is None


def test_slow_endpoint_times_out_with_bounded_retry(history: dict[str, Any], slow_endpoint_url: str) -> None:
    scorer = make_scorer(history, slow_endpoint_url, endpoint_timeout_s=0.2, endpoint_max_attempts=2)
    outcome = scorer.score_event(live_event(history))
    assert outcome.status == "degraded"
    assert "timed out" in outcome.reason
    assert "after 2 attempt(s)" in outcome.reason
    # Two 0.2 s attempts plus backoff, never the 2 s the server takes to answer.
    assert 400 <= outcome.timings_ms["endpoint"] < 1500


def test_mongodb_down_answers_degraded(history: dict[str, Any], endpoint_url: str) -> None:
    client: pymongo.MongoClient = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{free_port()}/?directConnection=true",
        serverSelectionTimeoutMS=200,
        tz_aware=True,
    )
    scorer = LiveScorer(
        client["nothing"], history["cfg"], ScoringSettings(fail_open=False), HttpEndpointClient(endpoint_url)
    )
    outcome = scorer.score_event(live_event(history))
    assert outcome.status == "degraded"
    assert outcome.decision == "decline"
    assert "history unavailable" in outcome.reason
    client.close()


def test_not_configured_is_a_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MONGO_URI", raising=False)
    monkeypatch.delenv("FRAUD_MONGO_SECRET_ID", raising=False)
    lambda_function.reset_clients()
    response = lambda_function.lambda_handler({"tx_id": "x"}, None)
    lambda_function.reset_clients()
    assert response["statusCode"] == 500
    assert json.loads(response["body"])["reason"] == "not_configured"
    assert "Traceback" not in response["body"]


# ---------------------------------------------------------------- idempotency and recording modes


def test_rescoring_the_same_transaction_is_idempotent(history: dict[str, Any], endpoint_url: str) -> None:
    event = live_event(history, amount=180.0)
    first = make_scorer(history, endpoint_url).score_event(event)
    # A retried invocation, even under another threshold, answers the decision already acted upon.
    second = make_scorer(history, endpoint_url, threshold=0.0).score_event(event)
    assert first.recorded == "new"
    assert second.recorded == "existing"
    assert second.fraud_probability == first.fraud_probability
    assert second.decision == first.decision
    assert second.threshold == 0.5
    assert history["db"]["scores"].count_documents({"_id": event["tx_id"]}) == 1


def test_score_on_the_transaction_document(history: dict[str, Any], endpoint_url: str) -> None:
    cfg: UseCaseConfig = history["cfg"]
    event = live_event(history)
    tx = validate_transaction(event, cfg)
    history["db"][cfg.mongo.collection].insert_one(dict(tx))
    scorer = make_scorer(history, endpoint_url, record_mode="document", score_field="fraud_score")
    first = scorer.score_event(event)
    again = scorer.score_event(event)
    stored = history["db"][cfg.mongo.collection].find_one({"tx_id": event["tx_id"]})
    assert first.recorded == "new"
    assert again.recorded == "existing"
    assert stored["fraud_score"]["fraud_probability"] == first.fraud_probability
    assert history["db"]["scores"].find_one({"_id": event["tx_id"]}) is None
    # Not written yet (the handler can run before the bank's insert): scored, not recorded.
    unknown = scorer.score_event(live_event(history))
    assert unknown.status == "scored"
    assert unknown.recorded == "missing"


def test_recording_off(history: dict[str, Any], endpoint_url: str) -> None:
    event = live_event(history)
    outcome = make_scorer(history, endpoint_url, record_mode="off").score_event(event)
    assert outcome.status == "scored"
    assert outcome.recorded == "off"
    assert history["db"]["scores"].find_one({"_id": event["tx_id"]}) is None


def test_settings_from_env_validate_their_values() -> None:
    settings = ScoringSettings.from_env(
        {
            "FRAUD_SCORING_FAIL_MODE": "closed",
            "FRAUD_SCORING_RECORD": "document",
            "FRAUD_SCORING_THRESHOLD": "0.3",
        }
    )
    assert (settings.fail_open, settings.record_mode, settings.threshold) == (False, "document", 0.3)
    with pytest.raises(ValueError, match="FAIL_MODE"):
        ScoringSettings.from_env({"FRAUD_SCORING_FAIL_MODE": "maybe"})
    with pytest.raises(ValueError, match="THRESHOLD"):
        ScoringSettings.from_env({"FRAUD_SCORING_THRESHOLD": "2"})


# ---------------------------------------------------------------- features: one definition


def _batch_features(history: dict[str, Any]) -> pd.DataFrame:
    """The stage's computation over the same data: every simulated transaction, with the label
    events known by the seeding instant."""
    cfg: UseCaseConfig = history["cfg"]
    f = cfg.fields
    frame = history["frame"]
    known = frame[frame[f.labeled_at] <= pd.Timestamp(history["as_of"])]
    labels = known[[f.id, f.label, f.labeled_at]]
    return compute_features(frame[[f.id, f.time, f.customer, f.terminal, f.amount]], labels, cfg)


def test_live_features_equal_batch_features(history: dict[str, Any]) -> None:
    cfg: UseCaseConfig = history["cfg"]
    f = cfg.fields
    batch = _batch_features(history).set_index(f.id)
    # Late in the stretch (full windows), and every one whose terminal had a known fraud.
    late = batch[pd.to_datetime(batch[f.time], utc=True) > history["as_of"] - timedelta(days=5)]
    risky = late[late["terminal_fraud_share_30d"] > 0]
    sample = pd.concat([risky.head(25), late.sample(25, random_state=1)])
    assert len(risky) >= 5
    collection = history["db"].get_collection(cfg.mongo.collection)
    frame = history["frame"].set_index(f.id)
    for tx_id, expected in sample.iterrows():
        row = frame.loc[tx_id]
        tx = validate_transaction(
            {
                f.id: tx_id,
                f.time: row[f.time].to_pydatetime(),
                f.customer: int(row[f.customer]),
                f.terminal: int(row[f.terminal]),
                f.amount: float(row[f.amount]),
            },
            cfg,
        )
        live = live_features(collection, tx, cfg)
        np.testing.assert_allclose(
            [live[c] for c in FEATURE_COLUMNS],
            expected[FEATURE_COLUMNS].to_numpy(dtype=float),
            rtol=1e-9,
            err_msg=tx_id,
        )


def test_batched_features_equal_one_by_one(history: dict[str, Any]) -> None:
    """The scorer's batch path (two queries for the whole batch) gives each transaction what
    the handler's path gives it alone, including transactions already stored."""
    cfg: UseCaseConfig = history["cfg"]
    f = cfg.fields
    frame = history["frame"]
    late = frame[frame[f.time] > pd.Timestamp(history["as_of"] - timedelta(days=3))]
    stored = [
        validate_transaction(
            {name: row[name] for name in (f.id, f.customer, f.terminal, f.amount)}
            | {f.time: row[f.time].to_pydatetime()},
            cfg,
        )
        for _, row in late.sample(30, random_state=2).iterrows()
    ]
    for tx in stored:
        tx[f.customer], tx[f.terminal] = int(tx[f.customer]), int(tx[f.terminal])
    fresh = [validate_transaction(live_event(history, amount=float(i)), cfg) for i in range(5)]
    batch = stored + fresh
    collection = history["db"].get_collection(cfg.mongo.collection)
    together = live_features_many(collection, batch, cfg)
    for tx, features in zip(batch, together, strict=True):
        alone = live_features(collection, tx, cfg)
        np.testing.assert_allclose(
            [features[c] for c in FEATURE_COLUMNS],
            [alone[c] for c in FEATURE_COLUMNS],
            rtol=1e-9,
            err_msg=tx[f.id],
        )


def test_history_respects_the_label_delay(history: dict[str, Any]) -> None:
    """A fraud label written after the transaction's time is not in its labels."""
    cfg: UseCaseConfig = history["cfg"]
    f = cfg.fields
    frame = history["frame"]
    frauds = frame[(frame[f.label] == 1) & (frame[f.labeled_at] <= pd.Timestamp(history["as_of"]))]
    fraud = frauds.iloc[len(frauds) // 2]
    # Score a transaction at the same terminal between the fraud and the moment it was labelled.
    t = fraud[f.time] + (fraud[f.labeled_at] - fraud[f.time]) / 2
    tx = {
        f.id: "probe",
        f.time: t.to_pydatetime(),
        f.customer: -1,
        f.terminal: int(fraud[f.terminal]),
        f.amount: 1.0,
    }
    rows, labels = fetch_history(history["db"][cfg.mongo.collection], tx, cfg)
    assert fraud[f.id] in set(rows[f.id])
    assert fraud[f.id] not in set(labels[f.id])
    assert (pd.to_datetime(labels[f.labeled_at], utc=True) <= t).all()


class _CommandCounter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_history_is_one_indexed_round_trip_per_entity(history: dict[str, Any], mongo_uri: str) -> None:
    cfg: UseCaseConfig = history["cfg"]
    f = cfg.fields
    counter = _CommandCounter()
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_uri, event_listeners=[counter], tz_aware=True)
    client.admin.command("ping")
    counter.commands.clear()
    collection = client[history["db"].name][cfg.mongo.collection]
    busy = history["frame"][f.terminal].value_counts()
    tx = validate_transaction(live_event(history, terminal_id=int(busy.index[0])), cfg)
    rows, _ = fetch_history(collection, tx, cfg)
    assert len(rows) > 101  # more than MongoDB's default first batch, still no getMore
    assert counter.commands == ["aggregate", "aggregate"]
    for entity in (f.customer, f.terminal):
        plan = client[history["db"].name].command(
            "explain",
            {"find": cfg.mongo.collection, "filter": {entity: tx[entity], f.time: {"$lt": tx[f.time]}}},
        )
        winning = json.dumps(plan["queryPlanner"]["winningPlan"], default=str)
        assert f'"indexName": "{entity}_{f.time}"' in winning
    client.close()


def test_history_drops_what_the_extract_quarantines(history: dict[str, Any]) -> None:
    cfg: UseCaseConfig = history["cfg"]
    f = cfg.fields
    collection = history["db"][cfg.mongo.collection]
    when = history["as_of"] - timedelta(hours=1)
    base = {f.time: when, f.customer: 987_654, f.terminal: 987_654, f.amount: 10.0}
    collection.insert_many(
        [
            {**base, f.id: "q-good"},
            {**base, f.id: "q-oversized", "note": "x" * (MAX_DOCUMENT_BYTES + 10)},
            {**base, f.id: "q-negative", f.amount: -1.0},
            {**base, f.id: "q-text", f.amount: "10 EUR"},
        ]
    )
    tx = validate_transaction(live_event(history, customer_id=987_654, terminal_id=987_654), cfg)
    rows, _ = fetch_history(collection, tx, cfg)
    assert list(rows[f.id]) == ["q-good"]


def test_document_size_cap_matches_the_extract() -> None:
    assert MAX_DOCUMENT_BYTES == extract.DEFAULT_MAX_DOCUMENT_BYTES


# ---------------------------------------------------------------- AWS mode


def test_sagemaker_mode_sends_the_same_payload(
    s3_endpoint_url: str, history: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """invoke_endpoint against moto's server: the response body is the serving contract's."""
    import boto3
    import httpx

    name = f"fraud-{uuid.uuid4().hex[:8]}"
    result = {
        "Body": json.dumps({"scores": [0.93], "model_version": "sm-7"}),
        "ContentType": "application/json",
    }
    httpx.post(f"{s3_endpoint_url}/moto-api/static/sagemaker/endpoint-results", json={"results": [result]})
    runtime = boto3.client(
        "sagemaker-runtime",
        endpoint_url=s3_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="local-stack",
        aws_secret_access_key="local-stack-not-a-secret",
    )
    client = SageMakerEndpointClient(name, client=runtime)
    scorer = LiveScorer(history["db"], history["cfg"], ScoringSettings(sagemaker_endpoint=name), client)
    outcome = scorer.score_event(live_event(history))
    assert outcome.status == "scored"
    assert outcome.fraud_probability == pytest.approx(0.93)
    assert outcome.decision == "decline"
    assert outcome.model_version == "sm-7"
