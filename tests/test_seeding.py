"""Seeding into the real MongoDB wire server: counts, indexes, idempotency, late labels, bad docs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from fraud_retraining.config import load_use_case
from fraud_retraining.seeding import MALFORMED_KINDS, apply_due_labels, seed
from fraud_retraining.simulator import SCEN_DRIFT, SimulationParams, simulate

pytestmark = pytest.mark.integration

CFG = load_use_case()
F = CFG.fields
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    # ~3,000 rows: 60 customers, 20 days.
    params = SimulationParams(
        n_customers=60, n_terminals=120, n_days=20, start_date="2026-09-01", seed=11, drift_start_day=10
    )
    return simulate(params, CFG)


def _mid(frame: pd.DataFrame) -> datetime:
    """An as_of inside the stretch, so some labels are due and others are not."""
    return frame[F.time].iloc[len(frame) // 2].to_pydatetime() + pd.Timedelta(days=8)


def test_seed_inserts_every_row_with_indexes(mongo_db, frame: pd.DataFrame) -> None:
    coll = mongo_db["transactions"]
    summary = seed(coll, frame, CFG, as_of=_mid(frame))
    assert summary["inserted"] == len(frame) == coll.count_documents({})
    assert summary["skipped_duplicates"] == 0
    indexes = coll.index_information()
    unique = [spec for spec in indexes.values() if spec["key"] == [(F.id, 1)]]
    assert unique and unique[0].get("unique")
    keys = {tuple(k for k, _ in spec["key"]) for spec in indexes.values()}
    assert {(F.time,), (F.customer, F.time), (F.terminal, F.time)} <= keys
    assert summary["frauds_by_scenario"] == {
        int(k): int(v) for k, v in frame.loc[frame[F.label] == 1, F.scenario].value_counts().items()
    }
    doc = coll.find_one({F.id: frame[F.id].iloc[0]})
    assert doc[F.time] == frame[F.time].iloc[0].to_pydatetime()
    assert isinstance(doc[F.customer], int) and isinstance(doc[F.amount], float)


def test_seed_is_idempotent_and_catches_up_labels(mongo_db, frame: pd.DataFrame) -> None:
    coll = mongo_db["transactions"]
    first_as_of = _mid(frame)
    seed(coll, frame, CFG, as_of=first_as_of)
    labelled_before = coll.count_documents({F.label: {"$exists": True}})
    end = frame[F.labeled_at].max().to_pydatetime()
    again = seed(coll, frame, CFG, as_of=end)
    assert again["inserted"] == 0
    assert again["skipped_duplicates"] == len(frame)
    assert coll.count_documents({}) == len(frame)
    assert again["labels_applied_to_existing"] == len(frame) - labelled_before > 0
    assert coll.count_documents({F.label: {"$exists": True}}) == len(frame)


def test_labels_arrive_later_and_only_when_due(mongo_db, frame: pd.DataFrame) -> None:
    coll = mongo_db["transactions"]
    as_of = _mid(frame)
    seed(coll, frame, CFG, as_of=as_of)
    due = frame[F.labeled_at] <= pd.Timestamp(as_of)
    assert 0 < due.sum() < len(frame)
    assert coll.count_documents({F.label: {"$exists": True}}) == int(due.sum())
    # A transaction whose label is not due carries no label, labeled_at nor scenario.
    pending_id = frame.loc[~due, F.id].iloc[0]
    pending = coll.find_one({F.id: pending_id})
    assert F.label not in pending and F.labeled_at not in pending and F.scenario not in pending
    # Every stored label became known after its transaction.
    for doc in coll.find({F.label: {"$exists": True}}, {F.time: 1, F.labeled_at: 1}).limit(500):
        assert doc[F.labeled_at] > doc[F.time]
    later = frame[F.labeled_at].max().to_pydatetime()
    updated = apply_due_labels(coll, frame, CFG, later)
    assert updated == int((~due).sum())
    assert coll.find_one({F.id: pending_id})[F.label] == int(
        frame.loc[frame[F.id] == pending_id, F.label].iloc[0]
    )
    # Re-applying changes nothing: labels are written once.
    assert apply_due_labels(coll, frame, CFG, later) == 0


def test_drift_day_changes_the_fraud_mix_in_mongo(mongo_db, frame: pd.DataFrame) -> None:
    coll = mongo_db["transactions"]
    seed(coll, frame, CFG, as_of=frame[F.labeled_at].max().to_pydatetime())
    drift_day = pd.Timestamp("2026-09-11", tz="UTC").to_pydatetime()
    assert coll.count_documents({F.scenario: SCEN_DRIFT, F.time: {"$lt": drift_day}}) == 0
    assert coll.count_documents({F.scenario: SCEN_DRIFT, F.time: {"$gte": drift_day}}) > 0


def test_malformed_share_and_kinds(mongo_db, frame: pd.DataFrame) -> None:
    coll = mongo_db["transactions"]
    share = 0.01
    summary = seed(coll, frame, CFG, as_of=_mid(frame), malformed_share=share, seed_value=5)
    requested = math.floor(len(frame) * share)
    assert sum(summary["malformed_by_kind"].values()) == requested
    assert set(summary["malformed_by_kind"]) == set(MALFORMED_KINDS)
    n_dup = summary["malformed_by_kind"]["duplicate_id"]
    # duplicate_id documents are refused by the unique index: MongoDB itself guards the id.
    assert summary["malformed_rejected_by_unique_index"] == n_dup
    assert coll.count_documents({F.id: {"$regex": "^bad-"}}) == requested - n_dup
    assert coll.count_documents({}) == len(frame) + requested - n_dup
    missing = coll.find_one({F.id: {"$regex": "^bad-missing_field-"}})
    assert F.customer not in missing
    wrong = coll.find_one({F.id: {"$regex": "^bad-wrong_type-"}})
    assert isinstance(wrong[F.amount], str)
    assert math.isnan(coll.find_one({F.id: {"$regex": "^bad-nan_amount-"}})[F.amount])
    assert coll.find_one({F.id: {"$regex": "^bad-negative_amount-"}})[F.amount] < 0
    future = coll.find_one({F.id: {"$regex": "^bad-future_timestamp-"}})
    assert future[F.time] > _mid(frame)
    oversized = coll.find_one({F.id: {"$regex": "^bad-oversized-"}})
    assert len(json.dumps(oversized, default=str)) > 1_000_000


def test_cli_seed_prints_summary(mongo_uri, mongo_client, tmp_path) -> None:
    config = tmp_path / "use_case.yaml"
    db_name = f"cli_{tmp_path.name[-12:]}".replace("-", "_")
    text = (REPO / "include" / "config" / "card_fraud.yaml").read_text()
    config.write_text(text.replace("database: fraud", f"database: {db_name}"))
    try:
        result = subprocess.run(
            [
                sys.executable,
                str(REPO / "include" / "seed_transactions.py"),
                "seed",
                "--days",
                "5",
                "--customers",
                "50",
                "--terminals",
                "100",
                "--start",
                "2026-09-01",
                "--seed",
                "1",
                "--malformed-share",
                "0.01",
                "--as-of",
                datetime(2026, 9, 20, tzinfo=UTC).isoformat(),
                "--mongo-uri",
                mongo_uri,
                "--config",
                str(config),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        summary = json.loads(result.stdout[result.stdout.index("{") :])
        coll = mongo_client[db_name][CFG.mongo.collection]
        assert summary["inserted"] == summary["rows"] > 0
        assert coll.count_documents({F.id: {"$not": {"$regex": "^bad-"}}}) == summary["rows"]
        assert summary["labelled_share"] == 1.0
    finally:
        mongo_client.drop_database(db_name)


def test_cli_help() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "include" / "seed_transactions.py"), "seed", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "--malformed-share" in result.stdout and "--as-of" in result.stdout


def test_cli_live_inserts_now_and_applies_due_history_labels(mongo_uri, mongo_client, tmp_path) -> None:
    config = tmp_path / "use_case.yaml"
    db_name = f"live_{tmp_path.name[-12:]}".replace("-", "_")
    text = (REPO / "include" / "config" / "card_fraud.yaml").read_text()
    config.write_text(text.replace("database: fraud", f"database: {db_name}"))
    sim = ["--days", "5", "--customers", "50", "--terminals", "100", "--start", "2026-09-01", "--seed", "2"]
    common = [*sim, "--mongo-uri", mongo_uri, "--config", str(config)]
    script = str(REPO / "include" / "seed_transactions.py")
    try:
        # History seeded as of its first day: almost no label is known yet.
        subprocess.run(
            [sys.executable, script, "seed", *common, "--as-of", "2026-09-02T00:00:00+00:00"],
            capture_output=True,
            check=True,
            timeout=120,
        )
        coll = mongo_client[db_name][CFG.mongo.collection]
        history = coll.count_documents({})
        assert coll.count_documents({F.label: {"$exists": True}}) < history
        before = datetime.now(UTC)
        result = subprocess.run(
            [sys.executable, script, "live", *common, "--rate", "10", "--duration", "2", "--with-history"],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        summary = json.loads(result.stdout[result.stdout.index("{") :])
        live = list(coll.find({F.id: {"$regex": "^live-"}}))
        assert len(live) == summary["inserted"] >= 10
        assert all(doc[F.time] >= before.replace(microsecond=0) for doc in live)
        # Live transactions are written unlabelled: none of their labels is due within seconds.
        assert not any(F.label in doc for doc in live)
        # Today is months after the seeded history: every one of its labels has arrived.
        labelled = coll.count_documents({F.label: {"$exists": True}, F.id: {"$not": {"$regex": "^live-"}}})
        assert labelled == history
    finally:
        mongo_client.drop_database(db_name)
