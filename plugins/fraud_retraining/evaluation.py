"""Score models on one holdout and compare them: the gate's measurements.

The challenger and the champion are scored on the same rows (the run's test set), so the
comparison is between models, not between data sets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from fraud_retraining.gate import GateDecision, GatePolicy, decide
from fraud_retraining.metrics import fraud_metrics
from fraud_retraining.model_artifact import Scorer


def read_holdout(s3_client: Any, bucket: str, training_prefix: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The staged test set and its manifest (training/<run>/test.parquet, manifest.json)."""
    import io

    manifest = json.loads(
        s3_client.get_object(Bucket=bucket, Key=training_prefix + "manifest.json")["Body"].read()
    )
    body = s3_client.get_object(Bucket=bucket, Key=training_prefix + "test.parquet")["Body"].read()
    return pd.read_parquet(io.BytesIO(body)), manifest


def holdout_metrics(
    scorer: Scorer,
    holdout: pd.DataFrame,
    manifest: Mapping[str, Any],
    *,
    k: int = 100,
    alert_budget: float | int = 0.01,
) -> dict[str, Any]:
    """AUC ROC, average precision, card precision@k per day and recall at the alert budget."""
    missing = [name for name in scorer.feature_names if name not in holdout.columns]
    if missing:
        raise ValueError(f"holdout lacks the model's features {missing}")
    scores = scorer.predict_proba(holdout[list(scorer.feature_names)])
    days = pd.to_datetime(holdout[manifest["time"]], utc=True).dt.floor("D").to_numpy()
    return fraud_metrics(
        holdout[manifest["label"]].to_numpy(),
        np.asarray(scores),
        days=days,
        customers=holdout[manifest["customer"]].to_numpy(),
        k=k,
        alert_budget=alert_budget,
    )


def evaluate_challenger(
    challenger: Scorer,
    champion: Scorer | None,
    holdout: pd.DataFrame,
    manifest: Mapping[str, Any],
    *,
    train_frauds: int,
    policy: GatePolicy,
    k: int = 100,
    alert_budget: float | int = 0.01,
) -> GateDecision:
    """Both models on the same holdout, then the gate's rules."""
    mine = holdout_metrics(challenger, holdout, manifest, k=k, alert_budget=alert_budget)
    theirs = (
        holdout_metrics(champion, holdout, manifest, k=k, alert_budget=alert_budget)
        if champion is not None
        else None
    )
    return decide(mine, theirs, train_frauds=train_frauds, policy=policy)
