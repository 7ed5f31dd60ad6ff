"""Extract one data interval from MongoDB into the S3 raw zone as Parquet, streaming.

Two raw datasets per interval [start, end):

* ``transactions``: documents whose time field is in [start, end), WITHOUT the label,
  labeled_at and scenario fields (a transaction row never carries a label it did not have
  at its own time).
* ``labels``: label events, i.e. documents whose labeled_at is in [start, end), with columns
  id, label, labeled_at (and scenario if configured). Late labels reach the raw zone in the
  interval in which they became known, so a rerun of an interval yields the same rows whatever
  labels arrived since, and nothing has to re-read a "label window".

Keys come from ``layout.py``: ``raw/<dataset>/dt=YYYY-MM-DD/part-NNNNN.parquet`` (one part per
slice) and ``quarantine/<dataset>/dt=.../part-NNNNN.parquet``. The partition is named by the
interval START day; intervals must therefore start at 00:00 UTC (daily or multi-day intervals),
because two sub-daily intervals of one day would otherwise overwrite each other's parts.

Streaming: one cursor per dataset with ``batch_size``; each bounded batch is validated, turned
into one Arrow RecordBatch with the explicit schema from ``cfg.schema`` and written through a
``ParquetWriter`` into a temporary FILE (disk, not memory), uploaded at the end with boto3's
multipart transfer (8 MiB parts, 2 threads). Memory is bounded by the batch size, not the
interval. One exception, documented: without a unique index on the id field the duplicate-id
check keeps a sorted array of 8-byte id hashes (8 bytes per row); with the unique index of
``storage.py`` duplicates cannot exist and nothing is kept.

Completeness: parts are written first, then a per-slice manifest ``_slices/part-NNNNN.json``,
then the slice that finds all ``n_slices`` slice manifests deletes stale parts of a previous run
(e.g. when the slice count changed) and writes ``_manifest.json`` LAST. A run deletes
``_manifest.json`` and its own slice manifest before writing, so a half-written partition never
looks finished. Readers trust only partitions with a manifest (``list_complete_partitions``)
and read the part keys it lists. Residual race, accepted: if one slice of a rerun finishes
before another slice of the same rerun has even started, the partition is briefly complete with
that slice's previous (valid, consistent) part until the late slice rewrites the manifest.

Read consistency: all reads of a slice run in ONE snapshot session
(``start_session(snapshot=True)``, readConcern "snapshot", supported by replica sets, Atlas and
SecantusDB). A cursor then sees the data as of one cluster time, so documents inserted or
labeled while the extract runs are either fully in or out and counted once; a plain cursor can
see concurrent writes part-way (a document moved by an update can come back twice or not at
all). On MongoDB the later reads of the session reuse the first read's atClusterTime, so
transactions and labels also agree with each other. Measured caveat: SecantusDB answers the
later reads at a fresh cluster time (it ignores atClusterTime), so there each dataset is a
consistent snapshot on its own. Snapshot reads are bounded by the server's snapshot history
window (300 s by default on MongoDB): slice big intervals so each slice finishes inside it.

Validation per document (never crashes the run, nothing vanishes): missing required field,
wrong type, NaN/inf float, negative amount, time outside the interval or in the future relative
to the extraction, oversized document, duplicate id within the slice. Rejected documents go to
the quarantine part with columns (id, reason, document as relaxed JSON truncated). Documents
whose time (or labeled_at) is present but not a BSON date never match a date-range query, so
``sweep_strays`` finds them by their ``_id`` ObjectId insert time in [start, end) and
quarantines them in ``strays.parquet`` of the quarantine partition. The sweep is its own
function (and its own DAG task, running beside the mapped extract slices) because it cannot be
answered from the time index: it costs a pass over the interval's documents (on SecantusDB
about half a cursor drain, measured in bench/bench_extract.py), which would otherwise sit on
the critical path of every slice.
Arrow arrays are built from numpy buffers (``column_to_arrow``), not ``pa.array(list)``, which
would import pandas into the worker (+50 MB resident) on first use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import queue
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from boto3.s3.transfer import TransferConfig
from bson import ObjectId
from bson import decode as bson_decode
from bson.codec_options import CodecOptions
from bson.json_util import RELAXED_JSON_OPTIONS, dumps
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING, MongoClient

from fraud_retraining.config import UseCaseConfig
from fraud_retraining.layout import (
    part_name,
    quarantine_partition_prefix,
    raw_partition_prefix,
)
from fraud_retraining.storage import read_json
from fraud_retraining.timeutil import as_utc

log = logging.getLogger(__name__)

MANIFEST_NAME = "_manifest.json"
SLICE_MANIFEST_DIR = "_slices/"
DEFAULT_BATCH_SIZE = 5000
DEFAULT_MAX_DOCUMENT_BYTES = 16 * 1024
QUARANTINE_JSON_LIMIT = 4096
COMPRESSION = "zstd"
MULTIPART_CHUNK_BYTES = 8 * 1024 * 1024

# Quarantine reasons (a closed set so dashboards can count them).
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
NOT_FINITE = "not_finite"
NEGATIVE_AMOUNT = "negative_amount"
OUT_OF_RANGE = "out_of_range"
OUTSIDE_INTERVAL = "outside_interval"
FUTURE_TIME = "future_time"
OVERSIZED = "oversized_document"
DUPLICATE_ID = "duplicate_id"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_DICT_CODEC = CodecOptions(tz_aware=True, tzinfo=UTC)
QUARANTINE_SCHEMA = pa.schema([("id", pa.string()), ("reason", pa.string()), ("document", pa.string())])
BatchObserver = Callable[[str, int], None]


# ------------------------------------------------------------------ schema


def arrow_type(spec: str) -> pa.DataType:
    """Arrow type of a config type string such as "int64" or "timestamp[ms, UTC]"."""
    text = spec.strip()
    if text.startswith("timestamp[") and text.endswith("]"):
        unit, _, tz = (part.strip() for part in text[len("timestamp[") : -1].partition(","))
        return pa.timestamp(unit, tz=tz or None)
    simple = {
        "string": pa.string(),
        "int64": pa.int64(),
        "int32": pa.int32(),
        "int16": pa.int16(),
        "int8": pa.int8(),
        "float64": pa.float64(),
        "float32": pa.float32(),
        "bool": pa.bool_(),
    }
    if text not in simple:
        raise ValueError(f"unsupported schema type {spec!r}")
    return simple[text]


def dataset_columns(cfg: UseCaseConfig, dataset: str) -> list[str]:
    """Columns of a raw dataset, in schema order."""
    f = cfg.fields
    label_only = {f.label, f.labeled_at} | ({f.scenario} if f.scenario else set())
    if dataset == "transactions":
        return [name for name in cfg.schema if name not in label_only]
    if dataset == "labels":
        wanted = [f.id, f.label, f.labeled_at] + ([f.scenario] if f.scenario else [])
        return [name for name in wanted if name in cfg.schema]
    raise ValueError(f"unknown raw dataset {dataset!r}")


def dataset_schema(cfg: UseCaseConfig, dataset: str) -> pa.Schema:
    required = set(_required_fields(cfg, dataset))
    return pa.schema(
        [
            pa.field(name, arrow_type(cfg.schema[name]), nullable=name not in required)
            for name in dataset_columns(cfg, dataset)
        ]
    )


def _required_fields(cfg: UseCaseConfig, dataset: str) -> list[str]:
    f = cfg.fields
    if dataset == "transactions":
        return [f.id, f.time, f.customer, f.terminal, f.amount]
    return [f.id, f.label, f.labeled_at]


# ------------------------------------------------------------------ intervals and slices


def _bson_ms(value: datetime) -> datetime:
    """BSON dates have millisecond precision; bounds must be truncated the same way."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def plan_slices(start: datetime | str, end: datetime | str, n: int) -> list[dict[str, Any]]:
    """Split [start, end) into n contiguous time slices (millisecond-aligned, ISO strings)."""
    lo, hi = as_utc(start), as_utc(end)
    if n < 1:
        raise ValueError("n must be >= 1")
    if hi <= lo:
        raise ValueError(f"empty or reversed interval [{lo.isoformat()}, {hi.isoformat()})")
    total_ms = (hi - lo) // timedelta(milliseconds=1)
    bounds = [lo + timedelta(milliseconds=total_ms * i // n) for i in range(n)] + [hi]
    return [
        {"slice_index": i, "n_slices": n, "start": bounds[i].isoformat(), "end": bounds[i + 1].isoformat()}
        for i in range(n)
    ]


# ------------------------------------------------------------------ validation


@dataclass
class _FieldRule:
    name: str
    kind: str  # "string" | "int" | "float" | "timestamp" | "bool"
    required: bool
    lo: int | None = None
    hi: int | None = None


def _rules(cfg: UseCaseConfig, dataset: str) -> list[_FieldRule]:
    required = set(_required_fields(cfg, dataset))
    rules = []
    for name in dataset_columns(cfg, dataset):
        typ = arrow_type(cfg.schema[name])
        if pa.types.is_string(typ):
            rule = _FieldRule(name, "string", name in required)
        elif pa.types.is_integer(typ):
            bits = typ.bit_width
            rule = _FieldRule(name, "int", name in required, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        elif pa.types.is_floating(typ):
            rule = _FieldRule(name, "float", name in required)
        elif pa.types.is_timestamp(typ):
            rule = _FieldRule(name, "timestamp", name in required)
        elif pa.types.is_boolean(typ):
            rule = _FieldRule(name, "bool", name in required)
        else:  # pragma: no cover - arrow_type only returns the kinds above
            raise ValueError(f"no validation rule for {typ}")
        rules.append(rule)
    return rules


def _check_value(rule: _FieldRule, value: Any) -> tuple[Any, str | None]:
    """(value to write, None) or (None, reason)."""
    kind = rule.kind
    if kind == "string":
        return (value, None) if isinstance(value, str) else (None, WRONG_TYPE)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return None, WRONG_TYPE
        if not rule.lo <= value <= rule.hi:  # type: ignore[operator]
            return None, OUT_OF_RANGE
        return value, None
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, WRONG_TYPE
        if not math.isfinite(value):
            return None, NOT_FINITE
        return float(value), None
    if kind == "timestamp":
        if not isinstance(value, datetime):
            return None, WRONG_TYPE
        # Epoch milliseconds (BSON's own precision): building Arrow timestamps from ints skips
        # pyarrow's datetime path, which imports pandas and is several times slower.
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return (aware - _EPOCH) // _ONE_MS, None
    if isinstance(value, bool):
        return value, None
    return None, WRONG_TYPE


_NUMPY_DTYPES = {
    pa.int8(): np.int8,
    pa.int16(): np.int16,
    pa.int32(): np.int32,
    pa.int64(): np.int64,
    pa.float32(): np.float32,
    pa.float64(): np.float64,
}


def column_to_arrow(values: list[Any], typ: pa.DataType) -> pa.Array:
    """An Arrow array from validated Python values (None = null), built from raw buffers.

    `pa.array(list)` would do, but its first call imports pandas (+50 MB resident in a worker
    that never uses it); numpy buffers give the same array without it, and faster.
    """
    n = len(values)
    nulls = [v is None for v in values]
    null_count = sum(nulls)
    validity = None
    if null_count:
        validity = pa.py_buffer(np.packbits(~np.array(nulls, dtype=bool), bitorder="little"))
    if pa.types.is_string(typ):
        encoded = [b"" if v is None else v.encode("utf-8") for v in values]
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        buffers = [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    elif pa.types.is_boolean(typ):
        bits = np.packbits(np.array([bool(v) for v in values], dtype=bool), bitorder="little")
        buffers = [validity, pa.py_buffer(bits)]
    else:
        dtype = np.int64 if pa.types.is_timestamp(typ) else _NUMPY_DTYPES[typ]
        data = np.array([0 if v is None else v for v in values], dtype=dtype)
        buffers = [validity, pa.py_buffer(data)]
    return pa.Array.from_buffers(typ, n, buffers, null_count=null_count)


class _DuplicateGuard:
    """Duplicate ids within a slice, in 8 bytes per row (a sorted array of 64-bit id hashes)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._seen = np.empty(0, dtype=np.uint64)

    def first_seen_mask(self, ids: list[str]) -> list[bool]:
        if not self.enabled or not ids:
            return [True] * len(ids)
        hashes = np.array(
            [int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little") for i in ids],
            dtype=np.uint64,
        )
        keep = np.ones(len(ids), dtype=bool)
        if self._seen.size:
            pos = np.searchsorted(self._seen, hashes)
            pos_clipped = np.minimum(pos, self._seen.size - 1)
            keep &= self._seen[pos_clipped] != hashes
        # Within the batch: keep only the first occurrence.
        _, first_idx = np.unique(hashes, return_index=True)
        within = np.zeros(len(ids), dtype=bool)
        within[first_idx] = True
        keep &= within
        self._seen = np.union1d(self._seen, hashes[keep])
        return keep.tolist()


# ------------------------------------------------------------------ writing


class _ParquetSpool:
    """A ParquetWriter over a temporary file, uploaded to S3 (multipart) on `upload`."""

    def __init__(self, schema: pa.Schema, compression: str) -> None:
        self.schema = schema
        fd, self.path = tempfile.mkstemp(prefix="extract-", suffix=".parquet")
        os.close(fd)
        self.writer = pq.ParquetWriter(self.path, schema, compression=compression)
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self.writer.write_batch(batch)
            self.rows += batch.num_rows

    def upload(self, s3: Any, bucket: str, key: str) -> dict[str, Any]:
        self.writer.close()  # an empty writer still produces a valid Parquet file with the schema
        digest = hashlib.sha256()
        with open(self.path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        size = os.path.getsize(self.path)
        config = TransferConfig(
            multipart_threshold=MULTIPART_CHUNK_BYTES,
            multipart_chunksize=MULTIPART_CHUNK_BYTES,
            max_concurrency=2,
        )
        s3.upload_file(self.path, bucket, key, Config=config)
        etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
        return {"key": key, "rows": self.rows, "bytes": size, "etag": etag, "sha256": digest.hexdigest()}

    def discard(self) -> None:
        try:
            self.writer.close()
        except Exception:  # closing a broken writer must not hide the original error
            log.debug("writer close failed during discard", exc_info=True)
        if os.path.exists(self.path):
            os.unlink(self.path)


def _relaxed_json(doc: Any) -> str:
    try:
        text = dumps(doc, json_options=RELAXED_JSON_OPTIONS)
    except Exception as err:  # an undecodable document is still quarantined
        text = json.dumps({"undecodable": repr(err)})
    return text[:QUARANTINE_JSON_LIMIT]


class _Quarantine:
    """Rejected documents, flushed to their own Parquet spool in bounded batches."""

    def __init__(self, compression: str, batch_size: int) -> None:
        self.spool = _ParquetSpool(QUARANTINE_SCHEMA, compression)
        self.batch_size = batch_size
        self.counts: Counter[str] = Counter()
        self._ids: list[str | None] = []
        self._reasons: list[str] = []
        self._docs: list[str] = []

    def add(self, doc_id: Any, reason: str, doc: Any) -> None:
        self.counts[reason] += 1
        self._ids.append(None if doc_id is None else str(doc_id))
        self._reasons.append(reason)
        self._docs.append(_relaxed_json(doc))
        if len(self._ids) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if self._ids:
            self.spool.write(
                pa.RecordBatch.from_arrays(
                    [
                        column_to_arrow(self._ids, pa.string()),
                        column_to_arrow(self._reasons, pa.string()),
                        column_to_arrow(self._docs, pa.string()),
                    ],
                    schema=QUARANTINE_SCHEMA,
                )
            )
            self._ids, self._reasons, self._docs = [], [], []


# ------------------------------------------------------------------ extraction


def _has_unique_index(collection: Any, field_name: str) -> bool:
    try:
        info = collection.index_information()
    except Exception:  # no index info means we must check ourselves
        return False
    return any(spec.get("unique") and [k for k, _ in spec["key"]] == [field_name] for spec in info.values())


def _iter_batches(cursor: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Batches of `size` documents, fetched one batch ahead by a thread.

    The network wait for the next batch (the server's work) overlaps with validating and
    encoding the current one; the queue holds one batch, so at most three batches are alive.
    """
    slots: queue.Queue[Any] = queue.Queue(maxsize=1)
    done = object()
    stop = threading.Event()

    def fetch() -> None:
        try:
            batch: list[Any] = []
            for doc in cursor:
                batch.append(doc)
                if len(batch) >= size:
                    slots.put(batch)
                    batch = []
                    if stop.is_set():
                        return
            if batch:
                slots.put(batch)
            slots.put(done)
        except BaseException as err:  # re-raised in the consumer, never lost in the thread
            slots.put(err)

    fetcher = threading.Thread(target=fetch, name="extract-prefetch", daemon=True)
    fetcher.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while fetcher.is_alive():  # unblock a fetcher waiting on a full queue
            try:
                slots.get(timeout=0.1)
            except queue.Empty:
                pass
        fetcher.join()


def _extract_dataset(
    *,
    cfg: UseCaseConfig,
    dataset: str,
    cursor: Iterable[Any],
    range_field: str,
    lo: datetime,
    hi: datetime,
    now: datetime,
    batch_size: int,
    max_document_bytes: int,
    unique_ids: bool,
    data_spool: _ParquetSpool,
    quarantine: _Quarantine,
    batch_observer: BatchObserver | None,
) -> int:
    rules = _rules(cfg, dataset)
    schema = data_spool.schema
    id_field = cfg.fields.id
    amount_field = cfg.fields.amount
    guard = _DuplicateGuard(enabled=not unique_ids)
    id_pos = [rule.name for rule in rules].index(id_field)
    rows = 0
    for raw_batch in _iter_batches(cursor, batch_size):
        columns: list[list[Any]] = [[] for _ in rules]
        ids: list[str] = []
        for raw in raw_batch:
            # Raw bytes first: the size check is free, then one C-level decode into a dict.
            doc = bson_decode(raw.raw, _DICT_CODEC)
            if len(raw.raw) > max_document_bytes:
                quarantine.add(doc.get(id_field), OVERSIZED, doc)
                continue
            values, reason = [], None
            for rule in rules:
                value = doc.get(rule.name)
                if value is None:
                    if rule.required:
                        reason = f"{MISSING_FIELD}:{rule.name}"
                        break
                    values.append(None)
                    continue
                checked, reason = _check_value(rule, value)
                if reason:
                    reason = f"{reason}:{rule.name}"
                    break
                values.append(checked)
            if reason is None:
                amount = doc.get(amount_field) if dataset == "transactions" else None
                stamp = doc.get(range_field)
                if amount is not None and amount < 0:
                    reason = f"{NEGATIVE_AMOUNT}:{amount_field}"
                elif stamp.replace(tzinfo=stamp.tzinfo or UTC) > now:
                    reason = f"{FUTURE_TIME}:{range_field}"
                elif not lo <= stamp.replace(tzinfo=stamp.tzinfo or UTC) < hi:
                    reason = f"{OUTSIDE_INTERVAL}:{range_field}"
            if reason is not None:
                quarantine.add(doc.get(id_field), reason, doc)
                continue
            for column, value in zip(columns, values, strict=True):
                column.append(value)
            ids.append(values[id_pos])
        keep = guard.first_seen_mask(ids)
        if not all(keep):
            dropped = [i for i, k in enumerate(keep) if not k]
            for i in dropped:
                quarantine.add(
                    ids[i],
                    f"{DUPLICATE_ID}:{id_field}",
                    {name: col[i] for name, col in zip([r.name for r in rules], columns, strict=True)},
                )
            columns = [[v for v, k in zip(col, keep, strict=True) if k] for col in columns]
        arrays = [column_to_arrow(col, schema.field(i).type) for i, col in enumerate(columns)]
        record_batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
        if batch_observer is not None:
            batch_observer(dataset, len(raw_batch))
        data_spool.write(record_batch)
        rows += record_batch.num_rows
    quarantine.flush()
    return rows


def _quarantine_strays(
    cursor: Iterable[Any], cfg: UseCaseConfig, quarantines: dict[str, _Quarantine]
) -> None:
    """Documents whose time or labeled_at is not a date never match a date-range query."""
    f = cfg.fields
    for raw in cursor:
        for dataset, name, optional in (("transactions", f.time, False), ("labels", f.labeled_at, True)):
            value = raw.get(name)
            if isinstance(value, datetime) or (optional and value is None):
                continue
            reason = f"{MISSING_FIELD}:{name}" if value is None else f"{WRONG_TYPE}:{name}"
            quarantines[dataset].add(raw.get(f.id), reason, raw)


def _delete_keys(s3: Any, bucket: str, keys: list[str]) -> None:
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        if chunk:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})


def _list_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


def _put_json(s3: Any, bucket: str, key: str, payload: dict[str, Any]) -> None:
    s3.put_object(
        Bucket=bucket, Key=key, Body=json.dumps(payload, indent=2).encode(), ContentType="application/json"
    )


def _finalize_partition(
    s3: Any, bucket: str, prefix: str, n_slices: int, base: dict[str, Any], extracted_at: str
) -> bool:
    """Write `_manifest.json` if all slices are done; remove parts of a previous slice layout."""
    slices = []
    for index in range(n_slices):
        entry = read_json(s3, bucket, f"{prefix}{SLICE_MANIFEST_DIR}{part_name(index)}.json")
        if entry is None or entry.get("n_slices") != n_slices:
            return False
        slices.append(entry)
    wanted = {s["part"]["key"] for s in slices} | {
        f"{prefix}{SLICE_MANIFEST_DIR}{part_name(i)}.json" for i in range(n_slices)
    }
    stale = [k for k in _list_keys(s3, bucket, prefix) if k not in wanted and not k.endswith(MANIFEST_NAME)]
    _delete_keys(s3, bucket, stale)
    manifest = {
        **base,
        "n_slices": n_slices,
        "rows": sum(s["part"]["rows"] for s in slices),
        "bytes": sum(s["part"]["bytes"] for s in slices),
        "parts": [{**s["part"], "slice": s["slice"]} for s in slices],
        "quarantined": dict(sum((Counter(s["quarantined"]) for s in slices), Counter())),
        "extracted_at": extracted_at,
    }
    _put_json(s3, bucket, prefix + MANIFEST_NAME, manifest)
    return True


def _partition_day(lo: datetime) -> datetime:
    if (lo.hour, lo.minute, lo.second, lo.microsecond) != (0, 0, 0, 0):
        raise ValueError(
            f"interval start {lo.isoformat()} is not 00:00 UTC: raw partitions are named by the interval "
            "start day, so sub-daily intervals would overwrite each other; use daily (or longer) intervals "
            "and n_slices to split a day"
        )
    return lo


def extract_interval(
    mongo_client: MongoClient,
    s3: Any,
    cfg: UseCaseConfig,
    start: datetime | str,
    end: datetime | str,
    *,
    slice_index: int = 0,
    n_slices: int = 1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    bucket: str | None = None,
    database: str | None = None,
    collection: str | None = None,
    now: datetime | None = None,
    compression: str = COMPRESSION,
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    batch_observer: BatchObserver | None = None,
) -> dict[str, Any]:
    """Extract slice `slice_index` of [start, end) into raw/transactions and raw/labels.

    Returns a small JSON-safe summary per dataset (rows, bytes, keys, quarantined by reason,
    empty flag, seconds, rows/s) plus the interval and whether the partition manifest was
    written (by the last slice to finish). Documents whose time is not a date are not seen
    here: `sweep_strays` quarantines them.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if not 0 <= slice_index < n_slices:
        raise ValueError(f"slice_index {slice_index} outside 0..{n_slices - 1}")
    lo, hi = _bson_ms(as_utc(start)), _bson_ms(as_utc(end))
    day = _partition_day(lo)
    planned = plan_slices(lo, hi, n_slices)[slice_index]
    s_lo, s_hi = as_utc(planned["start"]), as_utc(planned["end"])
    now = as_utc(now) if now else datetime.now(UTC)
    bucket = bucket or cfg.s3.bucket
    f = cfg.fields
    codec = CodecOptions(document_class=RawBSONDocument, tz_aware=True, tzinfo=UTC)
    coll = mongo_client[database or cfg.mongo.database].get_collection(
        collection or cfg.mongo.collection, codec_options=codec
    )
    unique_ids = _has_unique_index(coll, f.id)
    extracted_at = now.isoformat()
    summary: dict[str, Any] = {
        "interval": {"start": lo.isoformat(), "end": hi.isoformat()},
        "slice": {
            "index": slice_index,
            "n_slices": n_slices,
            "start": s_lo.isoformat(),
            "end": s_hi.isoformat(),
        },
        "partition": f"dt={day.strftime('%Y-%m-%d')}",
        "batch_size": batch_size,
    }
    datasets = {
        "transactions": (f.time, {f.time: {"$gte": s_lo, "$lt": s_hi}}),
        "labels": (f.labeled_at, {f.labeled_at: {"$gte": s_lo, "$lt": s_hi}}),
    }
    with mongo_client.start_session(snapshot=True) as session:
        for dataset, (range_field, query) in datasets.items():
            began = time.monotonic()
            prefix = raw_partition_prefix(cfg, dataset, day)
            q_prefix = quarantine_partition_prefix(cfg, dataset, day)
            part_key = prefix + part_name(slice_index)
            q_key = q_prefix + part_name(slice_index)
            slice_manifest_key = f"{prefix}{SLICE_MANIFEST_DIR}{part_name(slice_index)}.json"
            # Unpublish first: from here until the manifest is rewritten the partition is incomplete.
            _delete_keys(s3, bucket, [prefix + MANIFEST_NAME, slice_manifest_key])
            data_spool = _ParquetSpool(dataset_schema(cfg, dataset), compression)
            quarantine = _Quarantine(compression, batch_size)
            try:
                cursor = coll.find(query, session=session, batch_size=batch_size).sort(range_field, ASCENDING)
                rows = _extract_dataset(
                    cfg=cfg,
                    dataset=dataset,
                    cursor=cursor,
                    range_field=range_field,
                    lo=s_lo,
                    hi=s_hi,
                    now=now,
                    batch_size=batch_size,
                    max_document_bytes=max_document_bytes,
                    unique_ids=unique_ids,
                    data_spool=data_spool,
                    quarantine=quarantine,
                    batch_observer=batch_observer,
                )
                part = data_spool.upload(s3, bucket, part_key)
                keys = [part_key]
                if quarantine.spool.rows:
                    quarantine.spool.upload(s3, bucket, q_key)
                    keys.append(q_key)
                else:
                    _delete_keys(s3, bucket, [q_key])  # a stale quarantine part of a previous run
            finally:
                data_spool.discard()
                quarantine.spool.discard()
            counts = dict(sorted(quarantine.counts.items()))
            _put_json(
                s3,
                bucket,
                slice_manifest_key,
                {
                    "n_slices": n_slices,
                    "slice": summary["slice"],
                    "part": part,
                    "quarantined": counts,
                    "extracted_at": extracted_at,
                },
            )
            base = {
                "dataset": dataset,
                "partition": summary["partition"],
                "interval": summary["interval"],
                "schema": {fld.name: str(fld.type) for fld in data_spool.schema},
                "compression": compression,
                "format": "parquet",
            }
            complete = _finalize_partition(s3, bucket, prefix, n_slices, base, extracted_at)
            seconds = time.monotonic() - began
            summary[dataset] = {
                "rows": rows,
                "bytes": part["bytes"],
                "keys": keys,
                "quarantined": counts,
                "quarantined_total": sum(counts.values()),
                "empty": rows == 0,
                "seconds": round(seconds, 3),
                "rows_per_s": round(rows / seconds, 1) if seconds > 0 else None,
                "partition_complete": complete,
            }
            log.info(
                "extracted %s %s slice %d/%d: %d rows, quarantined %s%s",
                dataset,
                summary["partition"],
                slice_index,
                n_slices,
                rows,
                counts or "nothing",
                " (empty interval)" if rows == 0 else "",
            )
    return summary


STRAYS_PART = "strays.parquet"
STRAYS_SUMMARY = "_strays.json"


def sweep_strays(
    mongo_client: MongoClient,
    s3: Any,
    cfg: UseCaseConfig,
    start: datetime | str,
    end: datetime | str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    bucket: str | None = None,
    database: str | None = None,
    collection: str | None = None,
    compression: str = COMPRESSION,
) -> dict[str, Any]:
    """Quarantine documents inserted in [start, end) whose time or labeled_at is not a date.

    Such documents never match the extract's date-range queries, so without this sweep they
    would vanish silently. They are attributed to an interval by their ObjectId insert time
    and written to `quarantine/<dataset>/dt=<day>/strays.parquet` (replaced on rerun; removed
    when none are left) with a `_strays.json` of counts beside it. Returns the small summary.
    """
    lo, hi = _bson_ms(as_utc(start)), _bson_ms(as_utc(end))
    day = _partition_day(lo)
    bucket = bucket or cfg.s3.bucket
    f = cfg.fields
    began = time.monotonic()
    codec = CodecOptions(document_class=RawBSONDocument, tz_aware=True, tzinfo=UTC)
    coll = mongo_client[database or cfg.mongo.database].get_collection(
        collection or cfg.mongo.collection, codec_options=codec
    )
    query = {
        "_id": {"$gte": ObjectId.from_datetime(lo), "$lt": ObjectId.from_datetime(hi)},
        "$or": [
            {f.time: {"$not": {"$type": "date"}}},
            {f.labeled_at: {"$exists": True, "$ne": None, "$not": {"$type": "date"}}},
        ],
    }
    quarantines = {name: _Quarantine(compression, batch_size) for name in ("transactions", "labels")}
    summary: dict[str, Any] = {
        "interval": {"start": lo.isoformat(), "end": hi.isoformat()},
        "partition": f"dt={day.strftime('%Y-%m-%d')}",
    }
    try:
        with mongo_client.start_session(snapshot=True) as session:
            _quarantine_strays(coll.find(query, session=session, batch_size=batch_size), cfg, quarantines)
        for dataset, quarantine in quarantines.items():
            quarantine.flush()
            q_prefix = quarantine_partition_prefix(cfg, dataset, day)
            counts = dict(sorted(quarantine.counts.items()))
            keys = []
            if quarantine.spool.rows:
                quarantine.spool.upload(s3, bucket, q_prefix + STRAYS_PART)
                keys.append(q_prefix + STRAYS_PART)
            else:
                _delete_keys(s3, bucket, [q_prefix + STRAYS_PART])  # stale strays of a previous run
            _put_json(
                s3,
                bucket,
                q_prefix + STRAYS_SUMMARY,
                {"interval": summary["interval"], "quarantined": counts},
            )
            summary[dataset] = {
                "quarantined": counts,
                "quarantined_total": sum(counts.values()),
                "keys": keys,
            }
    finally:
        for quarantine in quarantines.values():
            quarantine.spool.discard()
    summary["seconds"] = round(time.monotonic() - began, 3)
    log.info(
        "stray sweep %s: transactions %s, labels %s",
        summary["partition"],
        summary["transactions"]["quarantined"] or "none",
        summary["labels"]["quarantined"] or "none",
    )
    return summary


# ------------------------------------------------------------------ readers


def read_partition_manifest(s3: Any, bucket: str, prefix: str) -> dict[str, Any] | None:
    """The `_manifest.json` of a partition folder, or None if the partition is not finished."""
    return read_json(s3, bucket, prefix.rstrip("/") + "/" + MANIFEST_NAME)


def list_complete_partitions(s3: Any, bucket: str, dataset_prefix: str) -> list[dict[str, Any]]:
    """Manifests of all finished partitions under e.g. `raw/transactions/`, sorted by partition.

    Readers must read only the part keys a manifest lists (never list the folder), so a
    half-written rerun or a stale part is never read.
    """
    prefix = dataset_prefix.rstrip("/") + "/"
    manifests = []
    for key in _list_keys(s3, bucket, prefix):
        rest = key[len(prefix) :]
        if rest.count("/") == 1 and rest.endswith("/" + MANIFEST_NAME):
            manifest = read_json(s3, bucket, key)
            if manifest is not None:
                manifest["prefix"] = key[: -len(MANIFEST_NAME)]
                manifests.append(manifest)
    return sorted(manifests, key=lambda m: m["partition"])
