"""Extract past days into the S3 raw zone in one process: the fast way to fill a fresh raw
zone before the first scheduled run (the stage task needs its training window there).

    python include/extract_history.py --from 2026-10-01 --to 2026-12-03

Each day is the same library call as the DAG's `extract_from_mongo` task for that interval,
so the result is identical to `airflow backfill create` over those dates, without scheduling
one DAG run per day. MongoDB from $MONGO_URI, S3 from $S3_ENDPOINT_URL (unset for AWS S3) and
the usual AWS credential chain; `python include/local_stack.py env` exports all three.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

import boto3
import pymongo

from fraud_retraining.config import load_use_case
from fraud_retraining.extract import extract_interval
from fraud_retraining.storage import ensure_bucket


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--from", dest="first", required=True, help="first day (UTC), inclusive")
    parser.add_argument("--to", dest="last", required=True, help="last day (UTC), exclusive")
    parser.add_argument("--config", default=None, help="use-case YAML")
    parser.add_argument("--batch-size", type=int, default=5000)
    args = parser.parse_args(argv)

    uri = os.environ.get("MONGO_URI")
    if not uri:
        raise SystemExit("set MONGO_URI (see `python include/local_stack.py env`)")
    cfg = load_use_case(args.config)
    client = pymongo.MongoClient(uri, tz_aware=True)
    s3 = boto3.client("s3", endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None)
    ensure_bucket(s3, cfg.s3.bucket)
    day, stop = date.fromisoformat(args.first), date.fromisoformat(args.last)
    totals = {"days": 0, "transactions": 0, "labels": 0, "quarantined": 0}
    started = time.monotonic()
    while day < stop:
        lo = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
        # Documents whose time field is not a date are quarantined by the DAG's own
        # sweep_stray_documents task (by insert time); a history load only extracts.
        summary = extract_interval(client, s3, cfg, lo, lo + timedelta(days=1), batch_size=args.batch_size)
        tx, labels = summary["transactions"], summary["labels"]
        totals["days"] += 1
        totals["transactions"] += tx["rows"]
        totals["labels"] += labels["rows"]
        totals["quarantined"] += tx["quarantined_total"] + labels["quarantined_total"]
        print(
            f"{day}  transactions {tx['rows']:>7}  labels {labels['rows']:>7}  quarantined {tx['quarantined']}"
        )
        day += timedelta(days=1)
    totals["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(totals))
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
