"""The model-view plugin: its FastAPI app against the real MongoDB and S3 servers, mounted the way
the API server mounts it, with Airflow's simple auth manager verifying real JWTs."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import local_stack
from fraud_retraining.config import load_use_case
from fraud_retraining.layout import safe_run_key
from fraud_retraining.links import ModelVersionLink, RunReportLink
from fraud_retraining.registry import ModelRegistry

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, tzinfo=UTC)
V1, V2, V3 = "20261120T000000Z-aaaa1111", "20261127T000000Z-bbbb2222", "20261204T000000Z-cccc3333"
RUN_ID = "scheduled__2026-12-04T00:00:00+00:00"


@pytest.fixture(scope="module")
def auth_manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Airflow's simple auth manager with a per-test-run JWT secret and its own metadata DB.

    Token validation also checks the revoked-token table, so a throwaway SQLite database holds
    that table; the ORM is pointed back at the session's database afterwards.
    """
    from airflow import settings
    from airflow.api_fastapi.app import create_auth_manager, purge_cached_app
    from airflow.api_fastapi.auth.managers.base_auth_manager import BaseAuthManager
    from airflow.models.revoked_token import RevokedToken

    db_path = tmp_path_factory.mktemp("airflow-db") / "airflow.db"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(64))
        patch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{db_path}")
        patch.setenv(
            "AIRFLOW__CORE__AUTH_MANAGER",
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        )
        BaseAuthManager._get_token_signer.cache_clear()
        BaseAuthManager._get_token_validator.cache_clear()
        settings.configure_vars()
        settings.configure_orm()
        RevokedToken.metadata.create_all(settings.engine, tables=[RevokedToken.__table__])
        purge_cached_app()
        yield create_auth_manager()
        purge_cached_app()
        BaseAuthManager._get_token_signer.cache_clear()
        BaseAuthManager._get_token_validator.cache_clear()
    settings.configure_vars()
    settings.configure_orm()


def _token(auth_manager: Any, username: str, role: str) -> str:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return auth_manager.generate_jwt(SimpleAuthManagerUser(username=username, role=role))


