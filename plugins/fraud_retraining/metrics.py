"""Fraud-detection metrics: AUC ROC, average precision, the handbook's card precision@k, and
recall at an alert budget. Pure functions over arrays, shared by training, the gate and the bench.

Card precision@k follows "Reproducible Machine Learning for Credit Card Fraud Detection"
(Le Borgne et al., chapter "Precision top-k metrics"): investigators can check k cards a day, so
for each day a card's score is its highest transaction score that day, the k highest-scoring cards
are alerted, and the day's precision is the share of them that are compromised (frauds / k, even
when fewer than k cards transacted). Cards detected on an earlier day are removed from later days,
since they are blocked once found. The metric is the mean over days.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score


def _as_binary_labels(y_true: Any) -> np.ndarray:
    labels = np.asarray(y_true).astype(np.int64).ravel()
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    return labels


def _check_lengths(labels: np.ndarray, scores: np.ndarray) -> None:
    if labels.shape[0] != scores.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels but {scores.shape[0]} scores")


def auc_roc(y_true: Any, scores: Any) -> float:
    """Area under the ROC curve; NaN when only one class is present (it is undefined then)."""
    labels = _as_binary_labels(y_true)
    values = np.asarray(scores, dtype=np.float64).ravel()
    _check_lengths(labels, values)
    if labels.min(initial=0) == labels.max(initial=0):
        return float("nan")
    return float(roc_auc_score(labels, values))


def average_precision(y_true: Any, scores: Any) -> float:
    """Average precision (area under the precision-recall curve, step-wise); NaN without frauds."""
    labels = _as_binary_labels(y_true)
    values = np.asarray(scores, dtype=np.float64).ravel()
    _check_lengths(labels, values)
    if labels.sum() == 0:
        return float("nan")
    return float(average_precision_score(labels, values))


def card_precision_top_k_per_day(
    days: Any,
    customers: Any,
    y_true: Any,
    scores: Any,
    k: int = 100,
    remove_detected_cards: bool = True,
) -> list[float]:
    """The handbook's card precision@k of each day, in day order (see module docstring)."""
    if k <= 0:
        raise ValueError("k must be positive")
    labels = _as_binary_labels(y_true)
    values = np.asarray(scores, dtype=np.float64).ravel()
    _check_lengths(labels, values)
    frame = pd.DataFrame(
        {"day": np.asarray(days), "customer": np.asarray(customers), "label": labels, "score": values}
    )
    detected: set[Any] = set()
    per_day: list[float] = []
    for _, day_frame in frame.groupby("day", sort=True):
        if detected:
            day_frame = day_frame[~day_frame["customer"].isin(detected)]
        cards = day_frame.groupby("customer", sort=True).agg(score=("score", "max"), label=("label", "max"))
        # A stable sort on the card id breaks score ties the same way on every run.
        top = cards.sort_values("score", ascending=False, kind="mergesort").head(k)
        compromised = top.index[top["label"] == 1]
        per_day.append(len(compromised) / k)
        if remove_detected_cards:
            detected.update(compromised.tolist())
    return per_day


def card_precision_top_k(
    days: Any,
    customers: Any,
    y_true: Any,
    scores: Any,
    k: int = 100,
    remove_detected_cards: bool = True,
) -> float:
    """Mean over days of the handbook's daily card precision@k; NaN for an empty input."""
    per_day = card_precision_top_k_per_day(days, customers, y_true, scores, k, remove_detected_cards)
    return float(np.mean(per_day)) if per_day else float("nan")


def recall_at_alert_budget(y_true: Any, scores: Any, budget: float | int) -> float:
    """Share of frauds among the `budget` highest-scoring transactions.

    `budget` is a count of alerts when it is an int >= 1, or a share of all transactions when it
    is a float in (0, 1) (rounded up, so a non-zero share never means zero alerts).
    """
    labels = _as_binary_labels(y_true)
    values = np.asarray(scores, dtype=np.float64).ravel()
    _check_lengths(labels, values)
    if isinstance(budget, float) and 0.0 < budget < 1.0:
        alerts = int(np.ceil(budget * labels.shape[0]))
    elif float(budget) >= 1 and float(budget) == int(budget):
        alerts = int(budget)
    else:
        raise ValueError("budget must be an int >= 1 or a float share in (0, 1)")
    frauds = int(labels.sum())
    if frauds == 0:
        return float("nan")
    order = np.argsort(-values, kind="mergesort")
    return float(labels[order[:alerts]].sum() / frauds)


def fraud_metrics(
    y_true: Any,
    scores: Any,
    *,
    days: Sequence[Any] | np.ndarray | None = None,
    customers: Sequence[Any] | np.ndarray | None = None,
    k: int = 100,
    alert_budget: float | int = 0.01,
) -> dict[str, float | int]:
    """All the metrics of one scored set, as a JSON-safe dict (NaN becomes None)."""
    labels = _as_binary_labels(y_true)
    result: dict[str, Any] = {
        "rows": int(labels.shape[0]),
        "frauds": int(labels.sum()),
        "auc_roc": auc_roc(labels, scores),
        "average_precision": average_precision(labels, scores),
        # Keys never embed the budget value: a "." in a key is a path separator in MongoDB queries.
        "alert_budget": alert_budget,
        "recall_at_alert_budget": recall_at_alert_budget(labels, scores, alert_budget),
    }
    if days is not None and customers is not None:
        result[f"card_precision_at_{k}"] = card_precision_top_k(days, customers, labels, scores, k)
    return {key: (None if isinstance(v, float) and np.isnan(v) else v) for key, v in result.items()}
