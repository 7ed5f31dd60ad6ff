"""Failure alerts: always a log line, plus a JSON webhook when one is configured.

No Airflow import: the callback receives the task context as a mapping, so the same code can
alert from the scoring side too.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)
WEBHOOK_ENV_VAR = "FRAUD_ALERT_WEBHOOK_URL"


def failure_summary(context: Mapping[str, Any]) -> dict[str, Any]:
    """The alert payload: which DAG, run, task and why. Never connection details."""
    ti = context.get("task_instance") or context.get("ti")
    dag_run = context.get("dag_run")
    exception = context.get("exception")
    return {
        "event": "task_failed",
        "dag_id": getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", None),
        "run_id": getattr(ti, "run_id", None) or getattr(dag_run, "run_id", None),
        "task_id": getattr(ti, "task_id", None),
        "try_number": getattr(ti, "try_number", None),
        "reason": f"{type(exception).__name__}: {exception}" if exception else "unknown",
    }


def alert_on_failure(context: Mapping[str, Any], webhook_url: str | None = None) -> dict[str, Any]:
    """`on_failure_callback`: log the failure, POST it to `webhook_url` or $FRAUD_ALERT_WEBHOOK_URL."""
    payload = failure_summary(context)
    log.error("ALERT retraining failure: %s", json.dumps(payload))
    url = webhook_url or os.environ.get(WEBHOOK_ENV_VAR)
    if url:
        request = urllib.request.Request(  # noqa: S310 - operator-configured webhook
            url,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310
                payload["webhook_status"] = resp.status
        except OSError as err:  # an alert must never raise out of the callback
            log.warning("alert webhook failed: %s", err)
            payload["webhook_status"] = f"error: {err}"
    return payload
