"""Run the scoring endpoint: python include/serve_endpoint.py --port 8081 --model-store <dir|s3://...>.

The admin token comes from env FRAUD_ENDPOINT_ADMIN_TOKEN and is never logged.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
# One OpenMP thread per scoring call: single-row requests dominate, and waking a thread team for
# them costs more than it saves (p99 spikes on a shared machine). Set before LightGBM loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import uvicorn

from fraud_retraining.serving import DEFAULT_MAX_BODY_BYTES, create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument(
        "--model-store", default=None, help="model dir or s3://bucket/prefix to serve at start"
    )
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    args = parser.parse_args(argv)
    app = create_app(initial_source=args.model_store, max_body_bytes=args.max_body_bytes)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
