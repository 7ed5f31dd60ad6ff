"""Operator extra links: "Run report" and "Model version" buttons on the task pages of the UI.

They point at the model-view plugin (`plugins/fraud_retraining_ui.py`, mounted at
`/fraud-models`), which reads the report from S3 and the version from the registry, so a link
works for any deployment that loads the plugin. Like the operators, this module is an Airflow
adapter: it imports the Task SDK, the library modules do not.

In Airflow 3 a worker calls `get_link` once when the task finishes and stores the URL as an
XCom (`_link_<class name>`); the UI reads that XCom. So `get_link` runs with the rendered
operator and the running task instance, and `operators` stays empty: listing operators there
would make the API server call `get_link` itself, without rendered fields or XCom access.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urljoin

from airflow.sdk import BaseOperatorLink, conf

# Where the plugin mounts its FastAPI app (fastapi_apps url_prefix); one place for both sides.
MODEL_VIEW_PREFIX = "/fraud-models"
# Operator attributes that name the model version a task works on, in order of preference.
VERSION_ATTRIBUTES = ("challenger_version", "version")
# Keys of a task's XCom return value that name that version (train: version; gate: challenger).
VERSION_RESULT_KEYS = ("version", "challenger_version")


def model_view_url(path: str) -> str:
    """An absolute URL when `[api] base_url` is set (links are opened from anywhere), else rooted."""
    base = conf.get("api", "base_url", fallback="") or "/"
    return urljoin(base.rstrip("/") + "/", f"{MODEL_VIEW_PREFIX.strip('/')}/{path.lstrip('/')}")


def report_url(run_id: str) -> str:
    return model_view_url(f"reports/{quote(run_id, safe='')}")


def version_url(version: str) -> str:
    return model_view_url(f"versions/{quote(version, safe='')}")


def _rendered(value: Any) -> str | None:
    """A concrete version string, or None for unset or still-unrendered template values."""
    if isinstance(value, str) and value.strip() and "{{" not in value:
        return value.strip()
    return None


def version_of_task(operator: Any, ti_key: Any) -> str | None:
    """The model version a finished task worked on: its rendered argument, else its result."""
    for attribute in VERSION_ATTRIBUTES:
        if found := _rendered(getattr(operator, attribute, None)):
            return found
    # The train task only learns its version while running; it returns it. At link time the
    # worker passes the running task instance, which can pull its own return value.
    pull = getattr(ti_key, "xcom_pull", None)
    if not callable(pull):
        return None
    result = pull(task_ids=ti_key.task_id, key="return_value")
    if isinstance(result, Mapping):
        for key in VERSION_RESULT_KEYS:
            if found := _rendered(result.get(key)):
                return found
    return None


class RunReportLink(BaseOperatorLink):
    """The run's report (metrics, champion vs challenger, data volumes, drift), streamed from S3."""

    name = "Run report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return report_url(ti_key.run_id)


class ModelVersionLink(BaseOperatorLink):
    """The registry page of the version the task trained, gated or deployed."""

    name = "Model version"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        version = version_of_task(operator, ti_key)
        # An empty link renders as a disabled button: no version (e.g. the task failed early).
        return version_url(version) if version else ""
