"""Simulator and seeding throughput, each printed beside its peer from the same run.

1. Simulation at the handbook's scale (--scale 1: 5,000 customers, 10,000 terminals, 183 days):
   rows/s, row count and fraud share beside the handbook's published 1,754,155 rows / 0.84 %.
2. Seeding --seed-rows of those transactions into a fresh embedded MongoDB wire server
   (SecantusDB, started on a free loopback port in a temp dir): our `seed` (unordered batches)
   against a plain `insert_many` loop of the same documents, into a collection with the same
   indexes on the same server.

    .venv/bin/python bench/bench_simulator.py --scale 0.2 --seed-rows 20000   # quick check
    .venv/bin/python bench/bench_simulator.py --scale 1 --seed-rows 50000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))

import pymongo

import local_stack
from fraud_retraining.config import load_use_case
from fraud_retraining.seeding import seed, transaction_documents
from fraud_retraining.simulator import SimulationParams, simulate
from fraud_retraining.storage import ensure_transaction_indexes

HANDBOOK_ROWS = 1_754_155
HANDBOOK_FRAUD_SHARE = 0.0084


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the handbook's population")
    parser.add_argument("--seed-rows", type=int, default=50_000, help="rows seeded into MongoDB")
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg = load_use_case()
    f = cfg.fields

    params = SimulationParams(
        n_customers=round(5000 * args.scale),
        n_terminals=round(10000 * args.scale),
        n_days=183,
        start_date=date(2018, 4, 1),
        seed=args.seed,
    )
    started = time.perf_counter()
    frame = simulate(params, cfg)
    sim_s = time.perf_counter() - started
    expected_rows = HANDBOOK_ROWS * args.scale
    print(
        f"simulation, scale {args.scale}: {len(frame):,} rows in {sim_s:.2f}s = {len(frame) / sim_s:,.0f} rows/s"
    )
    print(
        f"  rows   ours {len(frame):,}  handbook(x scale) {expected_rows:,.0f}  ratio {len(frame) / expected_rows:.3f}"
    )
    fraud_share = float(frame[f.label].mean())
    print(
        f"  fraud  ours {fraud_share:.4%}  handbook {HANDBOOK_FRAUD_SHARE:.2%}  ratio "
        f"{fraud_share / HANDBOOK_FRAUD_SHARE:.3f}"
        + ("" if args.scale == 1 else "  (per-day compromise counts do not scale: compare at --scale 1)")
    )
    print(
        f"  frauds by scenario {frame.loc[frame[f.label] == 1, f.scenario].value_counts().sort_index().to_dict()}"
    )

    subset = frame.iloc[: args.seed_rows]
    as_of = subset[f.time].iloc[-1].to_pydatetime()
    with tempfile.TemporaryDirectory() as state:
        service = local_stack.start_service("mongo", None, Path(state))
        client = pymongo.MongoClient(local_stack.mongo_uri(service.port), tz_aware=True)
        try:
            db = client["bench"]
            ours_coll, peer_coll = db["ours"], db["peer"]
            ensure_transaction_indexes(peer_coll, f)  # same indexes, so the same work per insert

            started = time.perf_counter()
            summary = seed(ours_coll, subset, cfg, as_of=as_of, batch_size=args.batch_size)
            ours_s = time.perf_counter() - started

            started = time.perf_counter()
            batch: list[dict] = []
            for doc in transaction_documents(subset, cfg, as_of):
                batch.append(doc)
                if len(batch) >= args.batch_size:
                    peer_coll.insert_many(batch)
                    batch = []
            if batch:
                peer_coll.insert_many(batch)
            peer_s = time.perf_counter() - started
            assert ours_coll.count_documents({}) == peer_coll.count_documents({}) == len(subset)
        finally:
            client.close()
            local_stack.stop_service(service)
    ours_rate, peer_rate = summary["inserted"] / ours_s, len(subset) / peer_s
    print(f"seeding {len(subset):,} rows into SecantusDB (batch {args.batch_size}):")
    print(
        f"  ours seed() {ours_rate:,.0f} rows/s ({ours_s:.1f}s)   plain insert_many loop {peer_rate:,.0f} rows/s "
        f"({peer_s:.1f}s)   ratio {ours_rate / peer_rate:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
