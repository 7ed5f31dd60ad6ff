"""Seed simulated transactions into MongoDB the way a bank's system would have written them.

A transaction is written unlabelled; its label (`is_fraud`, `labeled_at`, and the simulator's
scenario) is written by a later update once known. For bulk historical seeding the labels that
are already due at `as_of` are written with the insert itself: the end state is identical to an
insert followed by an update, at half the round trips. `apply_due_labels` does the later update.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from fraud_retraining.config import UseCaseConfig
from fraud_retraining.storage import ensure_transaction_indexes

DUPLICATE_KEY = 11000
MALFORMED_KINDS = (
    "missing_field",
    "wrong_type",
    "nan_amount",
    "negative_amount",
    "future_timestamp",
    "duplicate_id",
    "oversized",
)
OVERSIZED_BYTES = 1_100_000


def _label_fields(cfg: UseCaseConfig) -> list[str]:
    f = cfg.fields
    return [name for name in (f.label, f.labeled_at, f.scenario) if name]


def transaction_documents(
    frame: pd.DataFrame, cfg: UseCaseConfig, as_of: datetime
) -> Iterator[dict[str, Any]]:
    """Documents as MongoDB stores them: label fields only where the label is due at `as_of`."""
    f = cfg.fields
    due = (frame[f.labeled_at] <= pd.Timestamp(as_of)).to_numpy()
    ids = frame[f.id].to_numpy(dtype=object)
    times = frame[f.time].dt.to_pydatetime()
    customers = frame[f.customer].to_numpy().tolist()
    terminals = frame[f.terminal].to_numpy().tolist()
    amounts = frame[f.amount].to_numpy().tolist()
    labels = frame[f.label].to_numpy().tolist()
    labeled = frame[f.labeled_at].dt.to_pydatetime()
    scenarios = frame[f.scenario].to_numpy().tolist() if f.scenario else None
    for i in range(len(frame)):
        doc = {
            f.id: ids[i],
            f.time: times[i],
            f.customer: customers[i],
            f.terminal: terminals[i],
            f.amount: amounts[i],
        }
        if due[i]:
            doc[f.label] = labels[i]
            doc[f.labeled_at] = labeled[i]
            if scenarios is not None:
                doc[f.scenario] = scenarios[i]
        yield doc


def malformed_documents(
    frame: pd.DataFrame, cfg: UseCaseConfig, share: float, seed: int, now: datetime
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """`share` of len(frame) malformed documents, spread evenly over the kinds, with ids
    "bad-<kind>-<n>" (duplicate_id reuses a real id). Deterministic for a seed."""
    total = math.floor(len(frame) * share)
    if total <= 0 or len(frame) == 0:
        return [], {}
    f = cfg.fields
    rng = np.random.default_rng(seed + 7919)
    rows = rng.integers(0, len(frame), total)
    docs, counts = [], dict.fromkeys(MALFORMED_KINDS, 0)
    for n, row in enumerate(rows):
        kind = MALFORMED_KINDS[n % len(MALFORMED_KINDS)]
        source = frame.iloc[int(row)]
        doc = {
            f.id: f"bad-{kind}-{seed}-{n:06d}",
            f.time: source[f.time].to_pydatetime(),
            f.customer: int(source[f.customer]),
            f.terminal: int(source[f.terminal]),
            f.amount: float(source[f.amount]),
        }
        if kind == "missing_field":
            del doc[f.customer]
        elif kind == "wrong_type":
            doc[f.amount] = f"{source[f.amount]:.2f} EUR"
        elif kind == "nan_amount":
            doc[f.amount] = float("nan")
        elif kind == "negative_amount":
            doc[f.amount] = -abs(float(source[f.amount])) - 0.01
        elif kind == "future_timestamp":
            doc[f.time] = now + timedelta(days=int(rng.integers(30, 400)))
        elif kind == "duplicate_id":
            doc[f.id] = str(source[f.id])
        elif kind == "oversized":
            doc["note"] = "x" * OVERSIZED_BYTES
        docs.append(doc)
        counts[kind] += 1
    return docs, {k: v for k, v in counts.items() if v}


def _insert_batches(
    collection: Collection,
    documents: Iterator[dict[str, Any]],
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Unordered bulk inserts; duplicate keys (a re-run) are skipped, anything else raises."""
    inserted = duplicates = 0
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal inserted, duplicates, batch
        if not batch:
            return
        try:
            result = collection.insert_many(batch, ordered=False)
            inserted += len(result.inserted_ids)
        except BulkWriteError as err:
            errors = err.details.get("writeErrors", [])
            other = [e for e in errors if e.get("code") != DUPLICATE_KEY]
            if other:
                raise
            duplicates += len(errors)
            inserted += err.details.get("nInserted", 0)
        if on_batch:
            on_batch(len(batch))
        batch = []

    for doc in documents:
        batch.append(doc)
        if len(batch) >= batch_size:
            flush()
    flush()
    return inserted, duplicates


