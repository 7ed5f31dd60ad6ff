"""Live scoring: one transaction in, fraud probability and decision out, score recorded.

Two callers share every step here: the Lambda-shaped handler (include/scoring/lambda_function.py)
and the change-stream scorer (include/scoring/change_stream_scorer.py).

    validate_transaction -> fetch_history (one query per entity, on the compound indexes)
      -> features_for_transaction (the stage task's feature code) -> endpoint client
      -> record_score (idempotent by tx id: the first score written wins)

The scorer batches the same steps: live_features_many (two queries per batch, compute_features
once), one endpoint call per batch, record_scores_bulk.

Settings come from environment variables (names and defaults in `ScoringSettings.from_env`):

    FRAUD_SCORING_THRESHOLD          0.5         decision "decline" when probability >= threshold
    FRAUD_SCORING_FAIL_MODE          open        endpoint/history down: "open" approves, "closed" declines
    FRAUD_SCORING_RECORD             collection  "collection" (use-case mongo.scores_collection),
                                                 "document" (a field on the transaction), or "off"
    FRAUD_SCORING_SCORE_FIELD        fraud_score the field written in "document" mode
    FRAUD_SCORING_MAX_FUTURE_S       300         reject transactions stamped further in the future
    FRAUD_SAGEMAKER_ENDPOINT_NAME    (unset)     set: AWS mode, sagemaker-runtime invoke_endpoint
    FRAUD_ENDPOINT_URL               http://127.0.0.1:8081   the local server otherwise
    FRAUD_ENDPOINT_TIMEOUT_S         1.0         read timeout per attempt
    FRAUD_ENDPOINT_CONNECT_TIMEOUT_S 0.5
    FRAUD_ENDPOINT_MAX_ATTEMPTS      2           bounded retry (attempts, not retries)
    MONGO_URI                        (unset)     or FRAUD_MONGO_SECRET_ID: an AWS Secrets Manager
                                                 secret holding the URI (plain or {"uri": ...})
    FRAUD_MONGO_TIMEOUT_MS           2000        server selection / socket timeout
    FRAUD_USE_CASE_CONFIG            bundled     the use-case YAML (field and collection names)
    FRAUD_SCORER_MAX_BACKDATE_S      3600        scorer only: inserts this much newer than their
                                                 transaction time are a backfill, not scored

No Airflow here: the Lambda and the scorer ship without a scheduler.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pandas as pd
from bson.codec_options import CodecOptions
from pymongo import ReturnDocument, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure, PyMongoError

from fraud_retraining.config import UseCaseConfig, load_use_case
from fraud_retraining.features import (
    FEATURE_COLUMNS,
    compute_features,
    features_for_transaction,
    history_window,
)

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT_URL = "http://127.0.0.1:8081"
MAX_EVENT_BYTES = 16 * 1024  # a card transaction is a few hundred bytes
# Mirrors extract.DEFAULT_MAX_DOCUMENT_BYTES (not imported: extract pulls in pyarrow, which the
# Lambda does not need); a test keeps the two equal.
MAX_DOCUMENT_BYTES = 16 * 1024
# One round trip per entity: the first batch must hold the whole window (MongoDB's default
# first batch is 101 documents, a busy terminal has more in 37 days).
HISTORY_BATCH_SIZE = 20_000
_AWARE = CodecOptions(tz_aware=True, tzinfo=UTC)

# Reasons for a rejected transaction: the extract's quarantine vocabulary plus the event's own.
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
NOT_FINITE = "not_finite"
NEGATIVE_AMOUNT = "negative_amount"
OUT_OF_RANGE = "out_of_range"
FUTURE_TIME = "future_time"
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_an_object"
TOO_LARGE = "too_large"

APPROVE, DECLINE = "approve", "decline"
RECORD_MODES = ("collection", "document", "off")


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class ScoringSettings:
    threshold: float = 0.5
    fail_open: bool = True
    record_mode: str = "collection"
    score_field: str = "fraud_score"
    max_future_s: float = 300.0
    endpoint_url: str = DEFAULT_ENDPOINT_URL
    sagemaker_endpoint: str | None = None
    endpoint_timeout_s: float = 1.0
    endpoint_connect_timeout_s: float = 0.5
    endpoint_max_attempts: int = 2
    mongo_timeout_ms: int = 2000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ScoringSettings:
        env = os.environ if env is None else env
        fail_mode = env.get("FRAUD_SCORING_FAIL_MODE", "open").strip().lower()
        if fail_mode not in {"open", "closed"}:
            raise ValueError(f"FRAUD_SCORING_FAIL_MODE must be open or closed, not {fail_mode!r}")
        record_mode = env.get("FRAUD_SCORING_RECORD", "collection").strip().lower()
        if record_mode not in RECORD_MODES:
            raise ValueError(f"FRAUD_SCORING_RECORD must be one of {RECORD_MODES}, not {record_mode!r}")
        threshold = float(env.get("FRAUD_SCORING_THRESHOLD", "0.5"))
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"FRAUD_SCORING_THRESHOLD must be in [0, 1], not {threshold}")
        return cls(
            threshold=threshold,
            fail_open=fail_mode == "open",
            record_mode=record_mode,
            score_field=env.get("FRAUD_SCORING_SCORE_FIELD", "fraud_score"),
            max_future_s=float(env.get("FRAUD_SCORING_MAX_FUTURE_S", "300")),
            endpoint_url=env.get("FRAUD_ENDPOINT_URL") or DEFAULT_ENDPOINT_URL,
            sagemaker_endpoint=env.get("FRAUD_SAGEMAKER_ENDPOINT_NAME") or None,
            endpoint_timeout_s=float(env.get("FRAUD_ENDPOINT_TIMEOUT_S", "1.0")),
            endpoint_connect_timeout_s=float(env.get("FRAUD_ENDPOINT_CONNECT_TIMEOUT_S", "0.5")),
            endpoint_max_attempts=max(1, int(env.get("FRAUD_ENDPOINT_MAX_ATTEMPTS", "2"))),
            mongo_timeout_ms=int(env.get("FRAUD_MONGO_TIMEOUT_MS", "2000")),
        )


def mongo_uri_from_env(env: Mapping[str, str] | None = None) -> str:
    """MONGO_URI, else the secret named by FRAUD_MONGO_SECRET_ID (AWS Secrets Manager).

    The URI carries credentials: callers must never log it or put it in an error message.
    """
    env = os.environ if env is None else env
    if env.get("MONGO_URI"):
        return env["MONGO_URI"]
    secret_id = env.get("FRAUD_MONGO_SECRET_ID")
    if not secret_id:
        raise RuntimeError("no MongoDB address: set MONGO_URI or FRAUD_MONGO_SECRET_ID")
    import boto3

    secret = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
    if secret.lstrip().startswith("{"):
        secret = json.loads(secret)["uri"]
    return secret


# ---------------------------------------------------------------- validation


class InvalidTransaction(ValueError):
    """A transaction that cannot be scored; `reason` is a code such as wrong_type:amount."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_event(event: Any) -> Any:
    """The transaction inside a Lambda event: the event itself, or an API Gateway proxy body."""
    if not isinstance(event, Mapping):
        raise InvalidTransaction(NOT_AN_OBJECT, "the event is not a JSON object")
    if not _is_proxy_event(event):
        return event
    body = event.get("body")
    if body is None or body == "":
        raise InvalidTransaction(INVALID_JSON, "empty request body")
    if not isinstance(body, str):
        raise InvalidTransaction(INVALID_JSON, "request body is not a string")
    if len(body) > MAX_EVENT_BYTES * 2:
        raise InvalidTransaction(TOO_LARGE, f"request body larger than {MAX_EVENT_BYTES} bytes")
    raw: str | bytes = body
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidTransaction(INVALID_JSON, "body is flagged base64 but is not valid base64") from None
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidTransaction(TOO_LARGE, f"request body larger than {MAX_EVENT_BYTES} bytes")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidTransaction(INVALID_JSON, f"request body is not valid JSON: {exc}") from None


