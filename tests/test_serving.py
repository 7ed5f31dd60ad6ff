"""Serving app: SageMaker container contract, bad payloads, admin auth, swap under load, rollback."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import lightgbm as lgb
import numpy as np
import pytest
import uvicorn
from starlette.testclient import TestClient

from fraud_retraining import model_artifact
from fraud_retraining.serving import SMOKE_SAMPLE_FILE, create_app, parse_csv_scores

FEATURES = ["amount", "customer_mean_7d", "terminal_risk_7d"]
TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _train_model_dir(root: Path, version: str, seed: int, smoke_rows: list | None = None) -> Path:
    """A real LightGBM model artifact trained on synthetic data, with a stored smoke sample."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(600, len(FEATURES)))
    y = (X[:, 0] + 0.5 * X[:, 2] + rng.normal(scale=0.5, size=600) > 1.0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 7, "seed": seed},
        lgb.Dataset(X, label=y),
        num_boost_round=15,
    )
    files = model_artifact.serialize_model(booster, FEATURES, version)
    directory = model_artifact.write_model_dir(files, root / version)
    rows = smoke_rows if smoke_rows is not None else X[:5].tolist()
    (directory / SMOKE_SAMPLE_FILE).write_text(json.dumps({"instances": rows}))
    return directory


@pytest.fixture
def model_dirs(tmp_path: Path) -> dict[str, Path]:
    return {v: _train_model_dir(tmp_path, v, seed) for v, seed in (("v1", 1), ("v2", 2))}


@pytest.fixture
def client(model_dirs: dict[str, Path]) -> TestClient:
    app = create_app(initial_source=str(model_dirs["v1"]), admin_token=TOKEN, max_body_bytes=20_000)
    return TestClient(app)


def _floor_scores(model_dir: Path, rows: list[list[float]]) -> np.ndarray:
    return model_artifact.load_model(model_dir).predict_proba(np.asarray(rows, dtype=np.float64))


ROWS = [[250.0, 40.0, 0.1], [12.5, 30.0, 0.0], [-1.0, 2.0, 0.9]]


def test_ping_reports_the_loaded_model(client: TestClient) -> None:
    response = client.get("/ping")
    assert response.status_code == 200
    assert response.json()["model_version"] == "v1"


def test_ping_is_503_without_a_model() -> None:
    response = TestClient(create_app(admin_token=TOKEN)).get("/ping")
    assert response.status_code == 503
    assert "no model" in response.json()["reason"]


def test_csv_without_header_scores_like_the_model(client: TestClient, model_dirs: dict[str, Path]) -> None:
    body = "\n".join(",".join(str(v) for v in row) for row in ROWS)
    response = client.post("/invocations", content=body, headers={"Content-Type": "text/csv"})
    assert response.status_code == 200
    assert response.json()["model_version"] == "v1"
    np.testing.assert_allclose(response.json()["scores"], _floor_scores(model_dirs["v1"], ROWS))


def test_csv_header_reorders_columns_by_name(client: TestClient, model_dirs: dict[str, Path]) -> None:
    order = [2, 0, 1]
    header = ",".join(FEATURES[i] for i in order)
    body = header + "\n" + "\n".join(",".join(str(row[i]) for i in order) for row in ROWS)
    response = client.post("/invocations", content=body, headers={"Content-Type": "text/csv"})
    assert response.status_code == 200
    np.testing.assert_allclose(response.json()["scores"], _floor_scores(model_dirs["v1"], ROWS))


def test_json_instances_and_records_agree(client: TestClient, model_dirs: dict[str, Path]) -> None:
    expected = _floor_scores(model_dirs["v1"], ROWS)
    instances = client.post("/invocations", json={"instances": ROWS})
    records = client.post("/invocations", json=[dict(zip(FEATURES, row, strict=True)) for row in ROWS])
    assert instances.status_code == records.status_code == 200
    np.testing.assert_allclose(instances.json()["scores"], expected)
    np.testing.assert_allclose(records.json()["scores"], expected)


