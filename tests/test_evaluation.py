"""Challenger vs champion on one holdout: a real better model passes, a shuffled-label one fails."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from fraud_retraining.evaluation import evaluate_challenger, holdout_metrics
from fraud_retraining.gate import GatePolicy
from fraud_retraining.model_artifact import load_model, serialize_model

FEATURES = ["amount", "terminal_fraud_share_7d", "customer_tx_count_1d"]
MANIFEST = {"label": "is_fraud", "time": "tx_datetime", "customer": "customer_id"}


def _frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    x = rng.normal(size=(n, len(FEATURES)))
    logit = -4.5 + 2.2 * x[:, 0] + 1.5 * x[:, 1]
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int8")
    frame = pd.DataFrame(x, columns=FEATURES)
    frame["is_fraud"] = label
    frame["tx_datetime"] = pd.Timestamp("2026-11-01", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 7 * 86400, n), "s"
    )
    frame["customer_id"] = rng.integers(0, 800, n)
    return frame


def _model(train: pd.DataFrame, version: str, shuffle: bool = False, seed: int = 0):
    labels = train["is_fraud"].to_numpy()
    if shuffle:
        labels = np.random.default_rng(seed).permutation(labels)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": seed},
        lgb.Dataset(train[FEATURES].to_numpy(), labels),
        num_boost_round=40,
    )
    return load_model(serialize_model(booster, FEATURES, version))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    return _frame(rng, 20_000), _frame(rng, 8_000)


def test_holdout_metrics_are_all_present(data) -> None:
    train, holdout = data
    metrics = holdout_metrics(_model(train, "v1"), holdout, MANIFEST)
    assert metrics["rows"] == len(holdout)
    assert 0.8 < metrics["auc_roc"] <= 1.0
    assert 0.0 < metrics["average_precision"] <= 1.0
    assert 0.0 <= metrics["card_precision_at_100"] <= 1.0
    assert 0.0 <= metrics["recall_at_alert_budget"] <= 1.0


def test_shuffled_label_challenger_is_rejected_against_a_real_champion(data) -> None:
    train, holdout = data
    champion = _model(train, "v1")
    challenger = _model(train, "v2", shuffle=True)
    policy = GatePolicy(floors={"auc_roc": 0.6}, tolerance=0.01, min_train_frauds=10)
    decision = evaluate_challenger(
        challenger, champion, holdout, MANIFEST, train_frauds=int(train["is_fraud"].sum()), policy=policy
    )
    assert not decision.passed
    assert any(reason.startswith("auc_roc") or "vs champion" in reason for reason in decision.reasons)
    assert decision.champion["auc_roc"] > decision.challenger["auc_roc"]


def test_equal_model_passes_and_first_model_passes_on_floors(data) -> None:
    train, holdout = data
    policy = GatePolicy(floors={"auc_roc": 0.7}, tolerance=0.01, min_train_frauds=10)
    frauds = int(train["is_fraud"].sum())
    first = evaluate_challenger(
        _model(train, "v1"), None, holdout, MANIFEST, train_frauds=frauds, policy=policy
    )
    assert first.passed
    assert first.champion is None
    same = evaluate_challenger(
        _model(train, "v2"), _model(train, "v1"), holdout, MANIFEST, train_frauds=frauds, policy=policy
    )
    assert same.passed


def test_holdout_without_the_model_features_is_a_clear_error(data) -> None:
    train, holdout = data
    with pytest.raises(ValueError, match="lacks the model's features"):
        holdout_metrics(_model(train, "v1"), holdout.drop(columns=["amount"]), MANIFEST)