@pytest.fixture
def stack(
    monkeypatch: pytest.MonkeyPatch,
    airflow_connections: dict[str, str],
    mongo_db,
    mongo_client,
    s3_client,
    s3_bucket: str,
    use_case_config_file,
) -> SimpleNamespace:
    """A use case on a fresh database and bucket, with a registry that has a history."""
    path = use_case_config_file(database=mongo_db.name, bucket=s3_bucket)
    monkeypatch.setenv("FRAUD_USE_CASE_CONFIG", path)
    # No scoring endpoint unless a test starts one: a rollback then changes the registry only.
    monkeypatch.delenv("FRAUD_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("FRAUD_ENDPOINT_ADMIN_TOKEN", raising=False)
    cfg = load_use_case(path)
    registry = ModelRegistry.for_use_case(cfg, mongo_client)
    for index, (version, ap) in enumerate(((V1, 0.61), (V2, 0.68), (V3, 0.52))):
        registry.register(
            version,
            engine="local",
            lineage={"dag_id": "fraud_model_retraining", "run_id": f"scheduled__{version[:8]}", "rows": {}},
            metrics={
                "valid": {"average_precision": ap + 0.01},
                "test": {"average_precision": ap, "auc_roc": 0.9 + index / 100, "card_precision_at_100": 0.2},
            },
            artifact={"bucket": s3_bucket, "prefix": f"models/card-fraud/{version}/", "keys": []},
            registered_at=T0 + timedelta(days=7 * index),
        )
    registry.promote(
        V1, expected_champion=None, reason="first model", actor="gate", at=T0 + timedelta(hours=1)
    )
    registry.record_gate(V2, _decision(V2, V1, passed=True, at=T0 + timedelta(days=7, hours=1)))
    registry.promote(
        V2, expected_champion=V1, reason="gate passed", actor="gate", at=T0 + timedelta(days=7, hours=2)
    )
    registry.record_gate(V3, _decision(V3, V2, passed=False, at=T0 + timedelta(days=14, hours=1)))

    import fraud_retraining_ui

    parent = FastAPI()
    # The API server mounts plugin apps exactly like this (airflow.api_fastapi.app.init_plugins).
    for entry in fraud_retraining_ui.FraudModelsPlugin.fastapi_apps:
        parent.mount(entry["url_prefix"], entry["app"])
    return SimpleNamespace(cfg=cfg, registry=registry, app=parent, s3=s3_client, bucket=s3_bucket)


def _decision(version: str, champion: str, *, passed: bool, at: datetime) -> dict[str, Any]:
    detail = "average_precision 0.5200 vs champion 0.6800 (tolerance 0.0100, so at least 0.6700)"
    rules = [
        {
            "name": "floor:average_precision",
            "passed": True,
            "observed": 0.6,
            "threshold": 0.3,
            "detail": "ok",
        },
        {
            "name": "no_regression:average_precision",
            "passed": passed,
            "observed": 0.52,
            "threshold": 0.67,
            "detail": detail,
        },
    ]
    return {
        "passed": passed,
        "reasons": ["all floors hold and no regression against the champion"] if passed else [detail],
        "rules": rules,
        "challenger": {"average_precision": 0.52},
        "champion": {"average_precision": 0.68},
        "challenger_version": version,
        "champion_version": champion,
        "holdout_rows": 1234,
        "decided_at": at.isoformat(),
    }


def _client(stack: SimpleNamespace, token: str | None = None, *, cookie: bool = False) -> TestClient:
    client = TestClient(stack.app, follow_redirects=False)
    if token and cookie:
        client.cookies.set("_token", token)
    elif token:
        client.headers["Authorization"] = f"Bearer {token}"
    return client


def test_every_route_refuses_callers_without_a_valid_airflow_token(
    stack: SimpleNamespace, auth_manager: Any
) -> None:
    anonymous = _client(stack)
    for path in ("versions", "champion", "history", "gate-decisions", f"versions/{V1}"):
        response = anonymous.get(f"/fraud-models/api/{path}")
        assert response.status_code == 401, (path, response.text)
    assert anonymous.post("/fraud-models/api/rollback", json={"reason": "x"}).status_code == 401
    # A forged token (signed with another secret) is refused, not just a missing one.
    forged = _client(stack, "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl")
    assert forged.get("/fraud-models/api/champion").status_code == 403
    # A browser without a session is sent to Airflow's login page and brought back afterwards.
    for path in ("/fraud-models/", f"/fraud-models/versions/{V1}", f"/fraud-models/reports/{RUN_ID}"):
        page = anonymous.get(path)
        assert page.status_code == 303, path
        assert page.headers["location"].startswith("/auth/login"), page.headers["location"]
        assert "next=" in page.headers["location"]
    # Nothing changed.
    assert stack.registry.champion_version() == V2


def test_api_returns_the_registry_with_a_bearer_token(stack: SimpleNamespace, auth_manager: Any) -> None:
    client = _client(stack, _token(auth_manager, "viewer1", "viewer"))

    versions = client.get("/fraud-models/api/versions").json()
    assert versions["model_name"] == "card-fraud"
    assert [v["version"] for v in versions["versions"]] == [V3, V2, V1]
    by_version = {v["version"]: v for v in versions["versions"]}
    assert by_version[V2]["is_champion"] and by_version[V1]["has_served"] and not by_version[V3]["has_served"]
    assert by_version[V2]["metrics"]["average_precision"] == pytest.approx(0.68)
    assert by_version[V3]["gate"]["passed"] is False
    assert by_version[V1]["registered_at"] == "2026-11-20T00:00:00Z"

    champion = client.get("/fraud-models/api/champion").json()
    assert champion["champion"]["version"] == V2
    assert champion["champion"]["generation"] == 2
    assert champion["rollback_target"] == V1

    history = client.get("/fraud-models/api/history").json()["history"]
    assert [(h["version"], h["served_until"]) for h in history] == [
        (V2, None),
        (V1, "2026-11-27T02:00:00Z"),
    ]

    decisions = client.get("/fraud-models/api/gate-decisions").json()["gate_decisions"]
    assert [(d["version"], d["passed"]) for d in decisions] == [(V3, False), (V2, True)]
    assert decisions[0]["rules"][1]["threshold"] == pytest.approx(0.67)

    detail = client.get(f"/fraud-models/api/versions/{V1}").json()
    assert detail["all_metrics"]["valid"]["average_precision"] == pytest.approx(0.62)
    assert detail["served"][0]["reason"] == "first model"
    assert client.get("/fraud-models/api/versions/nope").status_code == 404


def test_page_with_the_ui_session_cookie_shows_champion_and_last_gate_decision(
    stack: SimpleNamespace, auth_manager: Any
) -> None:
    client = _client(stack, _token(auth_manager, "viewer1", "viewer"), cookie=True)
    page = client.get("/fraud-models/")
    assert page.status_code == 200
    html = page.text
    assert f'<strong id="champion-version"><a href="versions/{V2}">{V2}</a></strong>' in html
    assert 'id="last-gate-outcome">FAILED</span>' in html
    assert f'id="last-gate-version">{V3}</a>' in html
    assert "<svg" in html and "average_precision" in html
    # A viewer sees what a rollback would restore but gets no button.
    assert 'id="rollback-form"' not in html
    assert "needs edit rights" in html
    version_page = client.get(f"/fraud-models/versions/{V3}")
    assert version_page.status_code == 200 and "no_regression:average_precision" in version_page.text


def test_rollback_needs_edit_rights_the_current_champion_and_a_reason(
    stack: SimpleNamespace, auth_manager: Any
) -> None:
    viewer = _client(stack, _token(auth_manager, "viewer1", "viewer"))
    body = {"reason": "false positives spiked", "expected_champion": V2}
    assert viewer.post("/fraud-models/api/rollback", json=body).status_code == 403

    operator = _client(stack, _token(auth_manager, "ops1", "op"))
    stale = operator.post("/fraud-models/api/rollback", json={**body, "expected_champion": V1})
    assert stale.status_code == 409 and "reload" in stale.json()["detail"]
    assert operator.post("/fraud-models/api/rollback", json={"reason": ""}).status_code == 422
    assert stack.registry.champion_version() == V2

    done = operator.post("/fraud-models/api/rollback", json=body)
    assert done.status_code == 200, done.text
    assert done.json() == {"model_name": "card-fraud", "champion": V1, "previous": V2, "endpoint": None}
    last = stack.registry.history()[-1]
    assert (last["action"], last["version"], last["actor"], last["reason"]) == (
        "rollback",
        V1,
        "ops1",
        "false positives spiked",
    )
    # Nothing served before V1: a second rollback has nowhere to go.
    again = operator.post("/fraud-models/api/rollback", json={"reason": "again"})
    assert again.status_code == 409 and "no previous champion" in again.json()["detail"]


def test_rollback_form_in_the_browser_session_and_cross_site_posts(
    stack: SimpleNamespace, auth_manager: Any
) -> None:
    admin = _client(stack, _token(auth_manager, "admin", "admin"), cookie=True)
    page = admin.get("/fraud-models/").text
    assert 'id="rollback-form"' in page
    form = {"reason": "<script>alert(1)</script>", "expected_champion": V2}

    # A page on another site posting with the user's cookie is refused.
    forged = admin.post("/fraud-models/rollback", data=form, headers={"Origin": "https://evil.example"})
    assert forged.status_code == 403
    assert stack.registry.champion_version() == V2

    posted = admin.post("/fraud-models/rollback", data=form, headers={"Origin": "http://testserver"})
    assert posted.status_code == 303
    target = posted.headers["location"]
    assert target == "./?done=rollback"
    after = admin.get("/fraud-models/?done=rollback").text
    assert f"Rolled back: {V1} is the champion again (registry only" in after
    # The reason is shown as text, never as markup.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in after and "<script>alert" not in after

    # Re-posting the same form (champion is V1 now) is refused with the reason, not applied twice.
    repeated = admin.post("/fraud-models/rollback", data=form, headers={"Origin": "http://testserver"})
    assert repeated.status_code == 409 and "reload" in repeated.text


def test_report_route_streams_the_run_report_from_s3(stack: SimpleNamespace, auth_manager: Any) -> None:
    client = _client(stack, _token(auth_manager, "viewer1", "viewer"), cookie=True)
    url = f"/fraud-models/reports/{quote(RUN_ID, safe='')}"
    missing = client.get(url)
    assert missing.status_code == 404 and "No report" in missing.text

    key = f"reports/{safe_run_key(RUN_ID)}/report.html"
    report = "<html><body><h1>Run report</h1>" + "x" * 200_000 + "</body></html>"
    stack.s3.put_object(Bucket=stack.bucket, Key=key, Body=report.encode(), ContentType="text/html")
    found = client.get(url)
    assert found.status_code == 200
    assert found.text == report
    assert found.headers["content-type"].startswith("text/html")
    assert "sandbox" in found.headers["content-security-policy"]


def test_plugin_registers_app_nav_view_and_links() -> None:
    import fraud_retraining_ui

    plugin = fraud_retraining_ui.FraudModelsPlugin
    assert plugin.fastapi_apps[0]["url_prefix"] == "/fraud-models"
    view = plugin.external_views[0]
    assert (view["destination"], view["href"], view["url_route"]) == ("nav", "fraud-models/", "fraud-models")
    assert [link.name for link in plugin.operator_extra_links] == ["Run report", "Model version"]


def test_links_point_at_the_plugin_routes() -> None:
    ti = SimpleNamespace(
        dag_id="fraud_model_retraining", task_id="automl_training", run_id=RUN_ID, map_index=-1
    )
    assert RunReportLink().get_link(SimpleNamespace(), ti_key=ti) == (
        "/fraud-models/reports/scheduled__2026-12-04T00%3A00%3A00%2B00%3A00"
    )
    # The gate and the endpoint update name their version in a (rendered) argument.
    gate = SimpleNamespace(challenger_version=V2)
    assert ModelVersionLink().get_link(gate, ti_key=ti) == f"/fraud-models/versions/{V2}"
    assert (
        ModelVersionLink().get_link(SimpleNamespace(version=V1), ti_key=ti) == f"/fraud-models/versions/{V1}"
    )
    # The train task learns its version while running and returns it: the link reads that result.
    pulled: list[dict[str, Any]] = []

    def xcom_pull(**kwargs: Any) -> dict[str, Any]:
        pulled.append(kwargs)
        return {"version": V3, "engine": "local"}

    running = SimpleNamespace(**vars(ti), xcom_pull=xcom_pull)
    assert ModelVersionLink().get_link(SimpleNamespace(), ti_key=running) == f"/fraud-models/versions/{V3}"
    assert pulled == [{"task_ids": "automl_training", "key": "return_value"}]
    # No version known (the task failed before registering): an empty link, shown disabled.
    unrendered = SimpleNamespace(challenger_version="{{ ti.xcom_pull('x') }}")
    assert ModelVersionLink().get_link(unrendered, ti_key=ti) == ""


FEATURES = ["amount", "customer_mean_7d", "terminal_risk_7d"]
ENDPOINT_TOKEN = "ui-test-endpoint-token"


def _model_dir(root: Path, version: str, seed: int) -> Path:
    import lightgbm as lgb
    import numpy as np

    from fraud_retraining import model_artifact
    from fraud_retraining.serving import SMOKE_SAMPLE_FILE

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(300, len(FEATURES)))
    y = (X[:, 0] > 0.8).astype(int)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 5}, lgb.Dataset(X, label=y), 5)
    directory = model_artifact.write_model_dir(
        model_artifact.serialize_model(booster, FEATURES, version), root / version
    )
    (directory / SMOKE_SAMPLE_FILE).write_text(json.dumps({"instances": X[:3].tolist()}))
    return directory