def _is_proxy_event(event: Mapping[str, Any]) -> bool:
    # REST (v1) and HTTP (v2) API Gateway and function URLs all carry a body and a requestContext.
    return "body" in event and any(key in event for key in ("requestContext", "httpMethod", "routeKey"))


def _kind(type_spec: str) -> str:
    spec = type_spec.strip()
    if spec.startswith("timestamp"):
        return "timestamp"
    if spec.startswith("int"):
        return "int"
    if spec.startswith("float"):
        return "float"
    if spec == "string":
        return "string"
    raise ValueError(f"no live validation rule for schema type {type_spec!r}")


def _int_bounds(type_spec: str) -> tuple[int, int]:
    bits = int(type_spec.strip()[3:] or 64)
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def validate_transaction(
    raw: Any, cfg: UseCaseConfig, *, now: datetime | None = None, max_future_s: float = 300.0
) -> dict[str, Any]:
    """The five fields features need, checked against the use-case schema, or InvalidTransaction.

    Times may be BSON dates (from MongoDB) or ISO-8601 strings (JSON events; naive = UTC).
    The rules are the extract's, so a transaction the batch would quarantine is not scored.
    """
    if not isinstance(raw, Mapping):
        raise InvalidTransaction(NOT_AN_OBJECT, "the transaction is not a JSON object")
    f = cfg.fields
    out: dict[str, Any] = {}
    for name in (f.id, f.time, f.customer, f.terminal, f.amount):
        value = raw.get(name)
        if value is None:
            raise InvalidTransaction(f"{MISSING_FIELD}:{name}", f"field {name!r} is missing")
        spec = cfg.schema[name]
        kind = _kind(spec)
        if kind == "string":
            if not isinstance(value, str) or not value.strip():
                raise InvalidTransaction(f"{WRONG_TYPE}:{name}", f"field {name!r} must be a non-empty string")
        elif kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidTransaction(f"{WRONG_TYPE}:{name}", f"field {name!r} must be an integer")
            lo, hi = _int_bounds(spec)
            if not lo <= value <= hi:
                raise InvalidTransaction(f"{OUT_OF_RANGE}:{name}", f"field {name!r} is out of range")
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidTransaction(f"{WRONG_TYPE}:{name}", f"field {name!r} must be a number")
            value = float(value)
            if not math.isfinite(value):
                raise InvalidTransaction(f"{NOT_FINITE}:{name}", f"field {name!r} must be finite")
        else:
            value = _as_timestamp(name, value)
        out[name] = value
    if out[f.amount] < 0:
        raise InvalidTransaction(f"{NEGATIVE_AMOUNT}:{f.amount}", f"field {f.amount!r} is negative")
    now = now or datetime.now(UTC)
    if out[f.time] > now + timedelta(seconds=max_future_s):
        raise InvalidTransaction(
            f"{FUTURE_TIME}:{f.time}", f"field {f.time!r} is more than {max_future_s:.0f} s in the future"
        )
    return out


