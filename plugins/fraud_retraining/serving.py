"""Scoring endpoint with the SageMaker inference-container contract and a zero-downtime model swap.

Routes: GET /ping, POST /invocations, GET /metrics, and a bearer-token admin API
(POST /admin/deploy, POST /admin/rollback, GET /admin/status). A deploy loads the new model beside
the serving one, smoke-tests it, then swaps one reference under a lock; requests read that
reference once, so an in-flight request finishes on the model it started with.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

log = logging.getLogger(__name__)

ADMIN_TOKEN_ENV = "FRAUD_ENDPOINT_ADMIN_TOKEN"  # noqa: S105 - env var name, not a secret
SMOKE_SAMPLE_FILE = "smoke_sample.json"
DEFAULT_MAX_BODY_BYTES = 6 * 1024 * 1024  # SageMaker's own invocation payload limit
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Model(Protocol):
    feature_names: list[str]
    version: str

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...


ModelLoader = Callable[[str], Model]


class PayloadError(ValueError):
    """A client error: the request is rejected with `status` and the message as reason."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class DeployError(RuntimeError):
    """A deploy refused; the serving model is unchanged."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def default_model_loader(source: str) -> Model:
    """Load a model artifact from a local directory or an s3://bucket/prefix URI."""
    from fraud_retraining import model_artifact

    if source.startswith("s3://"):
        import boto3

        bucket, _, prefix = source[len("s3://") :].partition("/")
        client = boto3.client("s3", endpoint_url=os.environ.get("FRAUD_S3_ENDPOINT_URL") or None)
        return model_artifact.load_model_from_s3(client, bucket, prefix)
    return model_artifact.load_model(source)


def load_smoke_sample(source: str) -> list[list[float]] | None:
    """Sample rows stored beside a local model (smoke_sample.json: {"instances": [[...], ...]})."""
    if source.startswith("s3://"):
        return None
    path = os.path.join(source, SMOKE_SAMPLE_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)["instances"]


# ---------------------------------------------------------------- payload parsing (hot path)


def _as_matrix(rows: Any, n_features: int) -> np.ndarray:
    try:
        matrix = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"non-numeric or ragged feature values: {exc}") from None
    if matrix.ndim == 1 and matrix.size == n_features:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise PayloadError("expected a non-empty list of rows")
    if matrix.shape[1] != n_features:
        raise PayloadError(f"expected {n_features} feature columns, got {matrix.shape[1]}")
    return matrix


def _records_to_matrix(records: list[Any], feature_names: Sequence[str]) -> np.ndarray:
    """Named records -> the model's columns. Names the model does not use are ignored (as MLflow's
    schema enforcement does): callers send the whole feature catalogue of their code version, so a
    champion trained on an older, smaller feature set keeps serving through a feature upgrade. A
    misspelt name still fails, as the feature it was meant to be is then missing."""
    required = set(feature_names)
    matrix = np.empty((len(records), len(feature_names)), dtype=np.float64)
    for r, record in enumerate(records):
        if not isinstance(record, dict):
            raise PayloadError(f"record {r} is not an object")
        missing = required - record.keys()
        if missing:
            raise PayloadError(f"record {r} lacks features: {sorted(missing)}")
        try:
            matrix[r] = [float(record[name]) for name in feature_names]
        except (TypeError, ValueError):
            raise PayloadError(f"record {r} has a non-numeric value") from None
    return matrix


