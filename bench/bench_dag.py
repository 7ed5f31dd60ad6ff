"""Full retraining DAG: wall time of one run on 90 days of simulated data, per task.

The handbook-size simulation (5,000 customers, 10,000 terminals) for `--days` days is seeded
into the embedded MongoDB wire server, all but the last day is extracted into the S3 raw zone
(what the daily runs before it did), then ONE run of the DAG for the last day goes through
`airflow dags test` with the default Params (56-day training window, 120 s AutoML budget) and
deploys to the local endpoint. Prints each task's wall time and its share of the run.

    .venv/bin/python bench/bench_dag.py                  # 90 days, handbook size (~15 min)
    .venv/bin/python bench/bench_dag.py --days 45 --customers 1000 --terminals 2000 --budget 20
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "include")]

import demo  # noqa: E402  (include/ is put on the path above)

import local_stack  # noqa: E402

DAG_ID = "fraud_model_retraining"
BIN = Path(sys.executable).parent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10000)
    parser.add_argument("--budget", type=int, default=120, help="AutoML budget in seconds (the Param)")
    parser.add_argument("--window", type=int, default=56, help="training window days (the Param)")
    parser.add_argument("--end", default="2026-11-01", help="first day after the simulated stretch")
    args = parser.parse_args()

    end_day = date.fromisoformat(args.end)
    start_day = end_day - timedelta(days=args.days)
    state = Path(tempfile.mkdtemp(prefix="bench-dag-"))
    token = secrets.token_urlsafe(24)
    mongo = local_stack.start_service("mongo", None, state)
    s3 = local_stack.start_service("s3", None, state)
    s3_env = local_stack.connection_env(mongo.port, s3.port)
    endpoint = local_stack.start_service(
        "endpoint",
        None,
        state,
        env={
            "FRAUD_ENDPOINT_ADMIN_TOKEN": token,
            "FRAUD_S3_ENDPOINT_URL": s3_env["S3_ENDPOINT_URL"],
            **{k: s3_env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")},
        },
    )
    env = {
        **os.environ,
        **s3_env,
        **local_stack.airflow_env(state),
        "FRAUD_ENDPOINT_URL": f"http://127.0.0.1:{endpoint.port}",
        "FRAUD_ENDPOINT_ADMIN_TOKEN": token,
    }
    try:
        began = time.perf_counter()
        print(
            f"seeding {args.days} days ({start_day} .. {end_day}), {args.customers:,} customers", flush=True
        )
        demo._run(
            demo.seed_command(start_day, end_day, args.customers, args.terminals),
            env,
            log=state / "seed.log",
        )
        seeded = time.perf_counter() - began
        last_day = end_day - timedelta(days=1)
        print("extracting the history before the run's interval", flush=True)
        began = time.perf_counter()
        demo._run(
            demo.extract_history_command(start_day, last_day),
            env,
            log=state / "extract-history.log",
        )
        history = time.perf_counter() - began
        demo._run([str(BIN / "airflow"), "db", "migrate"], env, log=state / "db-migrate.log")
        conf = {"training_budget_s": args.budget, "training_window_days": args.window}
        logical = demo.midnight_utc(end_day)
        print(f"airflow dags test {DAG_ID} {logical} --conf {json.dumps(conf)}", flush=True)
        began = time.perf_counter()
        demo._run(
            demo.dags_test_command(end_day, conf),
            env,
            log=state / "dag-test.log",
            timeout=3600,
        )
        wall = time.perf_counter() - began
        run = demo.read_latest_run(env)
    finally:
        for service in (endpoint, s3, mongo):
            local_stack.stop_service(service)

    tasks = run["tasks"]
    task_total = sum(t["seconds"] or 0 for t in tasks)
    print(f"\nrun {run['run_id']}: {run['state']}, interval {run['interval'][0]} -> {run['interval'][1]}")
    print(
        f"setup (not part of the run): seeding {seeded:.0f}s, extracting {args.days - 1} days of history {history:.0f}s"
    )
    print(f"\n{'task':<30}{'state':<10}{'seconds':>9}{'share':>8}")
    for t in tasks:
        label = t["task"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else "")
        seconds = t["seconds"] or 0.0
        print(f"{label:<30}{t['state'].split('.')[-1]:<10}{seconds:>9.1f}{seconds / task_total:>8.0%}")
    print(f"{'sum of task times':<40}{task_total:>9.1f}")
    print(
        f"{'run wall time (airflow dags test)':<40}{wall:>9.1f}  (includes Airflow start-up and scheduling)"
    )
    stage = next((t for t in tasks if t["task"] == "stage_to_s3"), None)
    if stage and isinstance(stage["result"], dict):
        rows = stage["result"].get("rows")
        print(f"training set rows: {json.dumps(rows)}")
    return 0 if run["state"].endswith("success") else 1


if __name__ == "__main__":
    raise SystemExit(main())
