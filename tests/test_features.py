"""Point-in-time features on hand-made frames, and batch == online on the same transactions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraud_retraining.config import load_use_case
from fraud_retraining.features import FEATURE_COLUMNS, compute_features, features_for_transaction

CFG = load_use_case()  # label delay 7 days
T0 = pd.Timestamp("2026-11-02 12:00", tz="UTC")  # a Monday


def _tx(rows: list[tuple[str, pd.Timestamp, int, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["tx_id", "tx_datetime", "customer_id", "terminal_id", "amount"])


def _labels(rows: list[tuple[str, int, pd.Timestamp]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["tx_id", "is_fraud", "labeled_at"])


def test_customer_windows_are_strictly_before_the_transaction() -> None:
    tx = _tx(
        [
            ("a", T0 - pd.Timedelta(days=40), 1, 9, 100.0),  # outside every window
            ("b", T0 - pd.Timedelta(days=10), 1, 9, 30.0),  # in 30d only
            ("c", T0 - pd.Timedelta(hours=2), 1, 9, 10.0),  # in 1d, 7d, 30d
            ("d", T0, 1, 9, 500.0),  # the transaction itself
            ("e", T0 + pd.Timedelta(hours=1), 1, 9, 7.0),  # later: never seen by d
            ("x", T0 - pd.Timedelta(hours=1), 2, 9, 999.0),  # other customer
        ]
    )
    row = compute_features(tx, _labels([]), CFG).set_index("tx_id").loc["d"]
    assert row["customer_tx_count_1d"] == 1
    assert row["customer_mean_amount_1d"] == 10.0
    assert row["customer_tx_count_7d"] == 1
    assert row["customer_tx_count_30d"] == 2
    assert row["customer_mean_amount_30d"] == 20.0
    assert row["amount"] == 500.0
    assert row["is_weekend"] == 0
    assert row["is_night"] == 0


def test_terminal_windows_are_shifted_by_the_delay_and_labels_do_not_leak() -> None:
    day = pd.Timedelta(days=1)
    tx = _tx(
        [
            ("f1", T0 - 8 * day, 1, 5, 10.0),  # in [t-8d, t-7d): the 1d window
            ("g1", T0 - 8 * day + pd.Timedelta(hours=3), 2, 5, 10.0),
            ("f2", T0 - 10 * day, 3, 5, 10.0),  # fraud, label known only after t
            ("g2", T0 - 20 * day, 4, 5, 10.0),
            ("g3", T0 - 3 * day, 5, 5, 10.0),  # inside the delay: invisible
            ("t", T0, 6, 5, 10.0),
        ]
    )
    labels = _labels(
        [
            ("f1", 1, T0 - 6 * day),  # known before t
            ("f2", 1, T0 + 1 * day),  # written after t: must not leak
        ]
    )
    row = compute_features(tx, labels, CFG).set_index("tx_id").loc["t"]
    assert row["terminal_tx_count_1d"] == 2
    assert row["terminal_fraud_share_1d"] == 0.5
    assert row["terminal_tx_count_7d"] == 3
    assert row["terminal_fraud_share_7d"] == pytest.approx(1 / 3)
    assert row["terminal_tx_count_30d"] == 4
    assert row["terminal_fraud_share_30d"] == 0.25


def test_known_frauds_inside_the_delay_and_days_since_known_frauds() -> None:
    day = pd.Timedelta(days=1)
    tx = _tx(
        [
            ("old", T0 - 40 * day, 1, 5, 10.0),  # fraud beyond the 37-day lookback: ignored
            ("f20", T0 - 20 * day, 2, 5, 10.0),  # fraud known long ago: the first known one
            ("f3", T0 - 3 * day, 3, 5, 10.0),  # fraud inside the delay, reported 1 day later
            ("f2", T0 - 2 * day, 4, 5, 10.0),  # fraud inside the delay, label written after t
            ("g1", T0 - 1 * day, 5, 5, 10.0),
            ("t", T0, 6, 5, 10.0),
            ("u", T0, 7, 6, 10.0),  # another terminal, no fraud at all
        ]
    )
    labels = _labels(
        [
            ("old", 1, T0 - 39 * day),
            ("f20", 1, T0 - 15 * day),
            ("f3", 1, T0 - 2 * day),
            ("f2", 1, T0 + 1 * day),  # not known at t: must not leak
        ]
    )
    rows = compute_features(tx, labels, CFG).set_index("tx_id")
    row = rows.loc["t"]
    assert row["terminal_known_frauds_in_delay"] == 1  # f3 only
    assert row["terminal_days_since_first_known_fraud"] == pytest.approx(20.0)
    assert row["terminal_days_since_last_known_fraud"] == pytest.approx(3.0)
    # The delay-shifted windows are unchanged by labels known early: f20 is in 30d only.
    assert row["terminal_fraud_share_30d"] == pytest.approx(1 / 1)
    assert row["terminal_fraud_share_7d"] == 0.0
    other = rows.loc["u"]
    assert other["terminal_known_frauds_in_delay"] == 0
    assert other["terminal_days_since_first_known_fraud"] == -1.0
    assert other["terminal_days_since_last_known_fraud"] == -1.0
    # f3 at its own time: it is not known yet (reported a day later) and a row never sees itself.
    assert rows.loc["f3", "terminal_known_frauds_in_delay"] == 0
    assert rows.loc["f3", "terminal_days_since_last_known_fraud"] == pytest.approx(17.0)


def test_night_and_weekend_flags() -> None:
    saturday_night = pd.Timestamp("2026-11-07 03:00", tz="UTC")
    row = compute_features(_tx([("n", saturday_night, 1, 1, 5.0)]), _labels([]), CFG).iloc[0]
    assert row["is_weekend"] == 1
    assert row["is_night"] == 1


def test_batch_and_online_features_are_equal() -> None:
    from fraud_retraining.simulator import SimulationParams, simulate

    sim = simulate(
        SimulationParams(n_customers=150, n_terminals=300, n_days=45, start_date="2026-09-01", seed=3), CFG
    )
    transactions = sim[["tx_id", "tx_datetime", "customer_id", "terminal_id", "amount"]]
    labels = sim[["tx_id", "is_fraud", "labeled_at"]]
    batch = compute_features(transactions, labels, CFG).set_index("tx_id")
    rng = np.random.default_rng(0)
    checked = 0
    for i in rng.choice(np.arange(len(sim) // 2, len(sim)), 25, replace=False):
        tx = transactions.iloc[i]
        t = tx["tx_datetime"]
        prior = transactions[
            (transactions["tx_datetime"] < t)
            & (
                (transactions["customer_id"] == tx["customer_id"])
                | (transactions["terminal_id"] == tx["terminal_id"])
            )
        ]
        known = labels[labels["labeled_at"] <= t]
        online = features_for_transaction(tx.to_dict(), prior, known, CFG)
        expected = batch.loc[tx["tx_id"], FEATURE_COLUMNS].astype(float).to_dict()
        assert online == pytest.approx(expected), tx["tx_id"]
        checked += 1
    assert checked == 25


def test_window_counts_are_exact_with_many_entities_over_a_long_span() -> None:
    """Regression: a composite (entity, nanosecond) key overflowed int64 beyond ~600 entities over
    half a year, silently corrupting counts (shares above 1). Brute force is the reference."""
    rng = np.random.default_rng(5)
    n = 40_000
    times = T0 + pd.to_timedelta(np.sort(rng.integers(0, 200 * 86_400_000, n)), unit="ms")
    frame = pd.DataFrame(
        {
            "tx_id": [f"t{i}" for i in range(n)],
            "tx_datetime": times,
            "customer_id": rng.integers(0, 8_000, n),
            "terminal_id": rng.integers(0, 20_000, n) // 7,  # a few rows per terminal
            "amount": rng.gamma(2.0, 30.0, n).round(2),
        }
    )
    fraud_rows = rng.choice(n, 2_000, replace=False)
    labels = pd.DataFrame(
        {
            "tx_id": frame["tx_id"].iloc[fraud_rows].to_numpy(),
            "is_fraud": 1,
            "labeled_at": frame["tx_datetime"].iloc[fraud_rows].to_numpy() + pd.Timedelta(days=2),
        }
    )
    features = compute_features(frame, labels, CFG)
    assert features[[f"terminal_fraud_share_{w}d" for w in (1, 7, 30)]].max().max() <= 1.0
    delay = pd.Timedelta(days=CFG.label_delay_days)
    is_fraud = frame["tx_id"].isin(set(labels["tx_id"]))
    for i in rng.choice(n, 150, replace=False):
        t, customer, terminal = frame.loc[i, ["tx_datetime", "customer_id", "terminal_id"]]
        for w in (1, 7, 30):
            window = pd.Timedelta(days=w)
            mine = frame[(frame["customer_id"] == customer) & (frame["tx_datetime"] > t - window)]
            mine = mine[mine["tx_datetime"] < t]
            assert features.loc[i, f"customer_tx_count_{w}d"] == len(mine)
            at_terminal = frame[
                (frame["terminal_id"] == terminal) & (frame["tx_datetime"] >= t - delay - window)
            ]
            at_terminal = at_terminal[at_terminal["tx_datetime"] < t - delay]
            assert features.loc[i, f"terminal_tx_count_{w}d"] == len(at_terminal)
            frauds = int(is_fraud[at_terminal.index].sum())  # labels 2 days after: known by t
            expected = frauds / len(at_terminal) if len(at_terminal) else 0.0
            assert features.loc[i, f"terminal_fraud_share_{w}d"] == pytest.approx(expected)
        at_terminal = frame[(frame["terminal_id"] == terminal) & (frame["tx_datetime"] < t)]
        known = at_terminal[
            is_fraud[at_terminal.index] & (at_terminal["tx_datetime"] + pd.Timedelta(days=2) <= t)
        ]
        in_delay = known[known["tx_datetime"] >= t - delay]
        assert features.loc[i, "terminal_known_frauds_in_delay"] == len(in_delay)
        recent = known[known["tx_datetime"] >= t - delay - pd.Timedelta(days=30)]
        ages = (t - recent["tx_datetime"]) / pd.Timedelta(days=1)
        first, last = (ages.max(), ages.min()) if len(recent) else (-1.0, -1.0)
        assert features.loc[i, "terminal_days_since_first_known_fraud"] == pytest.approx(first)
        assert features.loc[i, "terminal_days_since_last_known_fraud"] == pytest.approx(last)