def test_named_features_the_model_does_not_use_are_ignored(
    client: TestClient, model_dirs: dict[str, Path]
) -> None:
    """A caller on a newer feature catalogue keeps being served by an older champion."""
    expected = _floor_scores(model_dirs["v1"], ROWS)
    records = [{**dict(zip(FEATURES, row, strict=True)), "newer_feature": 7.0} for row in ROWS]
    response = client.post("/invocations", json={"instances": records})
    assert response.status_code == 200
    np.testing.assert_allclose(response.json()["scores"], expected)
    header = ",".join(["newer_feature", *FEATURES])
    body = header + "\n" + "\n".join(",".join(str(v) for v in [7.0, *row]) for row in ROWS)
    response = client.post("/invocations", content=body, headers={"Content-Type": "text/csv"})
    assert response.status_code == 200
    np.testing.assert_allclose(response.json()["scores"], expected)


def test_accept_csv_returns_one_score_per_line(client: TestClient, model_dirs: dict[str, Path]) -> None:
    response = client.post("/invocations", json={"instances": ROWS}, headers={"Accept": "text/csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    np.testing.assert_allclose(parse_csv_scores(response.text), _floor_scores(model_dirs["v1"], ROWS))


@pytest.mark.parametrize(
    ("content", "content_type", "status", "reason"),
    [
        ("1,2\n3,4", "text/csv", 400, "feature columns"),
        ("1,2,3\n4,abc,6", "text/csv", 400, "non-numeric"),
        ("", "text/csv", 400, "empty"),
        ("   ", "application/json", 400, "empty"),
        ("x" * 20_001, "text/csv", 413, "larger"),
        ("1,2,3", "application/xml", 415, "content type"),
        ("amount,bogus,terminal_risk_7d\n1,2,3", "text/csv", 400, "lacks features"),
        (json.dumps([{"amount": 1, "bogus": 2, "terminal_risk_7d": 3}]), "application/json", 400, "lacks"),
        (json.dumps({"instances": [[1, "x", 3]]}), "application/json", 400, "non-numeric"),
        (json.dumps({"instances": [[1, 2]]}), "application/json", 400, "feature columns"),
        ("{not json", "application/json", 400, "invalid JSON"),
    ],
)
def test_bad_payload_is_4xx_with_reason_and_server_keeps_serving(
    client: TestClient, content: str, content_type: str, status: int, reason: str
) -> None:
    response = client.post("/invocations", content=content, headers={"Content-Type": content_type})
    assert response.status_code == status
    assert reason in response.json()["error"]
    assert client.post("/invocations", json={"instances": ROWS}).status_code == 200


def test_admin_requires_the_bearer_token(client: TestClient, model_dirs: dict[str, Path]) -> None:
    spec = {"version": "v2", "source": str(model_dirs["v2"])}
    assert client.post("/admin/deploy", json=spec).status_code == 401
    wrong = client.post("/admin/deploy", json=spec, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert TOKEN not in wrong.text
    assert client.get("/admin/status").status_code == 401
    assert client.get("/ping").json()["model_version"] == "v1"


def test_admin_is_closed_when_no_token_is_configured(model_dirs: dict[str, Path], monkeypatch) -> None:
    monkeypatch.delenv("FRAUD_ENDPOINT_ADMIN_TOKEN", raising=False)
    app_client = TestClient(create_app(initial_source=str(model_dirs["v1"])))
    assert app_client.get("/admin/status", headers={"Authorization": "Bearer "}).status_code in (401, 403)
    assert app_client.get("/admin/status", headers={"Authorization": "Bearer x"}).status_code == 403


def test_deploy_then_rollback(client: TestClient, model_dirs: dict[str, Path]) -> None:
    deployed = client.post(
        "/admin/deploy", json={"version": "v2", "source": str(model_dirs["v2"])}, headers=AUTH
    )
    assert deployed.status_code == 200, deployed.text
    assert deployed.json() == {"current_version": "v2", "previous_version": "v1"}
    scored = client.post("/invocations", json={"instances": ROWS}).json()
    assert scored["model_version"] == "v2"
    np.testing.assert_allclose(scored["scores"], _floor_scores(model_dirs["v2"], ROWS))

    rolled = client.post("/admin/rollback", headers=AUTH)
    assert rolled.json() == {"current_version": "v1", "previous_version": "v2"}
    assert client.post("/invocations", json={"instances": ROWS}).json()["model_version"] == "v1"


def test_rollback_without_previous_is_409(client: TestClient) -> None:
    assert client.post("/admin/rollback", headers=AUTH).status_code == 409


def test_failed_load_keeps_the_old_model(client: TestClient, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.json").write_text("{truncated")
    response = client.post("/admin/deploy", json={"version": "v9", "source": str(broken)}, headers=AUTH)
    assert response.status_code == 422
    assert "failed to load" in response.json()["error"]
    assert client.get("/ping").json()["model_version"] == "v1"
    assert client.get("/admin/status", headers=AUTH).json()["previous_version"] is None


def test_failed_smoke_test_keeps_the_old_model(client: TestClient, tmp_path: Path) -> None:
    # A model whose stored sample has the wrong width cannot be smoke-tested.
    bad = _train_model_dir(tmp_path, "v3", 3, smoke_rows=[[1.0, 2.0]])
    response = client.post("/admin/deploy", json={"version": "v3", "source": str(bad)}, headers=AUTH)
    assert response.status_code == 422
    assert "smoke" in response.json()["error"]
    assert client.get("/ping").json()["model_version"] == "v1"
    # Sample rows passed in the request replace the stored (broken) sample.
    fixed = client.post(
        "/admin/deploy", json={"version": "v3", "source": str(bad), "sample_rows": ROWS}, headers=AUTH
    )
    assert fixed.status_code == 200
    assert client.get("/ping").json()["model_version"] == "v3"


def test_smoke_test_rejects_scores_outside_unit_interval(model_dirs: dict[str, Path]) -> None:
    class OutOfRange:
        feature_names = FEATURES
        version = "bad"

        def __init__(self, real) -> None:
            self._real = real

        def predict_proba(self, X: np.ndarray) -> np.ndarray:
            return self._real.predict_proba(X) * 3 + 1  # real scores, wrong calibration

    def loader(source: str):
        model = model_artifact.load_model(source)
        return OutOfRange(model) if source.endswith("v2") else model

    app_client = TestClient(
        create_app(model_loader=loader, initial_source=str(model_dirs["v1"]), admin_token=TOKEN)
    )
    response = app_client.post(
        "/admin/deploy", json={"version": "bad", "source": str(model_dirs["v2"])}, headers=AUTH
    )
    assert response.status_code == 422
    assert "outside [0, 1]" in response.json()["error"]
    assert app_client.get("/ping").json()["model_version"] == "v1"


def test_deploy_refuses_a_version_mismatch(client: TestClient, model_dirs: dict[str, Path]) -> None:
    response = client.post(
        "/admin/deploy", json={"version": "v7", "source": str(model_dirs["v2"])}, headers=AUTH
    )
    assert response.status_code == 422
    assert client.get("/ping").json()["model_version"] == "v1"


def test_metrics_text_parses(client: TestClient) -> None:
    client.post("/invocations", json={"instances": ROWS})
    client.post("/invocations", content="1,2", headers={"Content-Type": "text/csv"})
    text = client.get("/metrics").text
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    assert samples['fraud_endpoint_requests_total{route="/invocations",status="200"}'] == 1
    assert samples['fraud_endpoint_errors_total{route="/invocations",status="400"}'] == 1
    assert (
        samples['fraud_endpoint_request_seconds_bucket{le="+Inf"}']
        == samples["fraud_endpoint_request_seconds_count"]
    )
    assert samples['fraud_endpoint_model_info{version="v1"}'] == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_swap_under_concurrent_load_fails_no_request(model_dirs: dict[str, Path]) -> None:
    port = _free_port()
    app = create_app(initial_source=str(model_dirs["v1"]), admin_token=TOKEN)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started

    stop = threading.Event()
    failures: list[str] = []
    versions_seen: set[str] = set()
    counts = [0]

    def hammer() -> None:
        with httpx.Client(base_url=base, timeout=5) as http:
            while not stop.is_set():
                response = http.post("/invocations", json={"instances": ROWS})
                counts[0] += 1
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                else:
                    versions_seen.add(response.json()["model_version"])

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    try:
        for worker in workers:
            worker.start()
        with httpx.Client(base_url=base, timeout=10, headers=AUTH) as admin:
            for version in ("v2", "v1", "v2"):
                spec = {"version": version, "source": str(model_dirs[version])}
                assert admin.post("/admin/deploy", json=spec).status_code == 200
                time.sleep(0.1)
            assert admin.post("/admin/rollback").json()["current_version"] == "v1"
            time.sleep(0.1)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        server.should_exit = True
        thread.join(timeout=10)
    assert failures == []
    assert versions_seen == {"v1", "v2"}
    assert counts[0] > 20
