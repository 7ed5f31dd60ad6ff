"""Build a run's training set from the S3 raw zone only (never from MongoDB).

Split relative to `as_of` (the end of the DAG run's data interval), d = label delay:

    [train_start, train_end) | gap of d days | [valid_start, test_start) | [test_start, test_end)
    test_end = as_of - d            (labels of older transactions are (mostly) known by as_of)
    test_start = test_end - test_days, valid_start = test_start - valid_days
    train_end = valid_start - d,  train_start = train_end - training_window_days

A row's label is the one known by `as_of` (a fraud event, or the genuine confirmation); rows
whose label is not yet known are left out. Customers (cards) with a fraud known before
test_start are removed from the test set, as the handbook's protocol does. Features are computed
over the window plus `history_window` of look-back and with the labels known at each row's time.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from fraud_retraining.config import UseCaseConfig
from fraud_retraining.extract import read_partition_manifest
from fraud_retraining.features import FEATURE_COLUMNS, compute_features, history_window
from fraud_retraining.layout import raw_partition_prefix, training_prefix
from fraud_retraining.timeutil import as_utc


class StagingError(ValueError):
    """The window cannot give a usable training set; the message says why."""


def split_boundaries(
    as_of: datetime, label_delay_days: int, training_window_days: int, valid_days: int, test_days: int
) -> dict[str, datetime]:
    delay = timedelta(days=label_delay_days)
    test_end = as_of - delay
    test_start = test_end - timedelta(days=test_days)
    valid_start = test_start - timedelta(days=valid_days)
    train_end = valid_start - delay
    train_start = train_end - timedelta(days=training_window_days)
    return {
        "train_start": train_start,
        "train_end": train_end,
        "valid_start": valid_start,
        "test_start": test_start,
        "test_end": test_end,
    }


def read_raw(
    s3: Any, cfg: UseCaseConfig, dataset: str, first: datetime, last: datetime
) -> tuple[pd.DataFrame, list]:
    """Rows of the complete partitions of `dataset` whose day is in [first, last).

    Reads the manifest of each day in the window directly (one GET per day), not every
    manifest of the raw zone, so a run's cost does not grow with the history kept in S3.
    """
    frames, used = [], []
    day = first.replace(hour=0, minute=0, second=0, microsecond=0)
    while day < last:
        manifest = read_partition_manifest(s3, cfg.s3.bucket, raw_partition_prefix(cfg, dataset, day))
        day += timedelta(days=1)
        if manifest is None:  # not extracted yet, or a rerun is half-way: never read its parts
            continue
        used.append({"partition": f"{dataset}/{manifest['partition']}", "rows": manifest.get("rows")})
        for part in manifest.get("parts", []):
            body = s3.get_object(Bucket=cfg.s3.bucket, Key=part["key"])["Body"].read()
            frames.append(pd.read_parquet(io.BytesIO(body)))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return frame, used


def label_table(labels: pd.DataFrame, cfg: UseCaseConfig, as_of: datetime) -> pd.DataFrame:
    """The label of each transaction as known by as_of (the latest event before it)."""
    f = cfg.fields
    if labels.empty:
        return pd.DataFrame(columns=[f.id, f.label, f.labeled_at])
    known = labels[pd.to_datetime(labels[f.labeled_at], utc=True) <= as_of]
    return known.sort_values(f.labeled_at).drop_duplicates(f.id, keep="last")[[f.id, f.label, f.labeled_at]]


def build_training_set(
    transactions: pd.DataFrame,
    labels: pd.DataFrame,
    cfg: UseCaseConfig,
    as_of: datetime,
    *,
    training_window_days: int = 56,
    valid_days: int = 7,
    test_days: int = 7,
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Features, known labels and the time split; returns the three frames and the boundaries."""
    f = cfg.fields
    bounds = split_boundaries(as_of, cfg.label_delay_days, training_window_days, valid_days, test_days)
    if transactions.empty:
        raise StagingError(f"no raw transactions before {as_of.isoformat()}; extract the window first")
    labels_known = label_table(labels, cfg, as_of)
    featured = compute_features(transactions, labels_known, cfg)
    featured = featured.merge(labels_known[[f.id, f.label, f.labeled_at]], on=f.id, how="inner")
    when = pd.to_datetime(featured[f.time], utc=True)
    splits = {
        "train": featured[(when >= bounds["train_start"]) & (when < bounds["train_end"])],
        "valid": featured[(when >= bounds["valid_start"]) & (when < bounds["test_start"])],
        "test": featured[(when >= bounds["test_start"]) & (when < bounds["test_end"])],
    }
    known_compromised = labels_known[
        (labels_known[f.label] == 1)
        & (pd.to_datetime(labels_known[f.labeled_at], utc=True) < bounds["test_start"])
    ][f.id]
    compromised_cards = set(featured.loc[featured[f.id].isin(known_compromised), f.customer])
    test = splits["test"]
    splits["test"] = test[~test[f.customer].isin(compromised_cards)]
    splits = {
        name: frame.drop(columns=[f.labeled_at]).reset_index(drop=True) for name, frame in splits.items()
    }
    return splits, {"bounds": bounds, "removed_known_compromised_cards": len(compromised_cards)}


