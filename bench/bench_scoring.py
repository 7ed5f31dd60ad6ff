"""Live scoring on the embedded stack: the Lambda handler end to end next to its two parts, and
the change-stream scorer's throughput next to the live-traffic insert rate.

Starts SecantusDB (include/local_stack.py start_service) and the scoring endpoint
(include/serve_endpoint.py with a LightGBM model trained on the seeded data's own features) on
free 127.0.0.1 ports, seeds simulated history ending now, then measures:

* handler end to end (lambda_handler: validate, history look-up, endpoint, record) p50/p99,
  next to the history look-up + features alone and the endpoint call alone;
* change-stream scorer: a backlog of live transactions (the simulator's simulate_live_batch,
  inserted as the live traffic generator does) drained from the stored resume token, tx scored/s,
  next to the insert rate of that traffic.

    python bench/bench_scoring.py [--customers 100] [--terminals 150] [--days 40] [--requests 200]
                                  [--scorer-tx 600] [--scorer-batch 200] [--verbose]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT / "include"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import httpx  # noqa: E402
import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pymongo  # noqa: E402
import yaml  # noqa: E402

import local_stack  # noqa: E402
from fraud_retraining import model_artifact  # noqa: E402
from fraud_retraining.config import DEFAULT_CONFIG_PATH, load_use_case  # noqa: E402
from fraud_retraining.features import FEATURE_COLUMNS, compute_features, features_for_transaction  # noqa: E402
from fraud_retraining.scoring import (  # noqa: E402
    ChangeStreamScorer,
    HttpEndpointClient,
    LiveScorer,
    ScoringSettings,
    fetch_history,
    validate_transaction,
)
from fraud_retraining.seeding import seed  # noqa: E402
from fraud_retraining.serving import SMOKE_SAMPLE_FILE  # noqa: E402
from fraud_retraining.simulator import (  # noqa: E402
    SimulationParams,
    build_profiles,
    simulate,
    simulate_live_batch,
)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pct(samples: list[float]) -> tuple[float, float]:
    values = np.asarray(samples) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def train_model(frame: pd.DataFrame, cfg, directory: Path) -> Path:
    f = cfg.fields
    known = frame[[f.id, f.label, f.labeled_at]]
    features = compute_features(frame[[f.id, f.time, f.customer, f.terminal, f.amount]], known, cfg)
    X = features[FEATURE_COLUMNS].to_numpy(dtype=np.float64)
    y = frame[f.label].to_numpy()
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 15}, lgb.Dataset(X, label=y), 60)
    model_dir = model_artifact.write_model_dir(
        model_artifact.serialize_model(booster, FEATURE_COLUMNS, "bench-v1"), directory / "bench-v1"
    )
    (model_dir / SMOKE_SAMPLE_FILE).write_text(json.dumps({"instances": X[:5].tolist()}))
    return model_dir


def start_endpoint(model_dir: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = local_stack.free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "include/serve_endpoint.py"),
                "--port",
                str(port),
                "--model-store",
                str(model_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"endpoint did not start; see {log_path}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=100)
    parser.add_argument("--terminals", type=int, default=150)
    parser.add_argument("--days", type=int, default=40)
    parser.add_argument("--requests", type=int, default=200, help="timed calls per measurement")
    parser.add_argument("--scorer-tx", type=int, default=600, help="live transactions for the scorer")
    parser.add_argument("--scorer-batch", type=int, default=200, help="change events per scorer batch")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--verbose", action="store_true", help="log each scorer batch")
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    if not args.verbose:  # the handler logs one line per call at INFO, as it should in Lambda
        logging.getLogger("fraud_scoring").disabled = True
    work = Path(tempfile.mkdtemp(prefix="bench-scoring-"))
    # A timeout's SIGTERM must still run the finally below, which stops the servers we started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    mongo = local_stack.start_service("mongo", None, work)
    endpoint_proc = None
    try:
        uri = local_stack.mongo_uri(mongo.port)
        raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
        raw["mongo"]["database"] = f"bench_{uuid.uuid4().hex[:8]}"
        config_path = work / "use_case.yaml"
        config_path.write_text(yaml.safe_dump(raw))
        cfg = load_use_case(config_path)
        f = cfg.fields

        now = datetime.now(UTC).replace(microsecond=0)
        params = SimulationParams(
            n_customers=args.customers,
            n_terminals=args.terminals,
            n_days=args.days,
            start_date=(now - timedelta(days=args.days)).date(),
            seed=args.seed,
        )
        frame = simulate(params, cfg)
        frame = frame[frame[f.time] < pd.Timestamp(now)].reset_index(drop=True)
        client: pymongo.MongoClient = pymongo.MongoClient(uri, tz_aware=True)
        db = client[cfg.mongo.database]
        seeded = seed(db[cfg.mongo.collection], frame, cfg, as_of=now, seed_value=args.seed)
        print(
            f"history: {seeded['inserted']:,} transactions over {args.days} days, seeded in {seeded['seconds']} s"
        )

        progress("training the model, starting the endpoint")
        endpoint_proc, url = start_endpoint(train_model(frame, cfg, work), work / "endpoint.log")
        profiles = build_profiles(params, np.random.default_rng(params.seed))
        rng = np.random.default_rng(args.seed + 1)

        def events(n: int) -> list[dict]:
            batch = simulate_live_batch(
                profiles, params, cfg, n, datetime.now(UTC), rng, f"b-{uuid.uuid4().hex[:6]}-"
            )
            return [
                {
                    f.id: r[f.id],
                    f.time: r[f.time].isoformat(),
                    f.customer: int(r[f.customer]),
                    f.terminal: int(r[f.terminal]),
                    f.amount: float(r[f.amount]),
                }
                for _, r in batch.iterrows()
            ]

        n = args.requests
        progress("feature look-ups")
        collection = db.get_collection(cfg.mongo.collection)
        lookups: list[float] = []
        queries: list[float] = []
        computes: list[float] = []
        feature_rows = []
        for event in events(n + 20):
            tx = validate_transaction(event, cfg)
            started = time.perf_counter()
            rows, labels = fetch_history(collection, tx, cfg)
            queried = time.perf_counter()
            feature_rows.append(features_for_transaction(tx, rows, labels, cfg))
            lookups.append(time.perf_counter() - started)
            queries.append(queried - started)
            computes.append(time.perf_counter() - queried)
        lookups, queries, computes = lookups[20:], queries[20:], computes[20:]

        progress("endpoint calls")
        http = HttpEndpointClient(url)
        calls = []
        for row in feature_rows:
            started = time.perf_counter()
            http.invoke([row])
            calls.append(time.perf_counter() - started)
        calls = calls[20:]

        os.environ.update(
            {"MONGO_URI": uri, "FRAUD_USE_CASE_CONFIG": str(config_path), "FRAUD_ENDPOINT_URL": url}
        )
        from scoring import lambda_function

        progress("handler calls")
        handler = []
        statuses: dict[int, int] = {}
        for event in events(n + 20):
            started = time.perf_counter()
            response = lambda_function.lambda_handler(event, None)
            handler.append(time.perf_counter() - started)
            statuses[response["statusCode"]] = statuses.get(response["statusCode"], 0) + 1
        handler = handler[20:]

        progress("change-stream scorer")
        # Change-stream scorer: store a token, insert a backlog as live traffic does, drain it.
        scorer = ChangeStreamScorer(
            LiveScorer(db, cfg, ScoringSettings(), HttpEndpointClient(url), source="change_stream"),
            name="bench-scorer",
            batch_size=args.scorer_batch,
            max_await_ms=100,
        )
        scorer.run(idle_exit_s=0.3)
        tick = 50  # rows per insert, like the live generator's per-second batches
        inserted = 0
        started = time.perf_counter()
        while inserted < args.scorer_tx:
            now_live = datetime.now(UTC)
            batch = simulate_live_batch(profiles, params, cfg, tick, now_live, rng, f"s-{inserted:07d}-")
            seed(db[cfg.mongo.collection], batch, cfg, as_of=now_live)
            inserted += tick
        insert_s = time.perf_counter() - started
        progress(f"inserted {inserted} live transactions; draining")
        started = time.perf_counter()
        scorer.run(idle_exit_s=1.0)
        drain_s = time.perf_counter() - started - 1.0
        scored = scorer.metrics.status()["scored_total"]

        p50_h, p99_h = pct(handler)
        p50_f, p99_f = pct(lookups)
        p50_e, p99_e = pct(calls)
        print(f"\nhandler responses: {statuses}   ({n} timed calls each, after 20 warm-up)")
        print(f"{'':34s} {'p50 ms':>9s} {'p99 ms':>9s}")
        print(f"{'handler end to end':34s} {p50_h:9.2f} {p99_h:9.2f}")
        print(f"{'  history look-up + features':34s} {p50_f:9.2f} {p99_f:9.2f}")
        p50_q, p99_q = pct(queries)
        p50_c, p99_c = pct(computes)
        print(f"{'    2 MongoDB queries':34s} {p50_q:9.2f} {p99_q:9.2f}")
        print(f"{'    features_for_transaction':34s} {p50_c:9.2f} {p99_c:9.2f}")
        print(f"{'  endpoint call alone':34s} {p50_e:9.2f} {p99_e:9.2f}")
        print(f"{'  rest (validate, record, glue)':34s} {p50_h - p50_f - p50_e:9.2f}   (p50 difference)")
        insert_rate = inserted / insert_s
        score_rate = scored / drain_s
        print(f"\nchange-stream scorer: {scored:,} of {inserted:,} live transactions scored")
        print(f"{'live-traffic insert rate (max)':34s} {insert_rate:9.0f} tx/s")
        print(
            f"{'scorer throughput (backlog)':34s} {score_rate:9.0f} tx/s   = {score_rate / insert_rate:.2f}x the insert rate"
        )
        print(f"{'simulator live default (--rate)':34s} {5:9d} tx/s   = {score_rate / 5:.0f}x headroom")
        load = os.getloadavg()
        print(
            f"\nmachine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} (1 / 5 min) at the end"
        )
        client.close()
    finally:
        if endpoint_proc is not None:
            endpoint_proc.terminate()
            endpoint_proc.wait(timeout=10)
        local_stack.stop_service(mongo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
