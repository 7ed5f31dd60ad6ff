"""The portable artifact: every supported model kind reloads and scores identically."""

from __future__ import annotations

import json

import lightgbm
import numpy as np
import pandas as pd
import pytest
import xgboost
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from fraud_retraining.model_artifact import (
    ARTIFACT_FORMAT,
    METADATA_FILE,
    load_model,
    load_model_from_s3,
    pack_model,
    serialize_model,
    write_model_dir,
)
from fraud_retraining.registry import store_artifact_files

FEATURES = ["amount", "customer_mean_7d", "terminal_risk_7d", "is_night"]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(2000, len(FEATURES)))
    y = (rng.random(2000) < 1 / (1 + np.exp(-(-3 + 2 * X[:, 0] + X[:, 2])))).astype(int)
    return X, y


def _fitted(kind: str, X: np.ndarray, y: np.ndarray):
    if kind == "lightgbm":
        return lightgbm.LGBMClassifier(n_estimators=30, num_leaves=8, verbose=-1).fit(X, y)
    if kind == "xgboost":
        return xgboost.XGBClassifier(n_estimators=30, max_depth=3, n_jobs=1).fit(X, y)
    return LogisticRegression(C=0.5).fit(X, y)


@pytest.mark.parametrize("kind", ["lightgbm", "xgboost", "linear"])
def test_reloaded_model_scores_like_the_fitted_one(kind: str, data, tmp_path) -> None:
    X, y = data
    estimator = _fitted(kind, X, y)
    files = serialize_model(estimator, FEATURES, "v-test", extra_metadata={"engine": "unit"})
    expected = estimator.predict_proba(X)[:, 1]

    for source in (files, pack_model(files), write_model_dir(files, tmp_path / kind)):
        scorer = load_model(source)
        assert scorer.kind == kind
        assert scorer.version == "v-test"
        assert scorer.feature_names == FEATURES
        scores = scorer.predict_proba(X)
        assert scores.shape == (X.shape[0],)
        if kind == "linear":
            # Same formula as scikit-learn, summed in a different order: equal to rounding.
            np.testing.assert_allclose(scores, expected, rtol=1e-12, atol=1e-15)
        else:
            np.testing.assert_array_equal(scores, expected)


def test_dataframe_input_is_reordered_by_feature_names(data) -> None:
    X, y = data
    scorer = load_model(serialize_model(_fitted("lightgbm", X, y), FEATURES, "v1"))
    frame = pd.DataFrame(X, columns=FEATURES)
    shuffled = frame[list(reversed(FEATURES))].assign(tx_id="ignored")
    np.testing.assert_array_equal(scorer.predict_proba(shuffled), scorer.predict_proba(X))
    with pytest.raises(KeyError, match="is_night"):
        scorer.predict_proba(frame.drop(columns=["is_night"]))
    with pytest.raises(ValueError, match="expected 4 feature columns"):
        scorer.predict_proba(X[:, :3])


def test_metadata_and_importance(data) -> None:
    X, y = data
    files = serialize_model(_fitted("xgboost", X, y), FEATURES, "v2", extra_metadata={"engine": "unit"})
    metadata = json.loads(files[METADATA_FILE])
    assert metadata["format"] == ARTIFACT_FORMAT and metadata["engine"] == "unit"
    importance = load_model(files).feature_importance()
    assert set(importance) == set(FEATURES)
    # The label was built from features 0 and 2: they must dominate the noise features.
    assert min(importance["amount"], importance["terminal_risk_7d"]) > max(
        importance["customer_mean_7d"], importance["is_night"]
    )


def test_unportable_models_and_foreign_formats_are_refused(data) -> None:
    X, y = data
    with pytest.raises(TypeError, match="no portable format"):
        serialize_model(RandomForestClassifier(n_estimators=2).fit(X, y), FEATURES, "v")
    foreign = {METADATA_FILE: json.dumps({"format": "sagemaker-autopilot", "kind": "autopilot"}).encode()}
    with pytest.raises(ValueError, match="SageMaker endpoint"):
        load_model(foreign)


def test_load_from_s3(data, s3_client, s3_bucket) -> None:
    X, y = data
    estimator = _fitted("lightgbm", X, y)
    files = serialize_model(estimator, FEATURES, "v3")
    keys = store_artifact_files(s3_client, s3_bucket, "models/card-fraud/v3", files)
    assert keys[-1] == "models/card-fraud/v3/model.json"
    scorer = load_model_from_s3(s3_client, s3_bucket, "models/card-fraud/v3/")
    np.testing.assert_array_equal(scorer.predict_proba(X), estimator.predict_proba(X)[:, 1])
