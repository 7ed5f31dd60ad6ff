"""AWS Lambda entry point for live scoring: `lambda_function.lambda_handler`.

Deploy this file with the `fraud_retraining` package (plugins/fraud_retraining) beside it in the
zip or a layer; the same file runs locally (`python include/scoring/lambda_function.py event.json`).
The event is one transaction, plain or as an API Gateway proxy event with a JSON body:

    {"tx_id": "t-1", "tx_datetime": "2026-12-04T10:00:00Z", "customer_id": 7, "terminal_id": 42,
     "amount": 12.5}

The answer is API Gateway's proxy shape: statusCode 200 with tx_id, fraud_probability, decision,
model_version and latency_ms (status "degraded" with the fail-open/closed decision when the
endpoint or MongoDB is down), 400 with the reason for bad input. Settings: environment variables
documented in fraud_retraining/scoring.py. The MongoDB client and the endpoint client are
created on the first call and reused by every later call in the same container.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

try:
    import fraud_retraining  # noqa: F401  - deployed beside this file in the Lambda zip
except ImportError:  # running from a checkout: the package lives in plugins/
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

from fraud_retraining.scoring import LiveScorer, ScoreOutcome, handler_response

log = logging.getLogger("fraud_scoring")
log.setLevel(logging.INFO)

_SCORER: LiveScorer | None = None
_LOCK = threading.Lock()


def _scorer() -> LiveScorer:
    global _SCORER
    if _SCORER is None:
        with _LOCK:
            if _SCORER is None:
                _SCORER = LiveScorer.from_env(source="lambda")
    return _SCORER


def reset_clients() -> None:
    """Forget the cached clients (tests; a settings change in a long-lived local process)."""
    global _SCORER
    with _LOCK:
        _SCORER = None


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    try:
        scorer = _scorer()
    except Exception as exc:
        # The exception's text may quote a connection string: only its type is reported.
        log.error("scoring handler is not configured: %s", type(exc).__name__)
        outcome = ScoreOutcome(
            None, "error", reason="not_configured", message=f"scoring not configured ({type(exc).__name__})"
        )
        return handler_response(outcome)
    outcome = scorer.score_event(event)
    log.info(
        json.dumps(
            {
                k: v
                for k, v in outcome.to_json().items()
                if k in ("tx_id", "status", "decision", "model_version", "latency_ms", "reason")
            }
        )
    )
    return handler_response(outcome)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if len(sys.argv) != 2:
        raise SystemExit("usage: lambda_function.py EVENT.json   (or - for stdin)")
    raw = sys.stdin.read() if sys.argv[1] == "-" else Path(sys.argv[1]).read_text()
    print(json.dumps(lambda_handler(json.loads(raw), None), indent=2))
