"""Failure alerts as an Airflow notifier: `on_failure_callback=RetrainingFailureNotifier()`.

A thin adapter over fraud_retraining.alerts (which never imports Airflow): a log line with the
DAG, run, task and reason always, and a JSON POST to $FRAUD_ALERT_WEBHOOK_URL (or the
notifier's `webhook_url`) when one is configured. A failing webhook never raises.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseNotifier

from fraud_retraining.alerts import alert_on_failure


class RetrainingFailureNotifier(BaseNotifier):
    template_fields = ("webhook_url",)

    def __init__(self, webhook_url: str | None = None) -> None:
        super().__init__()
        self.webhook_url = webhook_url

    def notify(self, context: Any) -> None:
        alert_on_failure(context, webhook_url=self.webhook_url or None)