def parse_json_payload(body: bytes, feature_names: Sequence[str]) -> np.ndarray:
    """{"instances": [[...], ...]}, {"instances": [{...}]} or a list of records -> matrix."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"invalid JSON: {exc}") from None
    rows = payload.get("instances") if isinstance(payload, dict) else payload
    if not isinstance(rows, list) or not rows:
        raise PayloadError('expected {"instances": [...]} or a non-empty list of records')
    if isinstance(rows[0], dict):
        return _records_to_matrix(rows, feature_names)
    return _as_matrix(rows, len(feature_names))


def parse_csv_payload(body: bytes, feature_names: Sequence[str]) -> np.ndarray:
    """CSV rows in the model's feature order, or with a header row naming the features (extra
    named columns are ignored, as for JSON records)."""
    text = body.decode("utf-8", errors="strict").strip()
    if not text:
        raise PayloadError("empty body")
    first_line, _, rest = text.partition("\n")
    first_cells = [cell.strip() for cell in first_line.split(",")]
    if not _is_number(first_cells[0]):
        # A header: pick and reorder columns by name so callers need not know the model's order.
        missing = [name for name in feature_names if name not in first_cells]
        if missing:
            raise PayloadError(f"header lacks features: {missing}")
        if len(set(first_cells)) != len(first_cells):
            raise PayloadError("header names a column twice")
        if not rest.strip():
            raise PayloadError("header without rows")
        matrix = _parse_csv_numbers(rest, len(first_cells))
        return matrix[:, [first_cells.index(name) for name in feature_names]]
    return _parse_csv_numbers(text, len(feature_names))


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _parse_csv_numbers(text: str, n_features: int) -> np.ndarray:
    lines = [line for line in text.splitlines() if line.strip()]
    widths = {line.count(",") + 1 for line in lines}
    if widths != {n_features}:
        raise PayloadError(f"expected {n_features} feature columns, got {sorted(widths)}")
    try:
        # One C-level parse of the whole body; no per-cell Python.
        flat = np.array(",".join(lines).split(","), dtype=np.float64)
    except ValueError as exc:
        raise PayloadError(f"non-numeric feature value: {exc}") from None
    return flat.reshape(len(lines), n_features)


def parse_payload(body: bytes, content_type: str, feature_names: Sequence[str]) -> np.ndarray:
    """Decode an /invocations body into a float matrix in the model's feature order."""
    media_type = content_type.split(";")[0].strip().lower()
    if not body.strip():
        raise PayloadError("empty body")
    if media_type == "text/csv":
        try:
            return parse_csv_payload(body, feature_names)
        except UnicodeDecodeError:
            raise PayloadError("body is not UTF-8") from None
    if media_type == "application/json":
        return parse_json_payload(body, feature_names)
    raise PayloadError(f"unsupported content type {media_type!r}; use text/csv or application/json", 415)


# ---------------------------------------------------------------- model slots


@dataclass(frozen=True)
class Slots:
    """The serving model and the one it replaced; replaced as a whole, never mutated."""

    current: Model | None
    previous: Model | None


class ModelSlots:
    """Current/previous models behind one reference; swaps happen under a lock."""

    def __init__(self) -> None:
        self._slots = Slots(None, None)
        self._lock = threading.Lock()

    @property
    def current(self) -> Model | None:
        return self._slots.current

    @property
    def previous(self) -> Model | None:
        return self._slots.previous

    def install(self, model: Model) -> None:
        with self._lock:
            self._slots = Slots(model, self._slots.current)

    def rollback(self) -> Model:
        with self._lock:
            if self._slots.previous is None:
                raise DeployError("no previous model to roll back to", 409)
            self._slots = Slots(self._slots.previous, self._slots.current)
            return self._slots.current  # type: ignore[return-value]


def smoke_test(model: Model, sample_rows: Any) -> None:
    """Score the sample rows; raise DeployError unless every score is finite and in [0, 1]."""
    try:
        matrix = _as_matrix(sample_rows, len(model.feature_names))
    except PayloadError as exc:
        raise DeployError(f"smoke sample unusable: {exc}") from None
    try:
        scores = np.asarray(model.predict_proba(matrix), dtype=np.float64).reshape(-1)
    except Exception as exc:  # any scoring failure refuses the deploy
        raise DeployError(f"smoke test failed: scoring raised {type(exc).__name__}: {exc}") from None
    if scores.shape[0] != matrix.shape[0]:
        raise DeployError(f"smoke test failed: {scores.shape[0]} scores for {matrix.shape[0]} rows")
    if not np.all(np.isfinite(scores)) or np.any(scores < 0) or np.any(scores > 1):
        raise DeployError("smoke test failed: scores not finite or outside [0, 1]")


