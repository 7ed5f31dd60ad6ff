"""Failure alerts: a log line always, a webhook POST when configured, never an exception."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pytest

from fraud_retraining.alerts import WEBHOOK_ENV_VAR, alert_on_failure


def _context() -> dict:
    ti = SimpleNamespace(
        dag_id="fraud_model_retraining", run_id="scheduled__2026-12-03", task_id="extract", try_number=3
    )
    return {"task_instance": ti, "exception": ValueError("cursor died")}


def test_alert_logs_the_run_task_and_reason(caplog: pytest.LogCaptureFixture, monkeypatch) -> None:
    monkeypatch.delenv(WEBHOOK_ENV_VAR, raising=False)
    with caplog.at_level(logging.ERROR):
        payload = alert_on_failure(_context())
    assert payload["task_id"] == "extract"
    assert payload["reason"] == "ValueError: cursor died"
    assert "scheduled__2026-12-03" in caplog.text
    assert "webhook_status" not in payload


@pytest.fixture
def webhook():
    """A real HTTP receiver on loopback; yields (url, received payloads)."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


def test_alert_posts_to_the_configured_webhook(monkeypatch, webhook) -> None:
    url, received = webhook
    monkeypatch.setenv(WEBHOOK_ENV_VAR, url)
    payload = alert_on_failure(_context())
    assert payload["webhook_status"] == 204
    assert received[0]["dag_id"] == "fraud_model_retraining"
    assert received[0]["reason"] == "ValueError: cursor died"


def test_dag_failure_notifier_logs_and_posts(
    monkeypatch, webhook, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    from fraud_retraining.notifier import RetrainingFailureNotifier

    url, received = webhook
    monkeypatch.delenv(WEBHOOK_ENV_VAR, raising=False)
    with caplog.at_level(logging.ERROR):
        RetrainingFailureNotifier(webhook_url=url)(_context())  # how Airflow calls a callback
    assert received == [
        {
            "event": "task_failed",
            "dag_id": "fraud_model_retraining",
            "run_id": "scheduled__2026-12-03",
            "task_id": "extract",
            "try_number": 3,
            "reason": "ValueError: cursor died",
        }
    ]
    # Once Airflow's logging is configured the line goes through structlog to stderr/stdout.
    assert "ALERT retraining failure" in caplog.text + "".join(capfd.readouterr())


def test_unreachable_webhook_never_raises(monkeypatch) -> None:
    import local_stack

    monkeypatch.setenv(WEBHOOK_ENV_VAR, f"http://127.0.0.1:{local_stack.free_port()}/nothing-listens")
    payload = alert_on_failure(_context())
    assert str(payload["webhook_status"]).startswith("error:")
