"""Local engine and the training operator end to end on a small staged set in the real S3 server."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from fraud_retraining.config import load_use_case
from fraud_retraining.engines import read_training_set
from fraud_retraining.engines.local import positive_class_weight, train_local
from fraud_retraining.metrics import average_precision
from fraud_retraining.model_artifact import load_model, load_model_from_s3
from fraud_retraining.registry import ModelRegistry

FEATURES = ["amount", "customer_nb_tx_1d", "customer_mean_amount_7d", "terminal_risk_7d", "is_night"]
TRAINING_PREFIX = "training/scheduled__2026-12-03T00_00_00_00_00/"


def make_split(rng: np.random.Generator, rows: int, first_day: str, days: int) -> pd.DataFrame:
    """Synthetic staged rows: ~2 % fraud driven by amount, terminal risk and night-time."""
    X = rng.normal(size=(rows, len(FEATURES)))
    X[:, 4] = rng.random(rows) < 0.2
    logit = -5.2 + 1.6 * X[:, 0] + 1.2 * X[:, 3] + 1.0 * X[:, 4]
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int8")
    frame = pd.DataFrame(X, columns=FEATURES)
    start = pd.Timestamp(first_day, tz="UTC")
    frame.insert(
        0, "tx_datetime", start + pd.to_timedelta(np.sort(rng.integers(0, days * 86400, rows)), unit="s")
    )
    frame.insert(0, "tx_id", [f"{first_day}-{i}" for i in range(rows)])
    frame["customer_id"] = rng.integers(0, 800, rows)
    frame["terminal_id"] = rng.integers(0, 300, rows)
    frame["is_fraud"] = label
    return frame


def make_staged_set(seed: int = 3, train_rows: int = 6000) -> tuple[dict, dict[str, pd.DataFrame]]:
    rng = np.random.default_rng(seed)
    frames = {
        "train": make_split(rng, train_rows, "2026-11-01", 14),
        "valid": make_split(rng, 2500, "2026-11-22", 5),
        "test": make_split(rng, 2500, "2026-12-04", 5),
    }
    manifest = {
        "features": FEATURES,
        "label": "is_fraud",
        "id": "tx_id",
        "time": "tx_datetime",
        "customer": "customer_id",
        "window": {"start": "2026-11-01", "end": "2026-12-09"},
        "rows": {name: len(frame) for name, frame in frames.items()},
        "frauds": {name: int(frame["is_fraud"].sum()) for name, frame in frames.items()},
        "data_hash": "sha256:test",
    }
    return manifest, frames


def upload_staged_set(s3_client, bucket: str, prefix: str, manifest: dict, frames: dict) -> None:
    for name, frame in frames.items():
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        s3_client.put_object(Bucket=bucket, Key=f"{prefix}{name}.parquet", Body=buffer.getvalue())
    s3_client.put_object(Bucket=bucket, Key=f"{prefix}manifest.json", Body=json.dumps(manifest).encode())


def fake_context(run_id: str = "scheduled__2026-12-03T00:00:00+00:00") -> dict:
    start, end = datetime(2026, 12, 3, tzinfo=UTC), datetime(2026, 12, 4, tzinfo=UTC)
    return {
        "dag": SimpleNamespace(dag_id="fraud_model_retraining"),
        "dag_run": SimpleNamespace(run_id=run_id, run_after=end),
        "run_id": run_id,
        "data_interval_start": start,
        "data_interval_end": end,
        "logical_date": start,
    }


@pytest.fixture
def staged(s3_client, s3_bucket) -> tuple[str, dict, dict]:
    manifest, frames = make_staged_set()
    upload_staged_set(s3_client, s3_bucket, TRAINING_PREFIX, manifest, frames)
    return s3_bucket, manifest, frames


def test_positive_class_weight() -> None:
    assert positive_class_weight(np.array([1] + [0] * 99)) == pytest.approx(np.sqrt(99))
    assert positive_class_weight(np.array([1, 1, 0])) == 1.0
    with pytest.raises(ValueError, match="no positive"):
        positive_class_weight(np.zeros(5))


def test_read_training_set_checks_manifest_columns(s3_client, staged) -> None:
    bucket, manifest, frames = staged
    training_set = read_training_set(s3_client, bucket, TRAINING_PREFIX)
    assert training_set.features == FEATURES
    assert len(training_set.train) == len(frames["train"])
    s3_client.put_object(
        Bucket=bucket,
        Key=f"{TRAINING_PREFIX}manifest.json",
        Body=json.dumps({**manifest, "features": [*FEATURES, "not_staged"]}).encode(),
    )
    with pytest.raises(ValueError, match="not_staged"):
        read_training_set(s3_client, bucket, TRAINING_PREFIX)


def test_train_local_learns_records_and_reloads_identically(s3_client, staged) -> None:
    bucket, _, _ = staged
    training_set = read_training_set(s3_client, bucket, TRAINING_PREFIX)
    budget = 8.0
    result = train_local(training_set, version="v-local", time_budget_s=budget, seed=1)

    # FLAML stops at its wall-clock budget; the margin covers the last trial and the evaluation.
    assert result.elapsed_s < budget + 30
    assert result.leaderboard, "no trial recorded"
    assert {"estimator", "config", "validation_average_precision", "fit_seconds"} <= set(
        result.leaderboard[0]
    )
    assert result.leaderboard[0]["validation_average_precision"] == pytest.approx(
        result.metrics["valid"]["average_precision"]
    )
    # The signal is learnable: far above the ~2 % base rate, and the ranking is good.
    assert result.metrics["test"]["average_precision"] > 0.15
    assert result.metrics["test"]["auc_roc"] > 0.8
    assert set(result.metrics["test"]) >= {"card_precision_at_100", "recall_at_alert_budget", "alert_budget"}

    scorer = load_model(result.files)
    X_test, y_test = training_set.matrix("test")
    scores = scorer.predict_proba(training_set.test)
    np.testing.assert_array_equal(scores, scorer.predict_proba(X_test))
    assert average_precision(y_test, scores) == result.metrics["test"]["average_precision"]
    importance = json.loads(result.files["feature_importance.json"])
    assert next(iter(importance)) in {"amount", "terminal_risk_7d"}
    chosen = json.loads(result.files["chosen_config.json"])
    assert chosen["estimator"] == result.best_estimator


def test_train_local_is_reproducible_for_a_seed_and_trial_count(s3_client, staged) -> None:
    bucket, _, _ = staged
    training_set = read_training_set(s3_client, bucket, TRAINING_PREFIX)
    runs = [
        train_local(training_set, version="v", time_budget_s=60, seed=7, max_trials=6, estimators=("lgbm",))
        for _ in range(2)
    ]
    assert [t["config"] for t in runs[0].leaderboard] == [t["config"] for t in runs[1].leaderboard]
    scores = [load_model(r.files).predict_proba(training_set.test) for r in runs]
    np.testing.assert_array_equal(scores[0], scores[1])


def test_train_local_refuses_unportable_estimators(s3_client, staged) -> None:
    bucket, _, _ = staged
    training_set = read_training_set(s3_client, bucket, TRAINING_PREFIX)
    with pytest.raises(ValueError, match="rf"):
        train_local(training_set, version="v", estimators=("lgbm", "rf"))


def test_operator_trains_stores_and_registers_without_promoting(
    s3_client, staged, mongo_db, airflow_connections, tmp_path, use_case_config_file
) -> None:
    from fraud_retraining.operators.train import AutoMLTrainingOperator

    bucket, manifest, _ = staged
    config_path = use_case_config_file(database=mongo_db.name, bucket=bucket)
    operator = AutoMLTrainingOperator(
        task_id="automl_training",
        training_prefix=TRAINING_PREFIX,
        use_case_config=config_path,
        time_budget_s="6",  # templated Params arrive as strings
        max_trials=8,
        seed=5,
    )
    summary = operator.execute(fake_context())
    json.dumps(summary)  # XCom-safe
    assert summary["engine"] == "local"
    assert summary["artifact_prefix"] == f"models/card-fraud/{summary['version']}/"
    assert summary["metrics"]["test"]["average_precision"] > 0.15

    scorer = load_model_from_s3(s3_client, bucket, summary["artifact_prefix"])
    assert scorer.version == summary["version"]
    listed = {
        o["Key"]
        for o in s3_client.list_objects_v2(Bucket=bucket, Prefix=summary["artifact_prefix"])["Contents"]
    }
    for name in (
        "model.json",
        "leaderboard.json",
        "metrics.json",
        "feature_importance.json",
        "training_manifest.json",
    ):
        assert summary["artifact_prefix"] + name in listed

    cfg = load_use_case(config_path)
    registry = ModelRegistry(mongo_db[cfg.mongo.registry_collection], cfg.model_name)
    entry = registry.get(summary["version"])
    lineage = entry["lineage"]
    assert lineage["run_id"] == "scheduled__2026-12-03T00:00:00+00:00"
    assert lineage["data_interval"] == {
        "start": "2026-12-03T00:00:00+00:00",
        "end": "2026-12-04T00:00:00+00:00",
    }
    assert lineage["rows"] == manifest["rows"] and lineage["frauds"] == manifest["frauds"]
    assert lineage["data_hash"] == "sha256:test" and lineage["training_window"] == manifest["window"]
    assert lineage["budget_s"] == 6.0 and lineage["library_versions"]["flaml"]
    assert entry["artifact"]["keys"]
    assert registry.champion() is None  # the gate promotes, not the trainer

    # A retry of the same run writes the same version instead of a second one.
    again = operator.execute(fake_context())
    assert again["version"] == summary["version"]
    assert len(registry.list_versions()) == 1


def test_linear_only_search_ships_coefficients(s3_client, staged) -> None:
    bucket, _, _ = staged
    training_set = read_training_set(s3_client, bucket, TRAINING_PREFIX)
    result = train_local(training_set, version="v-lin", time_budget_s=30, max_trials=2, estimators=("lrl1",))
    scorer = load_model(result.files)
    assert scorer.kind == "linear"
    assert result.metrics["test"]["auc_roc"] > 0.8


def test_missing_feature_values_skip_the_linear_model(s3_client, s3_bucket) -> None:
    manifest, frames = make_staged_set(seed=11, train_rows=3000)
    for frame in frames.values():
        frame.loc[frame.index[::10], "customer_mean_amount_7d"] = np.nan  # e.g. no history yet
    upload_staged_set(s3_client, s3_bucket, TRAINING_PREFIX, manifest, frames)
    training_set = read_training_set(s3_client, s3_bucket, TRAINING_PREFIX)
    result = train_local(
        training_set, version="v-nan", time_budget_s=30, max_trials=3, estimators=("lrl1", "lgbm")
    )
    assert {trial["estimator"] for trial in result.leaderboard} == {"lgbm"}
    assert not np.isnan(load_model(result.files).predict_proba(training_set.test)).any()


def test_refit_on_valid_ships_a_model_that_saw_the_freshest_week(s3_client, staged) -> None:
    bucket, _, _ = staged
    training_set = read_training_set(s3_client, bucket, TRAINING_PREFIX)
    kwargs = {"version": "v", "time_budget_s": 60, "seed": 3, "max_trials": 3, "estimators": ("lgbm",)}
    plain = train_local(training_set, **kwargs)
    refit = train_local(training_set, refit_on_valid=True, **kwargs)
    assert json.loads(refit.files["chosen_config.json"])["refit_on"] == "train+valid"
    # Same search, so the same selection model and validation figures...
    assert refit.metrics["valid"] == plain.metrics["valid"]
    # ...but a different shipped model, and the test figures describe the shipped one.
    shipped = load_model(refit.files).predict_proba(training_set.test)
    assert not np.array_equal(shipped, load_model(plain.files).predict_proba(training_set.test))
    y_test = training_set.matrix("test")[1]
    assert average_precision(y_test, shipped) == refit.metrics["test"]["average_precision"]