def seed(
    collection: Collection,
    frame: pd.DataFrame,
    cfg: UseCaseConfig,
    *,
    as_of: datetime,
    malformed_share: float = 0.0,
    seed_value: int = 0,
    batch_size: int = 5_000,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Insert `frame` (idempotent), labels due at `as_of` included; then malformed documents."""
    started = time.monotonic()
    # Into a fresh collection (no documents, no indexes yet) we bulk-load first and build the
    # indexes once afterwards: maintaining five indexes per insert makes the embedded server ~2x
    # slower, and a fresh load cannot collide (simulated ids are unique). Otherwise the unique id
    # index must exist first, since it is what makes a re-run skip instead of duplicate.
    fresh = collection.find_one({}, {"_id": 1}) is None and set(collection.index_information()) <= {"_id_"}
    if not fresh:
        ensure_transaction_indexes(collection, cfg.fields)
    inserted, skipped = _insert_batches(
        collection, transaction_documents(frame, cfg, as_of), batch_size, progress
    )
    if fresh:
        ensure_transaction_indexes(collection, cfg.fields)
    # A re-run with a later as_of skips the existing documents; their newly due labels still land.
    labels_applied = apply_due_labels(collection, frame, cfg, as_of) if skipped else 0
    bad_docs, bad_counts = malformed_documents(frame, cfg, malformed_share, seed_value, as_of)
    rejected_by_index = 0
    if bad_docs:
        _, bad_dupes = _insert_batches(collection, iter(bad_docs), 200)
        # duplicate_id documents reuse a real id: the unique index refuses them (and re-runs of
        # the others are duplicates too), which is MongoDB guarding the id, counted here.
        rejected_by_index = bad_dupes
    seconds = time.monotonic() - started
    f = cfg.fields
    due = frame[f.labeled_at] <= pd.Timestamp(as_of)
    frauds = frame[frame[f.label] == 1]
    return {
        "rows": len(frame),
        "inserted": inserted,
        "skipped_duplicates": skipped,
        "labels_applied_to_existing": labels_applied,
        "frauds": len(frauds),
        "frauds_by_scenario": (
            {int(k): int(v) for k, v in frauds[f.scenario].value_counts().sort_index().items()}
            if f.scenario
            else {}
        ),
        "labelled_share": float(due.mean()) if len(frame) else 0.0,
        "malformed_by_kind": bad_counts,
        "malformed_rejected_by_unique_index": rejected_by_index if bad_docs else 0,
        "seconds": round(seconds, 2),
        "rows_per_second": round(len(frame) / seconds, 1) if seconds else None,
    }


def apply_due_labels(collection: Collection, frame: pd.DataFrame, cfg: UseCaseConfig, as_of: datetime) -> int:
    """Write the labels that are known by `as_of` onto documents that do not carry one yet."""
    f = cfg.fields
    due = frame[frame[f.labeled_at] <= pd.Timestamp(as_of)]
    ops = []
    for row in due.itertuples(index=False):
        values = {
            f.label: int(getattr(row, f.label)),
            f.labeled_at: getattr(row, f.labeled_at).to_pydatetime(),
        }
        if f.scenario:
            values[f.scenario] = int(getattr(row, f.scenario))
        ops.append(UpdateOne({f.id: getattr(row, f.id), f.label: {"$exists": False}}, {"$set": values}))
    updated = 0
    for start in range(0, len(ops), 5_000):
        result = collection.bulk_write(ops[start : start + 5_000], ordered=False)
        updated += result.modified_count
    return updated


def summary_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, default=str)