def _data_hash(splits: dict[str, pd.DataFrame], cfg: UseCaseConfig) -> str:
    digest = hashlib.sha256()
    for name in ("train", "valid", "test"):
        frame = splits[name].sort_values(cfg.fields.id)
        digest.update(name.encode())
        digest.update(
            pd.util.hash_pandas_object(frame[[cfg.fields.id, cfg.fields.label]], index=False)
            .to_numpy()
            .tobytes()
        )
    return digest.hexdigest()


def stage_training_set(
    s3: Any,
    cfg: UseCaseConfig,
    as_of: datetime | str,
    run_key: str,
    *,
    training_window_days: int = 56,
    valid_days: int = 7,
    test_days: int = 7,
    min_train_frauds: int = 1,
) -> dict[str, Any]:
    """Read raw partitions, build and write training/<run_key>/{train,valid,test}.parquet + manifest."""
    as_of = as_utc(as_of)
    bounds = split_boundaries(as_of, cfg.label_delay_days, training_window_days, valid_days, test_days)
    first = bounds["train_start"] - history_window(cfg)
    transactions, tx_parts = read_raw(s3, cfg, "transactions", first, as_of)
    labels, label_parts = read_raw(s3, cfg, "labels", first, as_of + timedelta(days=1))
    splits, info = build_training_set(
        transactions,
        labels,
        cfg,
        as_of,
        training_window_days=training_window_days,
        valid_days=valid_days,
        test_days=test_days,
    )
    f = cfg.fields
    frauds = {name: int(frame[f.label].sum()) for name, frame in splits.items()}
    rows = {name: len(frame) for name, frame in splits.items()}
    if rows["train"] == 0 or frauds["train"] < min_train_frauds:
        raise StagingError(
            f"training window {bounds['train_start']:%Y-%m-%d}..{bounds['train_end']:%Y-%m-%d} has "
            f"{rows['train']} labelled rows and {frauds['train']} frauds (need >= {min_train_frauds})"
        )
    prefix = training_prefix(cfg, run_key)
    keys = {}
    for name, frame in splits.items():
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False, compression="zstd")
        keys[name] = prefix + f"{name}.parquet"
        s3.put_object(Bucket=cfg.s3.bucket, Key=keys[name], Body=buffer.getvalue())
    manifest = {
        "as_of": as_of.isoformat(),
        "window": {name: value.isoformat() for name, value in bounds.items()},
        "rows": rows,
        "frauds": frauds,
        "features": FEATURE_COLUMNS,
        "label": f.label,
        "id": f.id,
        "time": f.time,
        "customer": f.customer,
        "terminal": f.terminal,
        "data_hash": _data_hash(splits, cfg),
        "removed_known_compromised_cards": info["removed_known_compromised_cards"],
        "source_partitions": tx_parts + label_parts,
        "keys": keys,
    }
    # The manifest last: a reader that finds it finds the three files too.
    s3.put_object(
        Bucket=cfg.s3.bucket, Key=prefix + "manifest.json", Body=json.dumps(manifest, indent=2).encode()
    )
    return {
        "training_prefix": prefix,
        "rows": rows,
        "frauds": frauds,
        "window": manifest["window"],
        "data_hash": manifest["data_hash"],
        "source_partitions": len(manifest["source_partitions"]),
    }
