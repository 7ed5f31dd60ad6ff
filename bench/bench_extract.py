"""Extract benchmark: ours vs the stock MongoToS3Operator vs a raw cursor drain.

Same SecantusDB server, same moto S3 server, same N documents in one day, one run. Each
contender runs in its own subprocess so its peak RSS is clean; figures print side by side with
ratios against ours.

    .venv/bin/python bench/bench_extract.py --rows 50000     # quick
    .venv/bin/python bench/bench_extract.py                  # 500,000 documents
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "include")]

DAY = datetime(2026, 11, 1, tzinfo=UTC)
BENCH_DB = "bench_extract"
BATCH = 5000


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def load(mongo_uri: str, rows: int) -> None:
    import numpy as np
    import pymongo

    from fraud_retraining.config import load_use_case
    from fraud_retraining.storage import ensure_transaction_indexes

    cfg = load_use_case()
    f = cfg.fields
    coll = pymongo.MongoClient(mongo_uri)[BENCH_DB][cfg.mongo.collection]
    coll.drop()
    ensure_transaction_indexes(coll, f)
    rng = np.random.default_rng(7)
    seconds = np.sort(rng.integers(0, 86_400_000, rows))
    for lo in range(0, rows, 10_000):
        docs = []
        for i in range(lo, min(rows, lo + 10_000)):
            doc = {
                f.id: f"tx-{i:09d}",
                f.time: DAY + timedelta(milliseconds=int(seconds[i])),
                f.customer: int(rng.integers(0, 5000)),
                f.terminal: int(rng.integers(0, 10000)),
                f.amount: round(float(rng.gamma(2.0, 30.0)), 2),
            }
            if i % 10 == 0:  # a tenth labeled within the same day
                doc[f.label] = int(i % 120 == 0)
                doc[f.labeled_at] = doc[f.time] + timedelta(minutes=5)
                doc[f.scenario] = 0
            docs.append(doc)
        coll.insert_many(docs, ordered=False)


def run_ours(bucket: str) -> dict:
    import boto3
    import pymongo

    from fraud_retraining.config import load_use_case
    from fraud_retraining.extract import extract_interval

    cfg = load_use_case()
    client = pymongo.MongoClient(os.environ["MONGO_URI"], tz_aware=True)
    s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
    before = _rss_mb()
    began = time.perf_counter()
    summary = extract_interval(
        client,
        s3,
        cfg,
        DAY,
        DAY + timedelta(days=1),
        bucket=bucket,
        database=BENCH_DB,
        batch_size=BATCH,
    )
    seconds = time.perf_counter() - began
    rows = summary["transactions"]["rows"]
    return {"rows": rows, "labels": summary["labels"]["rows"], "seconds": seconds, "rss_before_mb": before}


def run_stock(bucket: str) -> dict:
    from airflow.providers.amazon.aws.transfers.mongo_to_s3 import MongoToS3Operator

    from fraud_retraining.config import load_use_case

    cfg = load_use_case()
    f = cfg.fields
    op = MongoToS3Operator(
        task_id="stock_mongo_to_s3",
        mongo_conn_id=cfg.mongo.conn_id,
        aws_conn_id=cfg.s3.conn_id,
        mongo_collection=cfg.mongo.collection,
        mongo_db=BENCH_DB,
        mongo_query={f.time: {"$gte": DAY, "$lt": DAY + timedelta(days=1)}},
        s3_bucket=bucket,
        s3_key="stock/transactions.json",
        replace=True,
        allow_disk_use=True,
    )
    before = _rss_mb()
    began = time.perf_counter()
    op.execute({})
    seconds = time.perf_counter() - began
    import boto3

    s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
    body = s3.get_object(Bucket=bucket, Key="stock/transactions.json")["Body"]
    rows = sum(chunk.count(b"\n") for chunk in body.iter_chunks(1 << 20)) + 1
    return {"rows": rows, "seconds": seconds, "rss_before_mb": before}


def run_drain(_bucket: str) -> dict:
    import pymongo

    from fraud_retraining.config import load_use_case

    cfg = load_use_case()
    f = cfg.fields
    coll = pymongo.MongoClient(os.environ["MONGO_URI"], tz_aware=True)[BENCH_DB][cfg.mongo.collection]
    before = _rss_mb()
    began = time.perf_counter()
    rows = 0
    for _doc in coll.find({f.time: {"$gte": DAY, "$lt": DAY + timedelta(days=1)}}, batch_size=BATCH):
        rows += 1
    return {"rows": rows, "seconds": time.perf_counter() - began, "rss_before_mb": before}


def run_sweep(bucket: str) -> dict:
    """The once-per-interval stray sweep (its own DAG task, beside the extract slices)."""
    import boto3
    import pymongo

    from fraud_retraining.config import load_use_case
    from fraud_retraining.extract import sweep_strays

    cfg = load_use_case()
    client = pymongo.MongoClient(os.environ["MONGO_URI"], tz_aware=True)
    s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
    before = _rss_mb()
    began = time.perf_counter()
    summary = sweep_strays(
        client, s3, cfg, DAY, DAY + timedelta(days=1), bucket=bucket, database=BENCH_DB, batch_size=BATCH
    )
    seconds = time.perf_counter() - began
    return {"rows": summary["transactions"]["quarantined_total"], "seconds": seconds, "rss_before_mb": before}


CONTENDERS = {"ours": run_ours, "sweep": run_sweep, "stock": run_stock, "drain": run_drain}


def _child(mode: str, bucket: str) -> None:
    result = CONTENDERS[mode](bucket)
    result["peak_mb"] = _peak_mb()
    print("RESULT " + json.dumps(result), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--child", choices=sorted(CONTENDERS))
    parser.add_argument("--bucket", default="bench-extract")
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.bucket)
        return 0

    import boto3

    import local_stack

    state = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    mongo = local_stack.start_service("mongo", None, state)
    s3srv = local_stack.start_service("s3", None, state)
    try:
        env = {
            **os.environ,
            **local_stack.connection_env(mongo.port, s3srv.port),
            "AIRFLOW_HOME": str(state / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO / "include")]),
        }
        began = time.perf_counter()
        load(env["MONGO_URI"], args.rows)
        print(f"loaded {args.rows:,} documents in {time.perf_counter() - began:.1f}s", flush=True)
        s3 = boto3.client(
            "s3",
            endpoint_url=env["S3_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )
        s3.create_bucket(Bucket=args.bucket)
        results = {}
        for mode in ("drain", "ours", "sweep", "stock"):
            proc = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--bucket", args.bucket],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                print(f"{mode} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
                return 1
            results[mode] = json.loads(line[len("RESULT ") :])
    finally:
        local_stack.stop_service(mongo)
        local_stack.stop_service(s3srv)

    ours = results["ours"]
    print(f"\n{'contender':<26}{'rows':>10}{'seconds':>10}{'rows/s':>12}{'peak MB':>10}{'grew MB':>10}")
    names = {
        "ours": "ours (extract)",
        "sweep": "ours, stray sweep task",
        "stock": "MongoToS3Operator",
        "drain": "raw cursor drain",
    }
    for mode in ("ours", "sweep", "stock", "drain"):
        r = results[mode]
        r["rows_per_s"] = r["rows"] / r["seconds"]
        if mode == "sweep":  # it scans the interval but outputs only strays: report its seconds
            r["rows"], r["rows_per_s"] = results["ours"]["rows"], results["ours"]["rows"] / r["seconds"]
        print(
            f"{names[mode]:<26}{r['rows']:>10,}{r['seconds']:>10.2f}{r['rows_per_s']:>12,.0f}"
            f"{r['peak_mb']:>10.1f}{r['peak_mb'] - r['rss_before_mb']:>10.1f}"
        )
    stock, drain = results["stock"], results["drain"]
    print(
        f"\nours vs MongoToS3Operator: {ours['rows_per_s'] / stock['rows_per_s']:.2f}x speed (target >= 1), "
        f"{stock['peak_mb'] / ours['peak_mb']:.2f}x less peak memory (target >= 3), "
        f"{(stock['peak_mb'] - stock['rss_before_mb']) / max(ours['peak_mb'] - ours['rss_before_mb'], 1):.2f}x "
        "less growth"
    )
    print(f"ours vs raw cursor drain: {ours['rows_per_s'] / drain['rows_per_s']:.2f}x rate (target >= 0.8)")
    serial = ours["rows"] / (ours["seconds"] + results["sweep"]["seconds"])
    print(
        f"stray sweep (own task, runs beside the slices): {results['sweep']['seconds']:.2f}s; if run serially "
        f"after the extract: {serial:,.0f} rows/s = {serial / stock['rows_per_s']:.2f}x MongoToS3Operator, "
        f"{serial / drain['rows_per_s']:.2f}x raw drain"
    )
    print(f"(ours also wrote {ours['labels']:,} label events in the same run and time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