# ---------------------------------------------------------------- metrics


class Metrics:
    """Prometheus counters and a latency histogram, rendered in the text exposition format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.bucket_counts = [0] * len(LATENCY_BUCKETS)
        self.latency_sum = 0.0
        self.latency_count = 0

    def observe(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, status)] = self.requests.get((route, status), 0) + 1
            self.latency_sum += seconds
            self.latency_count += 1
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    self.bucket_counts[i] += 1

    def render(self, slots: ModelSlots) -> str:
        with self._lock:
            lines = [
                "# HELP fraud_endpoint_requests_total Requests by route and status.",
                "# TYPE fraud_endpoint_requests_total counter",
            ]
            errors = []
            for (route, status), count in sorted(self.requests.items()):
                lines.append(f'fraud_endpoint_requests_total{{route="{route}",status="{status}"}} {count}')
                if status >= 400:
                    errors.append(f'fraud_endpoint_errors_total{{route="{route}",status="{status}"}} {count}')
            lines += [
                "# HELP fraud_endpoint_errors_total Requests answered with a 4xx or 5xx.",
                "# TYPE fraud_endpoint_errors_total counter",
                *errors,
                "# HELP fraud_endpoint_request_seconds Request latency.",
                "# TYPE fraud_endpoint_request_seconds histogram",
            ]
            for bound, count in zip(LATENCY_BUCKETS, self.bucket_counts, strict=True):
                lines.append(f'fraud_endpoint_request_seconds_bucket{{le="{bound}"}} {count}')
            lines += [
                f'fraud_endpoint_request_seconds_bucket{{le="+Inf"}} {self.latency_count}',
                f"fraud_endpoint_request_seconds_sum {self.latency_sum}",
                f"fraud_endpoint_request_seconds_count {self.latency_count}",
            ]
        current = slots.current
        version = _label_value(current.version) if current is not None else ""
        lines += [
            "# HELP fraud_endpoint_model_info The model version being served.",
            "# TYPE fraud_endpoint_model_info gauge",
            f'fraud_endpoint_model_info{{version="{version}"}} {1 if current is not None else 0}',
        ]
        return "\n".join(lines) + "\n"


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# ---------------------------------------------------------------- app


def create_app(
    *,
    model_loader: ModelLoader = default_model_loader,
    initial_source: str | None = None,
    admin_token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    smoke_sample_loader: Callable[[str], Any] = load_smoke_sample,
) -> Starlette:
    """Build the scoring app. The admin token defaults to env FRAUD_ENDPOINT_ADMIN_TOKEN; with no
    token at all the admin API answers 403 to everyone."""
    token = admin_token if admin_token is not None else os.environ.get(ADMIN_TOKEN_ENV, "")
    slots = ModelSlots()
    metrics = Metrics()
    deploy_lock = threading.Lock()  # one deploy at a time; scoring never waits on it

    if initial_source:
        slots.install(model_loader(initial_source))

    def timed(route: str, handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await handler(request)
            except PayloadError as exc:
                response = JSONResponse({"error": str(exc)}, status_code=exc.status)
            except DeployError as exc:
                response = JSONResponse({"error": str(exc)}, status_code=exc.status)
            metrics.observe(route, response.status_code, time.perf_counter() - started)
            return response

        return endpoint

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise PayloadError(f"body larger than {max_body_bytes} bytes", 413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise PayloadError(f"body larger than {max_body_bytes} bytes", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    async def ping(request: Request) -> Response:
        if slots.current is None:
            return JSONResponse({"status": "unavailable", "reason": "no model loaded"}, status_code=503)
        return JSONResponse({"status": "ok", "model_version": slots.current.version})

    async def invocations(request: Request) -> Response:
        model = slots.current  # read once: a concurrent swap cannot change it mid-request
        if model is None:
            return JSONResponse({"error": "no model loaded"}, status_code=503)
        body = await read_body(request)
        matrix = parse_payload(body, request.headers.get("content-type", ""), model.feature_names)
        scores = np.asarray(model.predict_proba(matrix), dtype=np.float64).reshape(-1)
        if "text/csv" in request.headers.get("accept", ""):
            return PlainTextResponse(
                "\n".join(repr(float(s)) for s in scores) + "\n",
                media_type="text/csv",
                headers={"X-Model-Version": model.version},
            )
        return JSONResponse({"scores": scores.tolist(), "model_version": model.version})

    def require_admin(request: Request) -> None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer "):
            raise DeployError("missing bearer token", 401)
        if not token or not hmac.compare_digest(header[7:].strip().encode(), token.encode()):
            raise DeployError("invalid admin token", 403)

    async def admin_status(request: Request) -> Response:
        require_admin(request)
        return JSONResponse(_status(slots))

    async def admin_deploy(request: Request) -> Response:
        require_admin(request)
        try:
            spec = json.loads(await read_body(request))
        except json.JSONDecodeError as exc:
            raise PayloadError(f"invalid JSON: {exc}") from None
        if not isinstance(spec, dict) or not spec.get("version") or not spec.get("source"):
            raise PayloadError('expected {"version": ..., "source": ...}')
        from starlette.concurrency import run_in_threadpool

        # Loading and smoke-testing run off the event loop so scoring keeps flowing.
        await run_in_threadpool(_deploy, spec, slots, deploy_lock, model_loader, smoke_sample_loader)
        return JSONResponse(_status(slots))

    async def admin_rollback(request: Request) -> Response:
        require_admin(request)
        with deploy_lock:
            slots.rollback()
        log.info("rolled back to model %s", slots.current.version if slots.current else None)
        return JSONResponse(_status(slots))

    async def metrics_route(request: Request) -> Response:
        return PlainTextResponse(metrics.render(slots), media_type="text/plain; version=0.0.4")

    app = Starlette(
        routes=[
            Route("/ping", timed("/ping", ping), methods=["GET"]),
            Route("/invocations", timed("/invocations", invocations), methods=["POST"]),
            Route("/metrics", metrics_route, methods=["GET"]),
            Route("/admin/status", timed("/admin/status", admin_status), methods=["GET"]),
            Route("/admin/deploy", timed("/admin/deploy", admin_deploy), methods=["POST"]),
            Route("/admin/rollback", timed("/admin/rollback", admin_rollback), methods=["POST"]),
        ]
    )
    app.state.slots = slots
    app.state.metrics = metrics
    return app


def _status(slots: ModelSlots) -> dict[str, Any]:
    return {
        "current_version": slots.current.version if slots.current else None,
        "previous_version": slots.previous.version if slots.previous else None,
    }


def _deploy(
    spec: dict[str, Any],
    slots: ModelSlots,
    deploy_lock: threading.Lock,
    model_loader: ModelLoader,
    smoke_sample_loader: Callable[[str], Any],
) -> None:
    version, source = str(spec["version"]), str(spec["source"])
    with deploy_lock:
        try:
            model = model_loader(source)
        except Exception as exc:  # any load failure refuses the deploy
            raise DeployError(
                f"model {version} failed to load from {source}: {type(exc).__name__}: {exc}"
            ) from None
        if model.version != version:
            raise DeployError(f"model at {source} is version {model.version!r}, not {version!r}")
        sample = spec.get("sample_rows") or smoke_sample_loader(source)
        if not sample:
            raise DeployError(
                f"no smoke-test sample rows for model {version} (pass sample_rows or store one)"
            )
        smoke_test(model, sample)
        slots.install(model)
    log.info("now serving model %s", version)


def parse_csv_scores(text: str) -> list[float]:
    """Scores from a text/csv /invocations response (used by clients and tests)."""
    return [float(line) for line in io.StringIO(text).read().split()]
