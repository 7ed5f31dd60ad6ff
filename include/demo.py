"""`make demo`: the retraining DAG once, end to end, on the embedded local stack.

1. starts the MongoDB wire server and the S3 server (unless `make up` already runs them),
2. seeds a small, deterministic stretch of simulated card transactions into MongoDB,
3. extracts all but the last day into the S3 raw zone (include/extract_history.py: the same
   library call as the DAG's extract task, one process instead of one DAG run per day),
4. runs the DAG for the last simulated day with `airflow dags test`,
5. prints what each task did (its XCom summary), then stops only what it started.

Everything lands under .local/ (ignored by git). The full task log is .local/logs/demo-dag-test.log.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import local_stack

DAG_ID = "fraud_model_retraining"
BIN = Path(sys.executable).parent


def _run(cmd: list[str], env: dict[str, str], log: Path | None = None, timeout: float = 1800) -> None:
    """Run a step; on failure print the tail of its output and stop the demo."""
    started = time.monotonic()
    if log is None:
        result = subprocess.run(cmd, env=env, timeout=timeout, check=False)
    else:
        with open(log, "w") as handle:
            result = subprocess.run(
                cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout, check=False
            )
    if result.returncode != 0:
        if log is not None:
            print(local_stack._tail(log, 60), file=sys.stderr)
        raise SystemExit(f"demo step failed ({result.returncode}): {' '.join(cmd[:3])} ...")
    print(f"   done in {time.monotonic() - started:.1f}s", flush=True)


def midnight_utc(day: date) -> str:
    """`day` 00:00 UTC as the CLIs take it (the seeder's --as-of, a DAG run's logical date)."""
    return f"{day.isoformat()}T00:00:00+00:00"


def seed_command(start_day: date, end_day: date, customers: int, terminals: int, *extra: str) -> list[str]:
    """include/seed_transactions.py for [start_day, end_day), labels due by end_day written."""
    return [
        str(BIN / "python"),
        str(local_stack.REPO_ROOT / "include" / "seed_transactions.py"),
        "seed",
        "--start",
        start_day.isoformat(),
        "--days",
        str((end_day - start_day).days),
        "--customers",
        str(customers),
        "--terminals",
        str(terminals),
        "--as-of",
        midnight_utc(end_day),
        *extra,
    ]


def extract_history_command(first_day: date, stop_day: date) -> list[str]:
    """include/extract_history.py for the days [first_day, stop_day)."""
    return [
        str(BIN / "python"),
        str(local_stack.REPO_ROOT / "include" / "extract_history.py"),
        "--from",
        first_day.isoformat(),
        "--to",
        stop_day.isoformat(),
    ]


def dags_test_command(end_day: date, conf: dict) -> list[str]:
    """`airflow dags test` for the interval ending at end_day (CronDataIntervalTimetable: logical
    date D runs [D - 1 day, D))."""
    return [str(BIN / "airflow"), "dags", "test", DAG_ID, midnight_utc(end_day), "--conf", json.dumps(conf)]


def read_latest_run(env: dict[str, str]) -> dict:
    """Task states, durations and XCom summaries of the DAG's latest run, from the metadata DB."""
    code = f"""
import json
from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
with create_session() as s:
    run = s.query(DagRun).filter(DagRun.dag_id == {DAG_ID!r}).order_by(DagRun.id.desc()).first()
    out = {{"run_id": run.run_id, "state": str(run.state),
            "interval": [str(run.data_interval_start), str(run.data_interval_end)], "tasks": []}}
    tis = s.query(TaskInstance).filter(TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id)
    for ti in sorted(tis, key=lambda t: (t.start_date or run.start_date, t.map_index)):
        xs = {{x.key: x for x in s.query(XComModel).filter(XComModel.dag_id == run.dag_id,
              XComModel.run_id == run.run_id, XComModel.task_id == ti.task_id,
              XComModel.map_index == ti.map_index)}}
        # A skipped endpoint_update has no return value; its "outcome" says why it skipped.
        x = xs.get("return_value") or xs.get("outcome")
        value = x.value if x is not None else None
        if isinstance(value, (str, bytes)):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out["tasks"].append({{"task": ti.task_id, "map_index": ti.map_index, "state": str(ti.state),
                              "seconds": ti.duration, "result": value}})
print(json.dumps(out, default=str))
"""
    result = subprocess.run(
        [str(BIN / "python"), "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        print(result.stderr[-3000:], file=sys.stderr)
        raise SystemExit("could not read the run's results from the Airflow metadata DB")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _print_run_summary(env: dict[str, str]) -> str:
    summary = read_latest_run(env)
    print(f"\nDAG run {summary['run_id']}: {summary['state']}")
    print(f"data interval: {summary['interval'][0]} -> {summary['interval'][1]}")
    for task in summary["tasks"]:
        label = task["task"] + (f"[{task['map_index']}]" if task["map_index"] >= 0 else "")
        seconds = f"{task['seconds']:.1f}s" if task["seconds"] is not None else "-"
        print(f"  {label:28s} {task['state']:10s} {seconds:>7s}  {json.dumps(task['result'], default=str)}")
    return summary["state"]


def _start_a_fresh_world(mongo_uri: str) -> None:
    """The embedded S3 server keeps nothing across restarts, but MongoDB's data dir does. With a
    freshly started S3 the demo starts its simulated world afresh too: a registry left by an
    earlier demo would name a champion whose artifacts are gone (the gate could not load it), and
    transactions seeded with other --customers/--seed would mix two worlds in one training set
    (the seeding skips ids it already holds)."""
    import pymongo

    sys.path.insert(0, str(local_stack.REPO_ROOT / "plugins"))
    from fraud_retraining.config import load_use_case

    cfg = load_use_case()
    client = pymongo.MongoClient(mongo_uri)
    database = client[cfg.mongo.database]
    for name in (cfg.mongo.registry_collection, cfg.mongo.collection, cfg.mongo.scores_collection):
        database.drop_collection(name)
    client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=70, help="days of simulated history to seed")
    # 1,000 cards: with 600, seed 7's test week held 68 frauds and the challenger's test AUC sat at
    # the gate's 0.75 floor (0.743-0.761 over three fits), so the demo's gate passed or failed by
    # noise; at 1,000 it is 0.87 (measured), and the demo shows the deploy it is meant to show.
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--terminals", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--end", default=None, help="first day after the simulated stretch (default: today, UTC)"
    )
    parser.add_argument("--budget", type=int, default=30, help="AutoML budget in seconds")
    parser.add_argument("--keep-running", action="store_true", help="leave the servers up afterwards")
    args = parser.parse_args(argv)

    end_day = date.fromisoformat(args.end) if args.end else datetime.now(UTC).date()
    start_day = end_day - timedelta(days=args.days)
    state_dir = local_stack.DEFAULT_STATE_DIR
    before = {name for name, svc in local_stack.read_state(state_dir).items() if local_stack._is_ours(svc)}
    started: list[str] = []
    try:
        print("1. starting the embedded local stack (MongoDB wire server, S3 server, endpoint)", flush=True)
        running = local_stack.up(["mongo", "s3", "endpoint"], state_dir)
        started = [name for name in running if name not in before]
        env = {**os.environ, **local_stack.stack_env(state_dir)}
        (state_dir / "logs").mkdir(parents=True, exist_ok=True)
        if "s3" in started:
            _start_a_fresh_world(env["MONGO_URI"])

        print(f"2. seeding {args.days} days of simulated transactions ({start_day} .. {end_day})", flush=True)
        _run(
            seed_command(
                start_day,
                end_day,
                args.customers,
                args.terminals,
                "--seed",
                str(args.seed),
                "--malformed-share",
                "0.002",
            ),
            env,
        )

        last_day = end_day - timedelta(days=1)
        print(
            f"3. extracting the history into the S3 raw zone ({start_day} .. {last_day - timedelta(days=1)})",
            flush=True,
        )
        _run(
            extract_history_command(start_day, last_day),
            env,
            log=state_dir / "logs" / "demo-extract-history.log",
        )

        print("4. preparing the Airflow metadata DB (.local/airflow, SQLite)", flush=True)
        _run([str(BIN / "airflow"), "db", "migrate"], env, log=state_dir / "logs" / "demo-db-migrate.log")

        logical = midnight_utc(end_day)
        log = state_dir / "logs" / "demo-dag-test.log"
        print(f"5. airflow dags test {DAG_ID} {logical}  (log: {log})", flush=True)
        conf = {"training_budget_s": args.budget, "training_window_days": args.days - 35}
        _run(dags_test_command(end_day, conf), env, log=log)
        state = _print_run_summary(env)
        return 0 if state.endswith("success") else 1
    finally:
        if started and not args.keep_running:
            local_stack.down(state_dir, started)
            print(f"\nstopped what the demo started: {', '.join(started)}")


if __name__ == "__main__":
    sys.exit(main())