def _as_timestamp(name: str, value: Any) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidTransaction(
                f"{WRONG_TYPE}:{name}", f"field {name!r} is not an ISO-8601 timestamp"
            ) from None
    if not isinstance(value, datetime):
        raise InvalidTransaction(f"{WRONG_TYPE}:{name}", f"field {name!r} must be an ISO-8601 timestamp")
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    # BSON dates hold milliseconds: score the instant MongoDB stores.
    return aware.replace(microsecond=aware.microsecond // 1000 * 1000)


# ---------------------------------------------------------------- history and features


def _history_pipeline(cfg: UseCaseConfig, match: dict[str, Any]) -> list[dict[str, Any]]:
    f = cfg.fields
    keep = dict.fromkeys((f.id, f.time, f.customer, f.terminal, f.amount, f.label, f.labeled_at), 1)
    return [
        {"$match": match},
        # The document's stored size, so oversized documents are dropped as the extract drops them.
        {"$project": {"_id": 0, **keep, "_bytes": {"$bsonSize": "$$ROOT"}}},
    ]


def _read_history(
    collection: Collection,
    cfg: UseCaseConfig,
    matches: Sequence[dict[str, Any]],
    label_cutoff: datetime,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of every match (one aggregate each, its first batch holding the whole window),
    de-duplicated by id and cleaned by the extract's rules; labels known by `label_cutoff`."""
    f = cfg.fields
    coll = collection.with_options(codec_options=_AWARE)
    rows: dict[str, dict[str, Any]] = {}
    labels: list[dict[str, Any]] = []
    for match in matches:
        for doc in coll.aggregate(_history_pipeline(cfg, match), batchSize=HISTORY_BATCH_SIZE):
            if doc.get("_bytes", 0) > MAX_DOCUMENT_BYTES:
                continue
            try:
                clean = validate_transaction(doc, cfg, now=label_cutoff, max_future_s=0)
            except InvalidTransaction:
                continue  # the extract quarantines it, so the batch features never see it
            key = clean[f.id]
            if key in rows:  # the customer used this terminal: same row from both queries
                continue
            rows[key] = clean
            label, labeled_at = doc.get(f.label), doc.get(f.labeled_at)
            if isinstance(label, int) and isinstance(labeled_at, datetime) and labeled_at <= label_cutoff:
                labels.append({f.id: key, f.label: int(label), f.labeled_at: labeled_at})
    columns = [f.id, f.time, f.customer, f.terminal, f.amount]
    return pd.DataFrame(list(rows.values()), columns=columns), pd.DataFrame(
        labels, columns=[f.id, f.label, f.labeled_at]
    )


def fetch_history(
    collection: Collection, tx: Mapping[str, Any], cfg: UseCaseConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The customer's and the terminal's transactions in [t - history_window, t), and the labels
    among them that were known at t (labeled_at <= t).

    One round trip per entity, each an equality plus a range on (entity, time): exactly the
    shape the compound indexes of fraud_retraining.storage serve. Documents the extract would
    quarantine are dropped, so the live features see the rows the batch features see.
    """
    f = cfg.fields
    t = tx[f.time]
    window = {"$gte": t - history_window(cfg), "$lt": t}
    matches = [{entity: tx[entity], f.time: window} for entity in (f.customer, f.terminal)]
    return _read_history(collection, cfg, matches, label_cutoff=t)


def live_features(collection: Collection, tx: Mapping[str, Any], cfg: UseCaseConfig) -> dict[str, float]:
    """Features of one validated transaction from MongoDB, by the batch definition."""
    history, labels = fetch_history(collection, tx, cfg)
    return features_for_transaction(tx, history, labels, cfg)


def live_features_many(
    collection: Collection, txs: Sequence[Mapping[str, Any]], cfg: UseCaseConfig
) -> list[dict[str, float]]:
    """Features of several validated transactions with two queries in all (the scorer's batches).

    The history of all their customers and terminals over [min t - history_window, max t) plus
    the transactions themselves go through compute_features once: it is point-in-time per row
    (strict windows, a label counts only if labeled_at <= that row's t), so each row gets what
    live_features would give it alone, at a fraction of the round trips.
    """
    if len(txs) == 1:
        return [live_features(collection, txs[0], cfg)]
    f = cfg.fields
    times = [tx[f.time] for tx in txs]
    window = {"$gte": min(times) - history_window(cfg), "$lt": max(times)}
    matches = [
        {entity: {"$in": sorted({tx[entity] for tx in txs})}, f.time: window}
        for entity in (f.customer, f.terminal)
    ]
    history, labels = _read_history(collection, cfg, matches, label_cutoff=max(times))
    columns = [f.id, f.time, f.customer, f.terminal, f.amount]
    own = pd.DataFrame([{name: tx[name] for name in columns} for tx in txs], columns=columns)
    # A transaction of the batch may already be stored: keep one copy of each id.
    frame = pd.concat([history[~history[f.id].isin(own[f.id])], own], ignore_index=True)
    frame[f.time] = pd.to_datetime(frame[f.time], utc=True)
    features = compute_features(frame, labels, cfg).iloc[len(frame) - len(own) :]
    return [
        {name: float(value) for name, value in zip(FEATURE_COLUMNS, row, strict=True)}
        for row in features[FEATURE_COLUMNS].itertuples(index=False, name=None)
    ]


# ---------------------------------------------------------------- endpoint clients


class EndpointUnavailable(RuntimeError):
    """The endpoint did not answer usefully within the attempts allowed; the message says why."""


class EndpointClient(Protocol):
    def invoke(self, records: Sequence[Mapping[str, float]]) -> tuple[list[float], str]: ...


def invocation_payload(records: Sequence[Mapping[str, float]]) -> bytes:
    """The body both modes send: JSON records of FEATURE_COLUMNS (serving.py's contract)."""
    return json.dumps(
        {"instances": [{name: float(r[name]) for name in FEATURE_COLUMNS} for r in records]}
    ).encode()


def _parse_scores(body: bytes, n: int, fallback_version: str = "") -> tuple[list[float], str]:
    try:
        payload = json.loads(body)
        scores = [float(s) for s in payload["scores"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise EndpointUnavailable(f"endpoint answered an unreadable body: {type(exc).__name__}") from None
    if len(scores) != n:
        raise EndpointUnavailable(f"endpoint returned {len(scores)} scores for {n} rows")
    return scores, str(payload.get("model_version") or fallback_version)


class HttpEndpointClient:
    """The local server's POST /invocations, with per-attempt timeouts and a bounded retry.

    Retries only what may pass on a second try (connection errors, timeouts, 5xx); a 4xx means
    our payload is wrong and is raised at once. One keep-alive connection pool per container.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 1.0,
        connect_timeout_s: float = 0.5,
        max_attempts: int = 2,
        backoff_s: float = 0.05,
    ) -> None:
        import httpx

        self._httpx = httpx
        self.url = base_url.rstrip("/") + "/invocations"
        self.max_attempts = max(1, max_attempts)
        self.backoff_s = backoff_s
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s))

    def invoke(self, records: Sequence[Mapping[str, float]]) -> tuple[list[float], str]:
        body = invocation_payload(records)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        last = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self._client.post(self.url, content=body, headers=headers)
            except self._httpx.TimeoutException:
                last = "timed out"
            except self._httpx.TransportError as exc:
                last = f"connection failed ({type(exc).__name__})"
            else:
                if response.status_code == 200:
                    return _parse_scores(response.content, len(records))
                reason = _error_reason(response.content)
                if 400 <= response.status_code < 500:
                    raise EndpointUnavailable(
                        f"endpoint rejected the payload: {response.status_code} {reason}"
                    )
                last = f"HTTP {response.status_code} {reason}"
            if attempt < self.max_attempts:
                time.sleep(self.backoff_s * attempt)
        raise EndpointUnavailable(f"endpoint unavailable after {self.max_attempts} attempt(s): {last}")

    def close(self) -> None:
        self._client.close()


def _error_reason(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error") or "")[:200]
    except (ValueError, AttributeError):
        return ""


class SageMakerEndpointClient:
    """sagemaker-runtime invoke_endpoint with the same payload; botocore does the bounded retry."""

    def __init__(
        self,
        endpoint_name: str,
        *,
        timeout_s: float = 1.0,
        connect_timeout_s: float = 0.5,
        max_attempts: int = 2,
        client: Any = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.endpoint_name = endpoint_name
        self._client = client or boto3.client(
            "sagemaker-runtime",
            config=Config(
                connect_timeout=connect_timeout_s,
                read_timeout=timeout_s,
                retries={"total_max_attempts": max(1, max_attempts), "mode": "standard"},
            ),
        )

    def invoke(self, records: Sequence[Mapping[str, float]]) -> tuple[list[float], str]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.invoke_endpoint(
                EndpointName=self.endpoint_name,
                ContentType="application/json",
                Accept="application/json",
                Body=invocation_payload(records),
            )
            body = response["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise EndpointUnavailable(f"invoke_endpoint failed: {code}") from None
        except BotoCoreError as exc:
            raise EndpointUnavailable(f"invoke_endpoint failed: {type(exc).__name__}") from None
        return _parse_scores(body, len(records), response.get("InvokedProductionVariant", ""))


def endpoint_client_from_settings(settings: ScoringSettings) -> EndpointClient:
    if settings.sagemaker_endpoint:
        return SageMakerEndpointClient(
            settings.sagemaker_endpoint,
            timeout_s=settings.endpoint_timeout_s,
            connect_timeout_s=settings.endpoint_connect_timeout_s,
            max_attempts=settings.endpoint_max_attempts,
        )
    return HttpEndpointClient(
        settings.endpoint_url,
        timeout_s=settings.endpoint_timeout_s,
        connect_timeout_s=settings.endpoint_connect_timeout_s,
        max_attempts=settings.endpoint_max_attempts,
    )


# ---------------------------------------------------------------- recording


def already_scored(
    db: Database, cfg: UseCaseConfig, settings: ScoringSettings, tx_ids: Sequence[str]
) -> set[str]:
    """Which of `tx_ids` already carry a recorded score (one query)."""
    if not tx_ids or settings.record_mode == "off":
        return set()
    if settings.record_mode == "collection":
        found = db[cfg.mongo.scores_collection].find({"_id": {"$in": list(tx_ids)}}, {"_id": 1})
        return {doc["_id"] for doc in found}
    f = cfg.fields
    found = db[cfg.mongo.collection].find(
        {f.id: {"$in": list(tx_ids)}, settings.score_field: {"$exists": True}}, {f.id: 1, "_id": 0}
    )
    return {doc[f.id] for doc in found}


def record_score(
    db: Database, cfg: UseCaseConfig, settings: ScoringSettings, record: Mapping[str, Any]
) -> tuple[str, dict[str, Any] | None]:
    """Write `record` unless `tx_id` already has a score: ("new"|"existing"|"missing"|"off", stored).

    First write wins, in one round trip ($setOnInsert upsert, or a conditional $set): a retried
    Lambda or a re-delivered change event gets the decision that was already acted upon.
    """
    tx_id = record["tx_id"]
    if settings.record_mode == "off":
        return "off", None
    if settings.record_mode == "collection":
        scores = db[cfg.mongo.scores_collection]
        try:
            before = scores.find_one_and_update(
                {"_id": tx_id},
                {"$setOnInsert": dict(record)},
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
        except DuplicateKeyError:  # a concurrent upsert of the same id won the race
            before = scores.find_one({"_id": tx_id})
        return ("new", None) if before is None else ("existing", before)
    f = cfg.fields
    transactions = db[cfg.mongo.collection]
    field_name = settings.score_field
    before = transactions.find_one_and_update(
        {f.id: tx_id, field_name: {"$exists": False}},
        {"$set": {field_name: dict(record)}},
        projection={"_id": 1},
    )
    if before is not None:
        return "new", None
    stored = transactions.find_one({f.id: tx_id}, {field_name: 1})
    if stored is None:
        return "missing", None  # the handler may score a transaction before it is written
    return "existing", stored.get(field_name)


def record_scores_bulk(db: Database, cfg: UseCaseConfig, records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Collection mode for many records in one unordered bulk upsert: "new" or "existing" each."""
    ops = [UpdateOne({"_id": r["tx_id"]}, {"$setOnInsert": dict(r)}, upsert=True) for r in records]
    try:
        upserted = set(db[cfg.mongo.scores_collection].bulk_write(ops, ordered=False).upserted_ids)
    except BulkWriteError as err:
        if any(e.get("code") != 11000 for e in err.details.get("writeErrors", [])):
            raise
        # Duplicate keys are concurrent upserts of the same ids: those already have a score.
        upserted = {u["index"] for u in err.details.get("upserted", [])}
    return ["new" if i in upserted else "existing" for i in range(len(records))]


# ---------------------------------------------------------------- the scoring path


@dataclass
class ScoreOutcome:
    """What scoring one transaction produced; `to_json` is the handler's response body."""

    tx_id: str | None
    status: str  # scored | degraded | invalid | error
    fraud_probability: float | None = None
    decision: str | None = None
    threshold: float | None = None
    model_version: str | None = None
    recorded: str | None = None
    reason: str | None = None
    message: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        body = {k: v for k, v in self.__dict__.items() if v is not None and k != "timings_ms"}
        body["latency_ms"] = round(sum(self.timings_ms.values()), 3)
        body["timings_ms"] = {k: round(v, 3) for k, v in self.timings_ms.items()}
        return body


class LiveScorer:
    """Validate, look up history, invoke the endpoint, record: the handler's and the scorer's path."""

    def __init__(
        self,
        db: Database,
        cfg: UseCaseConfig,
        settings: ScoringSettings,
        endpoint: EndpointClient,
        *,
        source: str = "lambda",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.cfg = cfg
        self.settings = settings
        self.endpoint = endpoint
        self.source = source
        self.clock = clock
        self.transactions = db.get_collection(cfg.mongo.collection, codec_options=_AWARE)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, source: str = "lambda") -> LiveScorer:
        """Built once per container: the MongoClient and the HTTP pool are reused by every call."""
        import pymongo

        env = os.environ if env is None else env
        settings = ScoringSettings.from_env(env)
        cfg = load_use_case(env.get("FRAUD_USE_CASE_CONFIG") or None)
        client: pymongo.MongoClient = pymongo.MongoClient(
            mongo_uri_from_env(env),
            tz_aware=True,
            serverSelectionTimeoutMS=settings.mongo_timeout_ms,
            connectTimeoutMS=settings.mongo_timeout_ms,
            socketTimeoutMS=settings.mongo_timeout_ms,
            appname=f"fraud-scoring-{source}",
        )
        return cls(
            client[cfg.mongo.database], cfg, settings, endpoint_client_from_settings(settings), source=source
        )

    def decide(self, probability: float) -> str:
        return DECLINE if probability >= self.settings.threshold else APPROVE

    def _degraded(self, tx_id: str, reason: str, timings: dict[str, float]) -> ScoreOutcome:
        decision = APPROVE if self.settings.fail_open else DECLINE
        mode = "fail-open" if self.settings.fail_open else "fail-closed"
        return ScoreOutcome(
            tx_id,
            "degraded",
            decision=decision,
            reason=reason,
            message=f"{mode}: {reason}",
            timings_ms=timings,
        )

    def score_event(self, event: Any) -> ScoreOutcome:
        """One Lambda event (plain or API Gateway) to an outcome; never raises."""
        started = time.perf_counter()
        try:
            raw = parse_event(event)
        except InvalidTransaction as exc:
            return ScoreOutcome(
                None, "invalid", reason=exc.reason, message=str(exc), timings_ms={"validate": _ms(started)}
            )
        return self.score_one(raw, started=started)

    def score_one(self, raw: Any, *, started: float | None = None) -> ScoreOutcome:
        """Score one raw transaction (mapping); never raises."""
        started = time.perf_counter() if started is None else started
        tx_id = raw.get(self.cfg.fields.id) if isinstance(raw, Mapping) else None
        tx_id = tx_id if isinstance(tx_id, str) else None
        try:
            return self._score_batch([raw], started)[0]
        except Exception:  # the handler answers; the log has the trace, the caller never does
            log.exception("scoring transaction %s failed unexpectedly", tx_id)
            return ScoreOutcome(
                tx_id,
                "error",
                reason="internal_error",
                message="internal error",
                timings_ms={"total": _ms(started)},
            )

    def score_many(self, raws: Sequence[Mapping[str, Any]]) -> list[ScoreOutcome]:
        """Several transactions, one endpoint call: the change-stream scorer's batch path.

        Raises EndpointUnavailable (and PyMongoError) instead of degrading: the scorer must
        not move its resume token past transactions it could not score.
        """
        return self._score_batch(list(raws), time.perf_counter(), degrade=False)

    def _score_batch(self, raws: list[Any], started: float, degrade: bool = True) -> list[ScoreOutcome]:
        f = self.cfg.fields
        now = self.clock()
        outcomes: list[ScoreOutcome | None] = [None] * len(raws)
        valid: list[tuple[int, dict[str, Any]]] = []
        for i, raw in enumerate(raws):
            try:
                valid.append(
                    (i, validate_transaction(raw, self.cfg, now=now, max_future_s=self.settings.max_future_s))
                )
            except InvalidTransaction as exc:
                tx_id = raw.get(f.id) if isinstance(raw, Mapping) else None
                outcomes[i] = ScoreOutcome(
                    tx_id if isinstance(tx_id, str) else None,
                    "invalid",
                    reason=exc.reason,
                    message=str(exc),
                    timings_ms={"validate": _ms(started)},
                )
        if not valid:
            return outcomes  # type: ignore[return-value]
        timings = {"validate": _ms(started)}
        mark = time.perf_counter()
        try:
            features = live_features_many(self.transactions, [tx for _, tx in valid], self.cfg)
        except PyMongoError as exc:
            if not degrade:
                raise
            timings["features"] = _ms(mark)
            for i, tx in valid:
                outcomes[i] = self._degraded(
                    tx[f.id], f"history unavailable ({type(exc).__name__})", dict(timings)
                )
            return outcomes  # type: ignore[return-value]
        timings["features"] = _ms(mark)
        mark = time.perf_counter()
        try:
            probabilities, version = self.endpoint.invoke(features)
        except EndpointUnavailable as exc:
            if not degrade:
                raise
            timings["endpoint"] = _ms(mark)
            log.warning("endpoint unavailable, answering degraded: %s", exc)
            for i, tx in valid:
                outcomes[i] = self._degraded(tx[f.id], str(exc), dict(timings))
            return outcomes  # type: ignore[return-value]
        timings["endpoint"] = _ms(mark)
        mark = time.perf_counter()
        scored_at = self.clock()
        records = [
            {
                "tx_id": tx[f.id],
                "tx_time": tx[f.time],
                "fraud_probability": probability,
                "decision": self.decide(probability),
                "threshold": self.settings.threshold,
                "model_version": version,
                "scored_at": scored_at,
                "source": self.source,
                "features": feats,
            }
            for (_, tx), feats, probability in zip(valid, features, probabilities, strict=True)
        ]
        try:
            if len(records) > 1 and self.settings.record_mode == "collection":
                # The scorer's batches: one bulk round trip instead of one per transaction.
                results = [(state, None) for state in record_scores_bulk(self.db, self.cfg, records)]
            else:
                results = [record_score(self.db, self.cfg, self.settings, record) for record in records]
        except PyMongoError as exc:
            if not degrade:
                raise
            log.warning("could not record %d score(s): %s", len(records), type(exc).__name__)
            results = [("failed", None)] * len(records)
        for (i, _), record, (recorded, stored) in zip(valid, records, results, strict=True):
            if stored:  # first write wins: answer with the decision already acted upon
                kept = ("fraud_probability", "decision", "threshold", "model_version")
                record = {**record, **{k: stored[k] for k in kept if k in stored}}
            outcomes[i] = ScoreOutcome(
                record["tx_id"],
                "scored",
                fraud_probability=float(record["fraud_probability"]),
                decision=record["decision"],
                threshold=float(record["threshold"]),
                model_version=record["model_version"],
                recorded=recorded,
            )
        timings["record"] = _ms(mark)
        for i, _ in valid:
            outcome = outcomes[i]
            if outcome is not None and outcome.status == "scored":
                outcome.timings_ms = dict(timings)
        return outcomes  # type: ignore[return-value]


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


# ---------------------------------------------------------------- Lambda response


def handler_response(outcome: ScoreOutcome) -> dict[str, Any]:
    """API Gateway proxy shape (also what a function URL or a direct invoke gets back)."""
    status = {"scored": 200, "degraded": 200, "invalid": 400}.get(outcome.status, 500)
    headers = {"Content-Type": "application/json"}
    if outcome.status == "degraded":
        headers["X-Fraud-Scoring-Degraded"] = "true"
    return {"statusCode": status, "headers": headers, "body": json.dumps(outcome.to_json())}


# ---------------------------------------------------------------- change-stream scorer


class ScorerMetrics:
    """Counters and the lag of the change-stream scorer; Prometheus text and a status dict."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self.scored = self.duplicates = self.invalid = self.endpoint_failures = self.batches = 0
        self.backfill = 0
        self.lag_seconds = 0.0
        self.last_event_time: datetime | None = None
        self.last_token_saved: datetime | None = None
        self.started = datetime.now(UTC)

    def observe_batch(
        self,
        scored: int,
        duplicates: int,
        invalid: int,
        last_event: datetime | None,
        now: datetime,
        backfill: int = 0,
    ) -> None:
        with self._lock:
            self.batches += 1
            self.backfill += backfill
            self.scored += scored
            self.duplicates += duplicates
            self.invalid += invalid
            if last_event is not None:
                self.last_event_time = last_event
                self.lag_seconds = max(0.0, (now - last_event).total_seconds())
            self.last_token_saved = now

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "scorer": self.name,
                "scored_total": self.scored,
                "duplicates_skipped_total": self.duplicates,
                "invalid_total": self.invalid,
                "backfill_skipped_total": self.backfill,
                "endpoint_failures_total": self.endpoint_failures,
                "batches_total": self.batches,
                "lag_seconds": round(self.lag_seconds, 3),
                "last_event_time": self.last_event_time.isoformat() if self.last_event_time else None,
                "last_token_saved": self.last_token_saved.isoformat() if self.last_token_saved else None,
                "started": self.started.isoformat(),
            }

    def render(self) -> str:
        s = self.status()
        label = f'{{scorer="{self.name}"}}'
        lines = []
        for key, kind, help_text in (
            ("scored_total", "counter", "Transactions scored and recorded."),
            ("duplicates_skipped_total", "counter", "Re-delivered transactions that already had a score."),
            ("invalid_total", "counter", "Inserted transactions that failed validation (not scored)."),
            (
                "backfill_skipped_total",
                "counter",
                "Inserts far newer than their transaction time (not scored).",
            ),
            ("endpoint_failures_total", "counter", "Batches retried because the endpoint was unavailable."),
            ("lag_seconds", "gauge", "Insert-to-score delay of the last transaction scored."),
        ):
            metric = f"fraud_scorer_{key}"
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}", f"{metric}{label} {s[key]}"]
        return "\n".join(lines) + "\n"


# ChangeStreamHistoryLost (286) and ChangeStreamFatalError (280): resuming cannot work.
HISTORY_LOST_CODES = (280, 286)


class ResumeTokenLost(RuntimeError):
    """The stored resume token fell out of the oplog; the message says what to do."""


@dataclass
class _PendingBatch:
    docs: list[dict[str, Any]]
    token: Mapping[str, Any] | None
    last_event_time: datetime | None
    backfill: int = 0


class ChangeStreamScorer:
    """Scores every insert into the transactions collection, resuming from a stored token.

    Guarantees: the resume token is stored (in `state_collection`, document `_id` = name) only
    after every transaction before it has a recorded score, so a restart never skips one; a
    transaction re-delivered after a crash between "score recorded" and "token stored" already
    has a score and is skipped without calling the endpoint, so none is scored twice. While the
    endpoint is down the batch is retried with backoff and the token stays put.
    """

    def __init__(
        self,
        scorer: LiveScorer,
        *,
        name: str = "change-stream-scorer",
        state_collection: str = "scorer_state",
        batch_size: int = 200,
        max_await_ms: int = 200,
        retry_backoff_s: float = 0.5,
        max_retry_backoff_s: float = 10.0,
        max_backdate_s: float | None = 3600.0,
    ) -> None:
        if scorer.settings.record_mode == "off":
            raise ValueError("the change-stream scorer needs FRAUD_SCORING_RECORD=collection or document")
        self.scorer = scorer
        self.name = name
        self.state = scorer.db[state_collection]
        self.batch_size = batch_size
        self.max_await_ms = max_await_ms
        self.retry_backoff_s = retry_backoff_s
        self.max_retry_backoff_s = max_retry_backoff_s
        # A transaction inserted more than this after its own time is a backfill or a seeding
        # run, not live traffic: counted, not scored (None or 0 scores everything).
        self.max_backdate_s = max_backdate_s
        self.metrics = ScorerMetrics(name)
        self.stop_event = threading.Event()
        self.on_batch_recorded: Callable[[], None] | None = None  # test hook: "crash" before the token
        self._saved_token: Mapping[str, Any] | None = None

    def load_token(self) -> Mapping[str, Any] | None:
        doc = self.state.find_one({"_id": self.name})
        return doc.get("resume_token") if doc else None

    def save_token(self, token: Mapping[str, Any], last_event_time: datetime | None) -> None:
        update: dict[str, Any] = {"resume_token": dict(token), "updated_at": datetime.now(UTC)}
        if last_event_time is not None:
            update["last_event_time"] = last_event_time
        self.state.update_one({"_id": self.name}, {"$set": update}, upsert=True)
        self._saved_token = token

    def _open_stream(self) -> Any:
        pipeline = [{"$match": {"operationType": "insert"}}]
        token = self.load_token()
        stream = self.scorer.transactions.watch(
            pipeline,
            resume_after=token,
            max_await_time_ms=self.max_await_ms,
            batch_size=self.batch_size,
        )
        if token is None:
            # First start: store where we begin now, so an insert made before our first event is
            # not lost if we restart before seeing anything.
            start = stream.resume_token
            if start is None:
                stream.try_next()  # an empty getMore hands out the post-batch token
                start = stream.resume_token
            if start is not None:
                self.save_token(start, None)
            log.info("scorer %s: no stored resume token, starting from now", self.name)
        else:
            log.info("scorer %s: resuming after the stored token", self.name)
        return stream

    def _collect(self, stream: Any) -> _PendingBatch | None:
        docs: list[dict[str, Any]] = []
        last_time: datetime | None = None
        backfill = seen = 0
        time_field = self.scorer.cfg.fields.time
        while seen < self.batch_size:
            event = stream.try_next()
            if event is None:
                break
            seen += 1
            event_time = _event_time(event)
            last_time = event_time or last_time
            doc = event.get("fullDocument")
            if doc is None:
                continue
            stamp = doc.get(time_field)
            if self.max_backdate_s and isinstance(stamp, datetime) and event_time is not None:
                stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
                if (event_time - stamp).total_seconds() > self.max_backdate_s:
                    backfill += 1  # history being loaded, not live traffic
                    continue
            docs.append(doc)
        token = stream.resume_token
        if seen == 0 and token is None:
            return None
        return _PendingBatch(docs, token, last_time, backfill)

    def process(self, batch: _PendingBatch) -> None:
        """Score a batch (skipping transactions already scored) and then store its token."""
        f = self.scorer.cfg.fields
        ids = [d.get(f.id) for d in batch.docs if isinstance(d.get(f.id), str)]
        done = already_scored(self.scorer.db, self.scorer.cfg, self.scorer.settings, ids)
        todo = [d for d in batch.docs if d.get(f.id) not in done]
        duplicates = len(batch.docs) - len(todo)
        outcomes = self.scorer.score_many(todo) if todo else []
        invalid = [o for o in outcomes if o.status == "invalid"]
        for outcome in invalid:
            log.warning("scorer %s: not scoring %s: %s", self.name, outcome.tx_id, outcome.reason)
        scored = sum(1 for o in outcomes if o.status == "scored" and o.recorded == "new")
        duplicates += sum(1 for o in outcomes if o.status == "scored" and o.recorded == "existing")
        if self.on_batch_recorded is not None:
            self.on_batch_recorded()
        if batch.token is not None:
            self.save_token(batch.token, batch.last_event_time)
        now = datetime.now(UTC)
        self.metrics.observe_batch(
            scored, duplicates, len(invalid), batch.last_event_time, now, batch.backfill
        )
        if batch.docs or batch.backfill:
            s = self.metrics.status()
            timings = next((o.timings_ms for o in outcomes if o.status == "scored"), {})
            log.info(
                "scorer %s: batch of %d: %d scored, %d already scored, %d invalid, %d backfill; lag %.3f s; "
                "total %d; ms %s",
                self.name,
                len(batch.docs) + batch.backfill,
                scored,
                duplicates,
                len(invalid),
                batch.backfill,
                s["lag_seconds"],
                s["scored_total"],
                {k: round(v) for k, v in timings.items()},
            )

    def run(self, *, max_batches: int | None = None, idle_exit_s: float | None = None) -> None:
        """Watch and score until stop_event is set (or the optional test/bench limits are hit).

        A lost connection reopens the stream from the stored token after a backoff; a token the
        oplog no longer holds (history lost) stops the scorer with the reason instead.
        """
        backoff = self.retry_backoff_s
        while not self.stop_event.is_set():
            try:
                with self._open_stream() as stream:
                    self._watch(stream, max_batches, idle_exit_s)
                return
            except OperationFailure as exc:
                if exc.code in HISTORY_LOST_CODES:
                    raise ResumeTokenLost(
                        f"scorer {self.name}: the stored resume token is no longer in the oplog "
                        f"(code {exc.code}); transactions inserted after "
                        f"{self._last_event_time_stored()} may be unscored. Restart with --reset-token "
                        "to start from now, and score the gap through the handler."
                    ) from None
                self._wait_after(exc, backoff)
            except PyMongoError as exc:
                self._wait_after(exc, backoff)
            backoff = min(backoff * 2, self.max_retry_backoff_s)

    def _wait_after(self, exc: Exception, backoff: float) -> None:
        log.warning(
            "scorer %s: change stream interrupted (%s); reopening from the stored token in %.1f s",
            self.name,
            type(exc).__name__,
            backoff,
        )
        self.stop_event.wait(backoff)

    def _last_event_time_stored(self) -> str:
        doc = self.state.find_one({"_id": self.name}) or {}
        stamp = doc.get("last_event_time")
        return stamp.isoformat() if isinstance(stamp, datetime) else "the last stored token"

    def reset_token(self) -> None:
        """Forget the stored token: the next run starts from now."""
        self.state.delete_one({"_id": self.name})

    def _watch(self, stream: Any, max_batches: int | None, idle_exit_s: float | None) -> None:
        batches = 0
        idle_since = time.monotonic()
        while not self.stop_event.is_set():
            batch = self._collect(stream)
            if batch is None or not (batch.docs or batch.backfill):
                if batch is not None and batch.token is not None and batch.token != self._saved_token:
                    self.save_token(batch.token, None)  # keep the stored token inside the oplog window
                if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                    return
                continue
            idle_since = time.monotonic()
            self._process_with_retry(batch)
            batches += 1
            if max_batches is not None and batches >= max_batches:
                return

    def _process_with_retry(self, batch: _PendingBatch) -> None:
        backoff = self.retry_backoff_s
        while not self.stop_event.is_set():
            try:
                self.process(batch)
                return
            except (EndpointUnavailable, PyMongoError) as exc:
                self.metrics.endpoint_failures += 1
                log.warning(
                    "scorer %s: batch of %d not scored (%s); retrying in %.1f s, resume token kept",
                    self.name,
                    len(batch.docs),
                    exc if isinstance(exc, EndpointUnavailable) else type(exc).__name__,
                    backoff,
                )
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, self.max_retry_backoff_s)

    def stop(self) -> None:
        self.stop_event.set()


def _event_time(event: Mapping[str, Any]) -> datetime | None:
    wall = event.get("wallTime")
    if isinstance(wall, datetime):
        return wall if wall.tzinfo else wall.replace(tzinfo=UTC)
    cluster = event.get("clusterTime")
    if cluster is not None and hasattr(cluster, "time"):
        return datetime.fromtimestamp(cluster.time, UTC)
    return None
