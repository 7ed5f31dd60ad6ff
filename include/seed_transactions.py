"""Seed simulated card transactions into MongoDB, or keep live traffic flowing.

    python include/seed_transactions.py seed --days 60 --customers 2000 --terminals 4000 \\
        --start 2026-09-01 --seed 42 --malformed-share 0.001 [--as-of ...] [--mongo-uri ...]
    python include/seed_transactions.py live --rate 5 [--duration 60] [same simulation options]

The MongoDB URI comes from --mongo-uri or $MONGO_URI; database and collection from the use-case
config. Re-running the same seed and range skips what is there and applies newly due labels.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

import numpy as np
import pandas as pd
import pymongo
from tqdm import tqdm

from fraud_retraining.config import load_use_case
from fraud_retraining.seeding import apply_due_labels, seed, summary_json
from fraud_retraining.simulator import (
    SimulationParams,
    build_profiles,
    simulate,
    simulate_live_batch,
)
from fraud_retraining.storage import ensure_transaction_indexes
from fraud_retraining.timeutil import as_utc


def _params(args: argparse.Namespace) -> SimulationParams:
    return SimulationParams(
        n_customers=args.customers,
        n_terminals=args.terminals,
        n_days=args.days,
        start_date=args.start,
        seed=args.seed,
        drift_start_day=args.drift_start_day,
    )


def _collection(args: argparse.Namespace):
    uri = args.mongo_uri or os.environ.get("MONGO_URI")
    if not uri:
        raise SystemExit("no MongoDB URI: pass --mongo-uri or set $MONGO_URI")
    cfg = load_use_case(args.config)
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=10_000, tz_aware=True)
    return client, client[cfg.mongo.database][cfg.mongo.collection], cfg


def run_seed(args: argparse.Namespace) -> int:
    client, collection, cfg = _collection(args)
    as_of = as_utc(args.as_of) if args.as_of else datetime.now(UTC)
    try:
        frame = simulate(_params(args), cfg)
        with tqdm(total=len(frame), unit="rows", unit_scale=True, desc="seeding") as bar:
            summary = seed(
                collection,
                frame,
                cfg,
                as_of=as_of,
                malformed_share=args.malformed_share,
                seed_value=args.seed,
                batch_size=args.batch_size,
                progress=bar.update,
            )
        print(summary_json(summary))
    finally:
        client.close()
    return 0


def run_live(args: argparse.Namespace) -> int:
    """Insert `rate` transactions a second stamped now, and apply labels as they fall due."""
    client, collection, cfg = _collection(args)
    params = _params(args)
    rng = np.random.default_rng(args.seed + 1)
    profiles = build_profiles(params, np.random.default_rng(params.seed))
    ensure_transaction_indexes(collection, cfg.fields)
    # The seeded history's labels keep arriving too, from the same deterministic simulation.
    pending = [simulate(params, cfg)] if args.with_history else []
    run_tag = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    compromised = rng.choice(params.n_terminals, 2, replace=False)
    deadline = time.monotonic() + args.duration if args.duration else None
    inserted = labelled = tick = 0
    last: pd.Timestamp | None = None
    try:
        with tqdm(unit="rows", desc="live") as bar:
            while deadline is None or time.monotonic() < deadline:
                started = time.monotonic()
                now = datetime.now(UTC)
                batch = simulate_live_batch(
                    profiles, params, cfg, args.rate, now, rng, f"live-{run_tag}-{tick:07d}-", compromised
                )
                tick += 1
                summary = seed(collection, batch, cfg, as_of=now, seed_value=args.seed)
                inserted += summary["inserted"]
                pending.append(batch)
                for frame in pending:
                    # Only labels that fell due since the last tick: re-sending all would be O(history).
                    fresh = frame if last is None else frame[frame[cfg.fields.labeled_at] > last]
                    labelled += apply_due_labels(collection, fresh, cfg, now)
                last = pd.Timestamp(now)
                # Drop frames whose labels have all landed.
                pending = [f for f in pending if (f[cfg.fields.labeled_at] > now).any()]
                bar.update(summary["inserted"])
                time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    print(summary_json({"inserted": inserted, "labels_applied": labelled, "seconds_run": tick}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("seed", "seed a simulated stretch of history"), ("live", "keep inserting now")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--days", type=int, default=60)
        p.add_argument("--customers", type=int, default=2000)
        p.add_argument("--terminals", type=int, default=4000)
        p.add_argument("--start", default="2026-09-01", help="first simulated day (UTC)")
        p.add_argument("--seed", type=int, default=42)
        p.add_argument("--drift-start-day", type=int, default=None, help="day index of the new tactic")
        p.add_argument("--mongo-uri", default=None, help="default: $MONGO_URI")
        p.add_argument("--config", default=None, help="use-case YAML (default: the bundled one)")
        p.add_argument("--batch-size", type=int, default=5_000)
    seed_p = sub.choices["seed"]
    seed_p.add_argument("--malformed-share", type=float, default=0.0)
    seed_p.add_argument("--as-of", default=None, help="labels due by then are written (default: now)")
    live_p = sub.choices["live"]
    live_p.add_argument("--rate", type=int, default=5, help="transactions per second")
    live_p.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    live_p.add_argument(
        "--with-history", action="store_true", help="also apply the due labels of the seeded history"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_seed(args) if args.command == "seed" else run_live(args)


if __name__ == "__main__":
    raise SystemExit(main())