@pytest.fixture
def start_endpoint() -> Iterator[Any]:
    """Factory: the scoring endpoint over loopback HTTP serving `initial`, then `then` if given."""
    import uvicorn

    from fraud_retraining.endpoint_deploy import deploy_local
    from fraud_retraining.serving import create_app

    servers: list[tuple[Any, threading.Thread]] = []

    def start(initial: Path, then: tuple[str, Path] | None = None) -> str:
        port = local_stack.free_port()
        app = create_app(initial_source=str(initial), admin_token=ENDPOINT_TOKEN)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        url = f"http://127.0.0.1:{port}"
        if then is not None:
            deploy_local(url, ENDPOINT_TOKEN, then[0], str(then[1]))
        return url

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


def _serving(url: str) -> str:
    import httpx

    return httpx.get(f"{url}/ping", timeout=10).json()["model_version"]


def test_rollback_switches_the_configured_local_endpoint_back(
    stack: SimpleNamespace,
    auth_manager: Any,
    start_endpoint: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The endpoint serves V2 and kept V1, the model V2 replaced: the rollback switches back.
    local_endpoint = start_endpoint(_model_dir(tmp_path, V1, 1), then=(V2, _model_dir(tmp_path, V2, 2)))
    monkeypatch.setenv("FRAUD_ENDPOINT_URL", local_endpoint)
    monkeypatch.setenv("FRAUD_ENDPOINT_ADMIN_TOKEN", ENDPOINT_TOKEN)
    assert _serving(local_endpoint) == V2
    admin = _client(stack, _token(auth_manager, "admin", "admin"), cookie=True)
    posted = admin.post(
        "/fraud-models/rollback",
        data={"reason": "precision dropped", "expected_champion": V2},
        headers={"Origin": "http://testserver"},
    )
    assert posted.status_code == 303 and posted.headers["location"] == "./?done=rollback-endpoint"
    assert stack.registry.champion_version() == V1
    assert _serving(local_endpoint) == V1
    assert "serves on the scoring endpoint" in admin.get("/fraud-models/?done=rollback-endpoint").text


def test_rollback_reports_an_endpoint_that_could_not_follow(
    stack: SimpleNamespace, auth_manager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing listens there: the registry still rolls back, and the answer says the endpoint did not.
    monkeypatch.setenv("FRAUD_ENDPOINT_URL", f"http://127.0.0.1:{local_stack.free_port()}")
    monkeypatch.setenv("FRAUD_ENDPOINT_ADMIN_TOKEN", ENDPOINT_TOKEN)
    operator = _client(stack, _token(auth_manager, "ops1", "op"))
    done = operator.post("/fraud-models/api/rollback", json={"reason": "drift", "expected_champion": V2})
    assert done.status_code == 200
    body = done.json()
    assert body["champion"] == V1 and body["endpoint"]["synced"] is False
    assert "ConnectError" in body["endpoint"]["error"] and ENDPOINT_TOKEN not in body["endpoint"]["error"]

    admin = _client(stack, _token(auth_manager, "admin", "admin"), cookie=True)
    stack.registry.promote(V2, expected_champion=V1, reason="re-promote for the form", actor="test")
    page = admin.post(
        "/fraud-models/rollback",
        data={"reason": "again", "expected_champion": V2},
        headers={"Origin": "http://testserver"},
    )
    assert page.status_code == 502 and "did NOT switch" in page.text


def test_rollback_does_not_guess_when_the_endpoint_no_longer_holds_the_champion(
    stack: SimpleNamespace,
    auth_manager: Any,
    start_endpoint: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # E.g. the endpoint restarted with V2 only: V1 needs a full deploy with a holdout smoke test.
    url = start_endpoint(_model_dir(tmp_path, V2, 2))
    monkeypatch.setenv("FRAUD_ENDPOINT_URL", url)
    monkeypatch.setenv("FRAUD_ENDPOINT_ADMIN_TOKEN", ENDPOINT_TOKEN)
    operator = _client(stack, _token(auth_manager, "ops1", "op"))
    done = operator.post("/fraud-models/api/rollback", json={"reason": "restore", "expected_champion": V2})
    assert done.status_code == 200, done.text
    endpoint = done.json()["endpoint"]
    assert endpoint["synced"] is False and "endpoint update task" in endpoint["error"]
    assert stack.registry.champion_version() == V1
    assert _serving(url) == V2
