"""Scoring endpoint over loopback next to the same model called in process (the floor).

Starts include/serve_endpoint.py in a subprocess on a free 127.0.0.1 port, then measures:
single-row /invocations p50/p99 and requests/s from 1 and from 8 concurrent clients, and a
1,000-row CSV batch. Targets: single-row p99 < 10 ms, 1,000-row batch < 50 ms.

    python bench/bench_endpoint.py [--requests 2000] [--features 15] [--trees 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

import httpx  # noqa: E402
import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402

from fraud_retraining import model_artifact  # noqa: E402
from fraud_retraining.serving import SMOKE_SAMPLE_FILE  # noqa: E402


def build_model(directory: Path, n_features: int, trees: int) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, n_features))
    y = (X[:, 0] + X[:, 1] * X[:, 2] + rng.normal(size=len(X)) > 2).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 31}, lgb.Dataset(X, label=y), trees
    )
    names = [f"f{i}" for i in range(n_features)]
    model_dir = model_artifact.write_model_dir(
        model_artifact.serialize_model(booster, names, "bench"), directory
    )
    (model_dir / SMOKE_SAMPLE_FILE).write_text(json.dumps({"instances": X[:5].tolist()}))
    return model_dir, X


def percentiles_ms(samples: list[float]) -> tuple[float, float]:
    values = np.asarray(samples) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def run_clients(
    host: str, port: int, bodies: list[bytes], clients: int, total: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    lock = threading.Lock()
    per_client = total // clients

    def worker(offset: int) -> None:
        local: list[float] = []
        # http.client: the leanest keep-alive client, so the figure is the server's, not httpx's.
        connection = http.client.HTTPConnection(host, port)
        headers = {"Content-Type": "text/csv"}
        for i in range(per_client):
            body = bodies[(offset + i) % len(bodies)]
            started = time.perf_counter()
            connection.request("POST", "/invocations", body=body, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            local.append(time.perf_counter() - started)
            if response.status != 200:
                raise RuntimeError(payload.decode())
        connection.close()
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=worker, args=(c * 7,)) for c in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="single-row requests per measurement")
    parser.add_argument("--features", type=int, default=15)
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--batches", type=int, default=50)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-endpoint-"))
    model_dir, X = build_model(workdir / "bench", args.features, args.trees)
    scorer = model_artifact.load_model(model_dir)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "FRAUD_ENDPOINT_ADMIN_TOKEN": os.urandom(16).hex()}
    server = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "include" / "serve_endpoint.py"),
            "--port",
            str(port),
            "--model-store",
            str(model_dir),
        ],
        env=env,
    )
    host = "127.0.0.1"
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/ping").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("endpoint did not start")
            time.sleep(0.1)

        rows = X[: min(len(X), 1000)]
        single_bodies = [(",".join(repr(float(v)) for v in row)).encode() for row in rows]
        run_clients(host, port, single_bodies, 1, 100)  # warm-up

        floor_single = []
        for row in rows[: args.requests]:
            started = time.perf_counter()
            scorer.predict_proba(row.reshape(1, -1))
            floor_single.append(time.perf_counter() - started)
        f50, f99 = percentiles_ms(floor_single)

        print(f"model: LightGBM {args.trees} trees, {args.features} features; server: 1 uvicorn worker")
        print(f"{'measurement':38} {'endpoint':>12} {'in-process':>12} {'ratio':>8}")
        for clients in (1, 8):
            latencies, wall = run_clients(host, port, single_bodies, clients, args.requests)
            p50, p99 = percentiles_ms(latencies)
            rps = len(latencies) / wall
            floor_rps = 1000 / f50  # one in-process caller
            print(f"single row, {clients} client(s): p50 ms      {p50:12.2f} {f50:12.3f} {p50 / f50:8.1f}")
            print(f"single row, {clients} client(s): p99 ms      {p99:12.2f} {f99:12.3f} {p99 / f99:8.1f}")
            print(
                f"single row, {clients} client(s): requests/s  {rps:12.0f} {floor_rps:12.0f} {floor_rps / rps:8.1f}"
            )

        batch = X[:1000]
        batch_body = "\n".join(",".join(repr(float(v)) for v in row) for row in batch).encode()
        batch_latencies, _ = run_clients(host, port, [batch_body], 1, args.batches)
        floor_batch = []
        for _ in range(args.batches):
            started = time.perf_counter()
            scorer.predict_proba(batch)
            floor_batch.append(time.perf_counter() - started)
        b50, b99 = percentiles_ms(batch_latencies)
        fb50, fb99 = percentiles_ms(floor_batch)
        print(f"{'1,000-row CSV batch: p50 ms':38} {b50:12.2f} {fb50:12.3f} {b50 / fb50:8.1f}")
        print(f"{'1,000-row CSV batch: p99 ms':38} {b99:12.2f} {fb99:12.3f} {b99 / fb99:8.1f}")
        print("targets: single-row p99 < 10 ms, batch < 50 ms")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
