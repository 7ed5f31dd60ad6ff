"""Long-running scorer: watches inserts into the transactions collection with a change stream,
scores each through the handler's path, records the score and stores its resume token in MongoDB.

    python include/scoring/change_stream_scorer.py [--name change-stream-scorer] [--batch-size 200]
        [--metrics-port 8082]

A restart resumes after the stored token (collection `scorer_state`, document `_id` = --name):
nothing inserted meanwhile is skipped and nothing is scored twice. Lag and counters are logged
per batch and served as Prometheus text on http://127.0.0.1:<metrics-port>/metrics and as JSON
on /status. Settings (MongoDB, endpoint, threshold, where scores go): the environment variables
documented in fraud_retraining/scoring.py. Stops cleanly on SIGTERM / Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

try:
    import fraud_retraining  # noqa: F401
except ImportError:  # running from a checkout: the package lives in plugins/
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

from fraud_retraining.scoring import ChangeStreamScorer, LiveScorer, ResumeTokenLost

log = logging.getLogger("change_stream_scorer")


def serve_metrics(scorer: ChangeStreamScorer, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """/metrics (Prometheus text) and /status (JSON) in a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, kind = scorer.metrics.render().encode(), "text/plain; version=0.0.4"
            elif self.path == "/status":
                body, kind = json.dumps(scorer.metrics.status()).encode(), "application/json"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # scrapes every few seconds would drown the scorer's own log

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="scorer-metrics").start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--name", default="change-stream-scorer", help="names the stored resume token")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument(
        "--max-backdate-s",
        type=float,
        default=float(os.environ.get("FRAUD_SCORER_MAX_BACKDATE_S", "3600")),
        help="inserts this much newer than their transaction time are backfills, not scored "
        "(0 scores everything; env FRAUD_SCORER_MAX_BACKDATE_S)",
    )
    parser.add_argument("--metrics-port", type=int, default=None, help="serve /metrics and /status here")
    parser.add_argument("--metrics-host", default="127.0.0.1")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--reset-token", action="store_true", help="forget the stored resume token and start from now"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    scorer = ChangeStreamScorer(
        LiveScorer.from_env(source="change_stream"),
        name=args.name,
        batch_size=args.batch_size,
        max_backdate_s=args.max_backdate_s or None,
    )
    if args.reset_token:
        scorer.reset_token()
        log.warning("scorer %s: stored resume token reset; starting from now", args.name)
    server = serve_metrics(scorer, args.metrics_port, args.metrics_host) if args.metrics_port else None
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: scorer.stop())
    log.info(
        "scorer %s watching (metrics on %s)", args.name, f"port {args.metrics_port}" if server else "log only"
    )
    try:
        scorer.run()
    except ResumeTokenLost as exc:
        log.error("%s", exc)
        return 2
    finally:
        if server is not None:
            server.shutdown()
        log.info("scorer %s stopped: %s", args.name, json.dumps(scorer.metrics.status()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
