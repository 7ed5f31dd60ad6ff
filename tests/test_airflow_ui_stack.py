"""`make up` for real: airflow standalone with our dags/ and plugins/, the DAG visible through the
API server the UI uses, and a backfill over past intervals that runs to success."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

import local_stack

pytestmark = pytest.mark.e2e
DAG_ID = "fraud_model_retraining"


@pytest.fixture(scope="module")
def airflow_api(tmp_path_factory: pytest.TempPathFactory, mongo_server, s3_server):
    state_dir = tmp_path_factory.mktemp("airflow-stack")
    # Point the stack state at the session's servers, then let `up` start only Airflow.
    local_stack._write_state(state_dir, {"mongo": mongo_server, "s3": s3_server})
    running = local_stack.up(["airflow"], state_dir, ports={"airflow": local_stack.free_port()})
    base = f"http://127.0.0.1:{running['airflow'].port}"
    password_file = (
        Path(local_stack.airflow_env(state_dir)["AIRFLOW_HOME"])
        / "simple_auth_manager_passwords.json.generated"
    )
    password = json.loads(password_file.read_text())["admin"]
    token = httpx.post(
        f"{base}/auth/token", json={"username": "admin", "password": password}, timeout=30
    ).json()
    client = httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=30
    )
    yield client
    client.close()
    local_stack.down(state_dir, ["airflow"])


def _wait_for(predicate, timeout: float, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")


def test_ui_lists_the_dag_without_import_errors(airflow_api: httpx.Client) -> None:
    dag = _wait_for(
        lambda: next(
            (d for d in airflow_api.get("/api/v2/dags").json()["dags"] if d["dag_id"] == DAG_ID), None
        ),
        120,
        "the dag-processor to parse dags/",
    )
    assert dag["is_paused"] is True
    assert dag["timetable_summary"] == "0 0 * * *"
    assert airflow_api.get("/api/v2/importErrors").json()["total_entries"] == 0


def test_backfill_runs_past_intervals_to_success(airflow_api: httpx.Client) -> None:
    _wait_for(lambda: airflow_api.get(f"/api/v2/dags/{DAG_ID}").status_code == 200, 120, "the DAG")
    # Tasks of a paused DAG are never scheduled, backfill or not.
    assert airflow_api.patch(f"/api/v2/dags/{DAG_ID}", json={"is_paused": False}).status_code == 200
    body = {
        "dag_id": DAG_ID,
        "from_date": "2026-11-01T00:00:00Z",
        "to_date": "2026-11-02T00:00:00Z",
        "run_backwards": False,
        "dag_run_conf": {},
        "reprocess_behavior": "none",
        "max_active_runs": 1,
    }
    # SQLite answers 503 "database is locked" while the scheduler writes; a user would retry too.
    response = _wait_for(
        lambda: (r := airflow_api.post("/api/v2/backfills", json=body)).status_code != 503 and r,
        90,
        "SQLite to accept the backfill",
    )
    assert response.status_code == 200, response.text

    seen: list = []

    def finished_runs():
        runs = airflow_api.get(f"/api/v2/dags/{DAG_ID}/dagRuns", params={"run_type": "backfill"}).json()[
            "dag_runs"
        ]
        seen[:] = [(r["dag_run_id"], r["state"]) for r in runs]
        done = [r for r in runs if r["state"] in ("success", "failed")]
        return runs if runs and len(done) == len(runs) else None

    runs = _wait_for(finished_runs, 300, lambda: f"the backfill runs to finish (runs: {seen})")
    intervals = sorted((r["data_interval_start"], r["data_interval_end"]) for r in runs)
    assert intervals[0][0].startswith("2026-11-01T00:00:00")
    assert all(start < end for start, end in intervals)
    # The source is empty: each backfilled interval is re-extracted (an empty, valid partition),
    # and the stage then fails at once with its reason instead of training on nothing.
    for run in runs:
        tis = airflow_api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances").json()
        states = {ti["task_id"]: ti["state"] for ti in tis["task_instances"]}
        assert states["prepare_storage"] == "success", states
        assert states["extract_from_mongo"] == "success", states
        assert states["stage_to_s3"] == "failed", states
        assert states["automl_training"] == "upstream_failed", states
