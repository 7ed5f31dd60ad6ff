"""Change-stream scorer against the real MongoDB wire server (SecantusDB supports change streams
with resume tokens) and a real local endpoint: every insert scored once, restarts resume from the
stored token with no gap and no duplicate, the endpoint being down holds the token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pymongo
import pytest

import local_stack
from fraud_retraining.config import UseCaseConfig, load_use_case
from fraud_retraining.scoring import ChangeStreamScorer, HttpEndpointClient, LiveScorer, ScoringSettings
from fraud_retraining.seeding import seed
from fraud_retraining.simulator import SimulationParams, build_profiles, simulate_live_batch
from fraud_retraining.storage import ensure_transaction_indexes
from tests.test_scoring_handler import dead_endpoint_url, endpoint_url, free_port, model_dir  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
PARAMS = SimulationParams(n_customers=60, n_terminals=80, n_days=5, start_date="2026-11-01", seed=2)


class CountingClient:
    """The real HTTP client, counting the rows sent: a transaction scored twice would show."""

    def __init__(self, inner: HttpEndpointClient) -> None:
        self.inner = inner
        self.rows = 0

    def invoke(self, records: Sequence[Mapping[str, float]]) -> tuple[list[float], str]:
        scores = self.inner.invoke(records)
        self.rows += len(records)
        return scores


@pytest.fixture
def live(mongo_db: pymongo.database.Database, use_case_config_file: Callable[..., str]) -> dict[str, Any]:
    cfg = load_use_case(use_case_config_file(database=mongo_db.name))
    ensure_transaction_indexes(mongo_db[cfg.mongo.collection], cfg.fields)
    return {
        "db": mongo_db,
        "cfg": cfg,
        "config_path": cfg.source_path,
        "profiles": build_profiles(PARAMS, np.random.default_rng(PARAMS.seed)),
        "rng": np.random.default_rng(7),
    }


def insert_live(live: dict[str, Any], n: int) -> list[str]:
    """`n` live transactions written as the bank writes them (the simulator's live traffic)."""
    cfg: UseCaseConfig = live["cfg"]
    now = datetime.now(UTC)
    batch = simulate_live_batch(
        live["profiles"], PARAMS, cfg, n, now, live["rng"], f"live-{uuid.uuid4().hex[:8]}-"
    )
    seed(live["db"][cfg.mongo.collection], batch, cfg, as_of=now)
    return batch[cfg.fields.id].tolist()


def make_stream_scorer(live: dict[str, Any], client: Any, **kwargs: Any) -> ChangeStreamScorer:
    settings = ScoringSettings()
    scorer = LiveScorer(live["db"], live["cfg"], settings, client, source="change_stream")
    kwargs.setdefault("max_await_ms", 100)
    return ChangeStreamScorer(scorer, name="test-scorer", **kwargs)


class Running:
    """A scorer's run() in a thread; errors it raises are kept for the test to look at."""

    def __init__(self, scorer: ChangeStreamScorer) -> None:
        self.scorer = scorer
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        # It stores its starting token first: inserts after this point are guaranteed seen.
        wait_until(lambda: scorer.state.find_one({"_id": scorer.name}) is not None, "scorer start")

    def _run(self) -> None:
        try:
            self.scorer.run()
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.scorer.stop()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def scores_of(live: dict[str, Any], ids: list[str]) -> int:
    return live["db"][live["cfg"].mongo.scores_collection].count_documents({"_id": {"$in": ids}})


@pytest.fixture
def client(endpoint_url: str) -> CountingClient:  # noqa: F811
    return CountingClient(HttpEndpointClient(endpoint_url))


def test_scores_every_insert_and_shows_its_lag(live: dict[str, Any], client: CountingClient) -> None:
    running = Running(make_stream_scorer(live, client, batch_size=16))
    ids = insert_live(live, 20) + insert_live(live, 20)
    wait_until(lambda: scores_of(live, ids) == len(ids), "40 scores")
    running.stop()
    assert running.error is None
    stored = list(live["db"]["scores"].find({"_id": {"$in": ids}}))
    assert {s["source"] for s in stored} == {"change_stream"}
    assert all(0.0 <= s["fraud_probability"] <= 1.0 for s in stored)
    status = running.scorer.metrics.status()
    assert status["scored_total"] == 40
    assert status["duplicates_skipped_total"] == 0
    assert 0.0 <= status["lag_seconds"] < 20
    assert client.rows == 40
    text = running.scorer.metrics.render()
    assert 'fraud_scorer_scored_total{scorer="test-scorer"} 40' in text
    assert 'fraud_scorer_lag_seconds{scorer="test-scorer"}' in text


def test_restart_resumes_from_the_token_without_gap_or_duplicate(
    live: dict[str, Any], client: CountingClient
) -> None:
    first = Running(make_stream_scorer(live, client))
    before = insert_live(live, 15)
    wait_until(lambda: scores_of(live, before) == 15, "first scores")
    first.stop()
    token = live["db"]["scorer_state"].find_one({"_id": "test-scorer"})["resume_token"]
    while_down = insert_live(live, 25)  # inserted while no scorer runs
    assert live["db"]["scorer_state"].find_one({"_id": "test-scorer"})["resume_token"] == token
    second = Running(make_stream_scorer(live, client))
    after = insert_live(live, 5)
    everything = before + while_down + after
    wait_until(lambda: scores_of(live, everything) == 45, "all scores")
    second.stop()
    assert client.rows == 45  # each transaction went to the endpoint exactly once
    assert second.scorer.metrics.status()["scored_total"] == 30
    assert second.scorer.metrics.status()["duplicates_skipped_total"] == 0
    assert live["db"]["scores"].count_documents({}) == 45


class Crash(Exception):
    pass


def test_crash_between_score_and_token_never_scores_twice(
    live: dict[str, Any], client: CountingClient
) -> None:
    crashing = make_stream_scorer(live, client, batch_size=500)

    def crash() -> None:
        raise Crash("killed after recording, before storing the token")

    crashing.on_batch_recorded = crash
    first = Running(crashing)
    ids = insert_live(live, 12)
    first.thread.join(timeout=20)
    assert isinstance(first.error, Crash)
    recorded = scores_of(live, ids)
    assert recorded >= 1
    rows_before = client.rows
    second = Running(make_stream_scorer(live, client, batch_size=500))
    wait_until(lambda: scores_of(live, ids) == 12, "all 12 scored")
    wait_until(
        lambda: second.scorer.metrics.status()["duplicates_skipped_total"] == recorded, "re-delivery seen"
    )
    second.stop()
    # The re-delivered ones were skipped before the endpoint: only the rest were sent.
    assert client.rows - rows_before == 12 - recorded
    assert client.rows == 12


def test_endpoint_down_keeps_the_token_then_catches_up(live: dict[str, Any], endpoint_url: str) -> None:  # noqa: F811
    down = HttpEndpointClient(dead_endpoint_url(), max_attempts=1, connect_timeout_s=0.2)
    scorer = make_stream_scorer(live, down, retry_backoff_s=0.05, max_retry_backoff_s=0.2)
    running = Running(scorer)
    start_token = live["db"]["scorer_state"].find_one({"_id": "test-scorer"})["resume_token"]
    ids = insert_live(live, 8)
    wait_until(lambda: scorer.metrics.status()["endpoint_failures_total"] >= 2, "endpoint failures")
    assert scores_of(live, ids) == 0
    assert live["db"]["scorer_state"].find_one({"_id": "test-scorer"})["resume_token"] == start_token
    scorer.scorer.endpoint = HttpEndpointClient(endpoint_url)  # the endpoint comes back
    wait_until(lambda: scores_of(live, ids) == 8, "catch-up")
    running.stop()
    assert live["db"]["scorer_state"].find_one({"_id": "test-scorer"})["resume_token"] != start_token


def test_invalid_insert_is_counted_and_passed(live: dict[str, Any], client: CountingClient) -> None:
    running = Running(make_stream_scorer(live, client))
    cfg: UseCaseConfig = live["cfg"]
    f = cfg.fields
    bad = {f.id: "bad-1", f.time: datetime.now(UTC), f.customer: 1, f.terminal: 2, f.amount: "12 EUR"}
    live["db"][cfg.mongo.collection].insert_one(bad)
    good = insert_live(live, 3)
    wait_until(lambda: scores_of(live, good) == 3, "good scores")
    running.stop()
    assert running.scorer.metrics.status()["invalid_total"] == 1
    assert scores_of(live, ["bad-1"]) == 0


def test_backfilled_history_is_counted_not_scored(live: dict[str, Any], client: CountingClient) -> None:
    """Loading last month's transactions is not live traffic: no endpoint call per old row."""
    running = Running(make_stream_scorer(live, client, max_backdate_s=3600))
    cfg: UseCaseConfig = live["cfg"]
    f = cfg.fields
    old = datetime.now(UTC) - timedelta(days=2)
    live["db"][cfg.mongo.collection].insert_many(
        [{f.id: f"old-{i}", f.time: old, f.customer: 1, f.terminal: 2, f.amount: 5.0} for i in range(4)]
    )
    good = insert_live(live, 2)
    wait_until(lambda: scores_of(live, good) == 2, "live scores")
    running.stop()
    assert running.scorer.metrics.status()["backfill_skipped_total"] == 4
    assert scores_of(live, [f"old-{i}" for i in range(4)]) == 0
    assert client.rows == 2


def test_reopens_the_stream_when_mongodb_restarts(
    tmp_path: Path,
    endpoint_url: str,  # noqa: F811
    use_case_config_file: Callable[..., str],
) -> None:
    """A MongoDB server of this test's own is stopped and started again under the scorer."""
    port = free_port()
    service = local_stack.start_service("mongo", port, tmp_path / "stack")
    client: pymongo.MongoClient = pymongo.MongoClient(
        local_stack.mongo_uri(port), serverSelectionTimeoutMS=2000, tz_aware=True
    )
    try:
        cfg = load_use_case(use_case_config_file(database="restart_db"))
        ensure_transaction_indexes(client["restart_db"][cfg.mongo.collection], cfg.fields)
        live = {
            "db": client["restart_db"],
            "cfg": cfg,
            "profiles": build_profiles(PARAMS, np.random.default_rng(PARAMS.seed)),
            "rng": np.random.default_rng(9),
        }
        counting = CountingClient(HttpEndpointClient(endpoint_url))
        running = Running(make_stream_scorer(live, counting, retry_backoff_s=0.1, max_retry_backoff_s=0.5))
        before = insert_live(live, 3)
        wait_until(lambda: scores_of(live, before) == 3, "scores before the restart")
        local_stack.stop_service(service)
        service = local_stack.start_service("mongo", port, tmp_path / "stack")
        after = insert_live(live, 3)
        wait_until(lambda: scores_of(live, after) == 3, "scores after the restart", timeout=40)
        running.stop()
        assert running.error is None
        assert counting.rows == 6
    finally:
        client.close()
        local_stack.stop_service(service)


def test_scorer_process_serves_metrics_and_stops_on_sigterm(
    live: dict[str, Any],
    mongo_uri: str,
    endpoint_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "MONGO_URI": mongo_uri,
        "FRAUD_USE_CASE_CONFIG": live["config_path"],
        "FRAUD_ENDPOINT_URL": endpoint_url,
    }
    log_path = tmp_path / "scorer.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "include/scoring/change_stream_scorer.py"),
                "--metrics-port",
                str(port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: live["db"]["scorer_state"].find_one({"_id": "change-stream-scorer"}) is not None, "start"
        )
        ids = insert_live(live, 6)
        wait_until(lambda: scores_of(live, ids) == 6, "process scores")
        wait_until(
            lambda: json.loads(httpx.get(f"http://127.0.0.1:{port}/status").text)["scored_total"] == 6,
            "status",
        )
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'fraud_scorer_scored_total{scorer="change-stream-scorer"} 6' in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log_path.read_text()
    assert "lag" in text
    assert mongo_uri not in text  # the connection string is never logged
