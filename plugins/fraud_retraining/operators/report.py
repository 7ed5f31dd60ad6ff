"""`run_report`: write the run's self-contained HTML report to S3 at the end of every DAG run.

Meant to run after everything else, also when something upstream failed (trigger rule
"all_done", the default here): the upstream summaries arrive as JSON strings rendered from XCom,
and a task that did not run renders as "null", which the report shows as "did not run".
"""

from __future__ import annotations

import ast
import json
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator, Context

_EMPTY = {"", "none", "null"}


def parse_summary(value: Any) -> dict[str, Any] | str | None:
    """An upstream task's XCom as rendered into a template field.

    `{{ ti.xcom_pull(...) | tojson }}` gives JSON; without `tojson` Jinja gives the Python repr,
    so that is accepted too. A plain sentence ("skipped: backfill") stays a string.
    """
    if value is None or isinstance(value, dict):
        return value
    text = str(value).strip()
    if text.lower() in _EMPTY:
        return None
    try:
        parsed = json.loads(text)
    except ValueError:
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    if parsed is None or isinstance(parsed, dict | str):
        return parsed
    raise ValueError(f"expected a JSON object or a sentence, got {type(parsed).__name__}: {text[:200]}")


def _optional_text(value: Any) -> str:
    """A rendered template value; "None"/"null" (an upstream task that returned nothing) is empty."""
    text = "" if value is None else str(value).strip()
    return "" if text.lower() in _EMPTY else text


def _optional_time(value: Any) -> datetime | None:
    from fraud_retraining.timeutil import as_utc

    text = _optional_text(value)
    if not text:
        return None
    return as_utc(value if isinstance(value, datetime) else text)


class RunReportOperator(BaseOperator):
    """Build and publish the run report; return {"key", "bucket", "bytes", "sections", "decision", ...}.

    `gate_summary` and `deploy_summary` are the gate's and the endpoint update's XCom as JSON
    (None/"null": the task did not run); `deploy_summary` may also be a sentence such as
    "skipped: backfill". When the deployment did not run in a backfill, the report says so.
    """

    template_fields = (
        "use_case_config",
        "training_prefix",
        "challenger_version",
        "gate_summary",
        "deploy_summary",
        "run_key",
        "data_interval_start",
        "data_interval_end",
        "psi_threshold",
    )

    def __init__(
        self,
        *,
        use_case_config: str | None = None,
        training_prefix: str | None = None,
        challenger_version: str | None = None,
        gate_summary: str | dict[str, Any] | None = None,
        deploy_summary: str | dict[str, Any] | None = None,
        run_key: str = "{{ run_id }}",
        data_interval_start: str | None = "{{ data_interval_start }}",
        data_interval_end: str | None = "{{ data_interval_end }}",
        psi_threshold: float | str = 0.2,
        card_precision_k: int = 100,
        deploy_task_id: str | None = "endpoint_update",
        **kwargs: Any,
    ) -> None:
        # The report is most needed when something upstream failed.
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.use_case_config = use_case_config
        self.training_prefix = training_prefix
        self.challenger_version = challenger_version
        self.gate_summary = gate_summary
        self.deploy_summary = deploy_summary
        self.run_key = run_key
        self.data_interval_start = data_interval_start
        self.data_interval_end = data_interval_end
        self.psi_threshold = psi_threshold
        self.card_precision_k = card_precision_k
        self.deploy_task_id = deploy_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.providers.mongo.hooks.mongo import MongoHook

        from fraud_retraining.config import load_use_case
        from fraud_retraining.registry import ModelRegistry
        from fraud_retraining.report import publish_run_report

        cfg = load_use_case(self.use_case_config or None)
        dag_run = context.get("dag_run")
        run_id = str(context.get("run_id") or getattr(dag_run, "run_id", "") or self.run_key)
        dag_id = context["dag"].dag_id if context.get("dag") is not None else context["ti"].dag_id
        end = _optional_time(self.data_interval_end)
        start = _optional_time(self.data_interval_start)
        if end is None:
            # Manual runs in Airflow 3 may have no data interval; the run's own time stands in.
            end = _optional_time(context.get("logical_date") or getattr(dag_run, "run_after", None))
        if end is None:
            raise ValueError("no data interval end and no logical date: cannot place the report")
        if start is None:
            start = end.replace(hour=0, minute=0, second=0, microsecond=0)
            start = start if start < end else start - timedelta(days=1)
        gate = parse_summary(self.gate_summary)
        if isinstance(gate, str):
            raise ValueError(f"gate_summary is not a JSON object: {gate[:200]}")
        task_states = self._task_states(context, dag_id, run_id)
        deploy = parse_summary(self.deploy_summary)
        if deploy is None:
            deploy = self._deploy_without_outcome(context, task_states)

        s3 = S3Hook(aws_conn_id=cfg.s3.conn_id).get_conn()
        with MongoHook(mongo_conn_id=cfg.mongo.conn_id) as hook:
            registry = ModelRegistry.for_use_case(cfg, hook.get_conn())
            summary = publish_run_report(
                s3,
                cfg,
                registry,
                run_key=str(self.run_key or run_id),
                dag_id=dag_id,
                run_id=run_id,
                data_interval_start=start,
                data_interval_end=end,
                training_prefix=_optional_text(self.training_prefix),
                challenger_version=_optional_text(self.challenger_version),
                gate=gate,
                deploy=deploy,
                psi_threshold=float(self.psi_threshold),
                card_precision_k=self.card_precision_k,
                task_states=task_states,
            )
        missing = [s["id"] for s in summary["sections"] if not s["available"]]
        self.log.info(
            "run report s3://%s/%s (%d bytes): decision %s, deployment %s%s",
            summary["bucket"],
            summary["key"],
            summary["bytes"],
            summary["decision"],
            summary["deployment"],
            f"; sections unavailable: {missing}" if missing else "",
        )
        return summary

    def _task_states(self, context: Context, dag_id: str, run_id: str) -> dict[str, str]:
        """States of the run's other tasks (Task SDK call); empty when they cannot be read."""
        getter = getattr(context.get("ti"), "get_task_states", None)
        if not callable(getter):
            return {}
        try:
            states = getter(dag_id=dag_id, run_ids=[run_id]).get(run_id) or {}
        except Exception as err:  # informative only: the report must still be written
            self.log.warning("task states of %s unknown: %s", run_id, err)
            return {}
        return {str(task): str(state) for task, state in states.items() if task != self.task_id}

    def _deploy_without_outcome(self, context: Context, task_states: dict[str, str]) -> str | None:
        """The deployment recorded no outcome: it failed before deciding, or was never reached."""
        dag_run = context.get("dag_run")
        run_type = getattr(getattr(dag_run, "run_type", None), "value", getattr(dag_run, "run_type", ""))
        if str(run_type).lower() == "backfill":
            return "skipped: backfill"  # a backfill never replaces the live champion
        if self.deploy_task_id and task_states.get(self.deploy_task_id) == "failed":
            return f"failed: task {self.deploy_task_id} failed (see its log)"
        return None
