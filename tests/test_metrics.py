"""Unit tests of the fraud metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fraud_retraining.metrics import (
    auc_roc,
    average_precision,
    card_precision_top_k,
    card_precision_top_k_per_day,
    fraud_metrics,
    recall_at_alert_budget,
)


def test_auc_roc_perfect_inverted_and_tied() -> None:
    y = [0, 0, 1, 1]
    assert auc_roc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auc_roc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert auc_roc(y, [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_auc_roc_is_nan_with_one_class() -> None:
    assert math.isnan(auc_roc([0, 0, 0], [0.1, 0.2, 0.3]))


def test_average_precision_by_hand() -> None:
    # Ranking: 1 (pos), 2 (neg), 3 (pos): precision at each positive = 1/1 and 2/3.
    y = [1, 0, 1]
    scores = [0.9, 0.8, 0.7]
    assert average_precision(y, scores) == pytest.approx((1.0 + 2 / 3) / 2)
    assert math.isnan(average_precision([0, 0], [0.1, 0.2]))


def test_metrics_reject_bad_inputs() -> None:
    with pytest.raises(ValueError, match="0/1"):
        auc_roc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="labels but"):
        average_precision([0, 1], [0.1])


def test_card_precision_uses_max_score_per_card_and_divides_by_k() -> None:
    days = ["d1"] * 5
    customers = [1, 1, 2, 3, 4]
    labels = [0, 1, 0, 0, 1]
    # Card 1: max 0.9 (compromised); card 2: 0.8; card 3: 0.1; card 4: 0.7 (compromised).
    scores = [0.2, 0.9, 0.8, 0.1, 0.7]
    assert card_precision_top_k_per_day(days, customers, labels, scores, k=2) == [0.5]
    assert card_precision_top_k_per_day(days, customers, labels, scores, k=3) == [2 / 3]
    # Fewer cards than k: still divided by k, as the handbook does.
    assert card_precision_top_k_per_day(days, customers, labels, scores, k=10) == [0.2]


def test_card_precision_removes_cards_detected_on_earlier_days() -> None:
    days = ["d1", "d1", "d2", "d2"]
    customers = [1, 2, 1, 3]
    labels = [1, 0, 0, 1]
    scores = [0.9, 0.1, 0.9, 0.5]
    # Day 1 detects card 1 (blocked); on day 2 it is gone, so the top-1 card is 3 (compromised).
    assert card_precision_top_k_per_day(days, customers, labels, scores, k=1) == [1.0, 1.0]
    assert card_precision_top_k(days, customers, labels, scores, k=1) == 1.0
    # Without removal, day 2's top-1 is card 1 again, whose day-2 transaction is genuine.
    kept = card_precision_top_k_per_day(days, customers, labels, scores, k=1, remove_detected_cards=False)
    assert kept == [1.0, 0.0]
    # Undetected cards are not removed: a missed card still counts on the next day.
    missed = card_precision_top_k_per_day(["d1", "d1", "d2"], [1, 2, 1], [1, 0, 1], [0.1, 0.9, 0.9], k=1)
    assert missed == [0.0, 1.0]


def test_recall_at_alert_budget_count_and_share() -> None:
    labels = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    assert recall_at_alert_budget(labels, scores, 1) == pytest.approx(1 / 3)
    assert recall_at_alert_budget(labels, scores, 3) == pytest.approx(2 / 3)
    # 25 % of 10 rows rounds up to 3 alerts.
    assert recall_at_alert_budget(labels, scores, 0.25) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="budget"):
        recall_at_alert_budget(labels, scores, 0)


def test_fraud_metrics_is_json_safe() -> None:
    result = fraud_metrics([0, 0], [0.1, 0.2], days=["d", "d"], customers=[1, 2], k=1, alert_budget=1)
    assert result["auc_roc"] is None and result["average_precision"] is None
    assert result["card_precision_at_1"] == 0.0
    assert result["rows"] == 2 and result["frauds"] == 0
    assert result["alert_budget"] == 1 and result["recall_at_alert_budget"] is None
    assert not any("." in key for key in result)
