"""The training set from the real S3 raw zone: seeded MongoDB -> extract -> stage."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from fraud_retraining.config import load_use_case
from fraud_retraining.staging import StagingError, build_training_set, split_boundaries, stage_training_set

CFG = load_use_case()
AS_OF = datetime(2026, 11, 1, tzinfo=UTC)


def test_split_has_a_delay_gap_between_train_and_validation() -> None:
    b = split_boundaries(AS_OF, 7, 28, 7, 7)
    assert b["test_end"] == AS_OF - timedelta(days=7)
    assert b["test_start"] == b["test_end"] - timedelta(days=7)
    assert b["valid_start"] == b["test_start"] - timedelta(days=7)
    assert b["valid_start"] - b["train_end"] == timedelta(days=7)
    assert b["train_end"] - b["train_start"] == timedelta(days=28)


def _day(n: float) -> pd.Timestamp:
    return pd.Timestamp(AS_OF) - pd.Timedelta(days=n)


def test_known_compromised_cards_leave_the_test_set_and_unknown_labels_are_dropped() -> None:
    tx = pd.DataFrame(
        [
            ("train1", _day(40), 1, 1, 10.0),
            ("fraud_old", _day(20), 2, 1, 10.0),  # card 2: fraud known before the test period
            ("test_c2", _day(10), 2, 1, 10.0),  # -> removed from test
            ("test_c3", _day(10), 3, 1, 10.0),  # stays
            ("unlabelled", _day(9), 4, 1, 10.0),  # label not known by as_of -> dropped
        ],
        columns=["tx_id", "tx_datetime", "customer_id", "terminal_id", "amount"],
    )
    labels = pd.DataFrame(
        [
            ("train1", 0, _day(33)),
            ("fraud_old", 1, _day(18)),
            ("test_c2", 0, _day(3)),
            ("test_c3", 0, _day(3)),
            ("unlabelled", 1, _day(-2)),  # arrives after as_of
        ],
        columns=["tx_id", "is_fraud", "labeled_at"],
    )
    splits, info = build_training_set(
        tx, labels, CFG, AS_OF, training_window_days=28, valid_days=7, test_days=7
    )
    assert list(splits["test"]["tx_id"]) == ["test_c3"]
    assert info["removed_known_compromised_cards"] == 1
    assert "train1" in set(splits["train"]["tx_id"])
    assert "unlabelled" not in set(pd.concat(splits.values())["tx_id"])


@pytest.mark.integration
def test_stage_from_extracted_partitions(mongo_db, mongo_client, s3_client, s3_bucket) -> None:
    from dataclasses import replace

    from fraud_retraining.extract import extract_interval
    from fraud_retraining.seeding import seed
    from fraud_retraining.simulator import SimulationParams, simulate

    cfg = replace(CFG, mongo=replace(CFG.mongo, database=mongo_db.name), s3=replace(CFG.s3, bucket=s3_bucket))
    start = datetime(2026, 8, 1, tzinfo=UTC)
    days = 60
    sim = simulate(
        SimulationParams(n_customers=200, n_terminals=400, n_days=days, start_date=start.date(), seed=5), cfg
    )
    as_of = start + timedelta(days=days)
    seed(mongo_db[cfg.mongo.collection], sim, cfg, as_of=as_of)
    for d in range(days):
        lo = start + timedelta(days=d)
        extract_interval(mongo_client, s3_client, cfg, lo, lo + timedelta(days=1))

    with pytest.raises(StagingError, match="labelled rows"):
        stage_training_set(s3_client, cfg, start + timedelta(days=10), "too-early", training_window_days=7)

    summary = stage_training_set(
        s3_client, cfg, as_of, "manual__2026-09-30T00:00:00+00:00", training_window_days=21
    )
    prefix = summary["training_prefix"]
    assert prefix == "training/manual__2026-09-30T00_00_00_00_00/"
    manifest = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=prefix + "manifest.json")["Body"].read())
    train = pd.read_parquet(
        io.BytesIO(s3_client.get_object(Bucket=s3_bucket, Key=prefix + "train.parquet")["Body"].read())
    )
    assert manifest["rows"]["train"] == len(train) > 0
    assert manifest["frauds"]["train"] == int(train["is_fraud"].sum()) > 0
    assert set(manifest["features"]) <= set(train.columns)
    window = {k: datetime.fromisoformat(v) for k, v in manifest["window"].items()}
    assert train["tx_datetime"].min() >= window["train_start"]
    assert train["tx_datetime"].max() < window["train_end"]
    # Every staged label agrees with the simulator's ground truth.
    truth = sim.set_index("tx_id")["is_fraud"]
    assert (train.set_index("tx_id")["is_fraud"] == truth.loc[train["tx_id"]].to_numpy()).all()
    # Rerunning the same run gives the same data.
    again = stage_training_set(
        s3_client, cfg, as_of, "manual__2026-09-30T00:00:00+00:00", training_window_days=21
    )
    assert again["data_hash"] == summary["data_hash"]
