"""The launcher: health waits, pid files, clear errors, stops only what it started."""

from __future__ import annotations

import socket
from pathlib import Path

import pymongo
import pytest

import local_stack


def test_mongo_server_reports_replica_set_and_roundtrips(mongo_client: pymongo.MongoClient) -> None:
    hello = mongo_client.admin.command("hello")
    assert hello.get("setName"), "SecantusDB must advertise a replica set (change streams need it)"
    coll = mongo_client["launcher_check"]["docs"]
    coll.insert_one({"k": 1})
    assert coll.count_documents({"k": 1}) == 1
    mongo_client.drop_database("launcher_check")


def test_s3_server_roundtrips(s3_client, s3_bucket: str) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="a/b.txt", Body=b"hello")
    assert s3_client.get_object(Bucket=s3_bucket, Key="a/b.txt")["Body"].read() == b"hello"


def test_port_taken_gives_clear_error(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind((local_stack.LOOPBACK, 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(local_stack.StackError, match=f"port 127.0.0.1:{port} is already taken"):
            local_stack.start_service("s3", port, tmp_path)


def test_up_down_writes_pid_files_and_stops_only_its_own(tmp_path: Path) -> None:
    running = local_stack.up(["s3"], tmp_path, ports={"s3": local_stack.free_port()})
    svc = running["s3"]
    assert (tmp_path / "s3.pid").read_text() == str(svc.pid)
    assert local_stack.port_in_use(svc.port)
    # A second `up` reuses the running service instead of starting another.
    again = local_stack.up(["s3"], tmp_path)
    assert again["s3"].pid == svc.pid
    assert local_stack.down(tmp_path) == ["s3"]
    assert not (tmp_path / "s3.pid").exists()
    assert not local_stack.port_in_use(svc.port)


def test_down_does_not_kill_a_foreign_process_with_a_recycled_pid(tmp_path: Path) -> None:
    import os

    # State claims a moto server at our own pid: the command-line check must refuse to signal it.
    fake = local_stack.RunningService("s3", 1, os.getpid(), "x.log", "moto_server")
    local_stack._write_state(tmp_path, {"s3": fake})
    assert local_stack.down(tmp_path) == []


def test_service_that_dies_reports_its_log_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    crash = [sys.executable, "-c", "print('storage is corrupt: cannot open'); raise SystemExit(3)"]
    monkeypatch.setattr(
        local_stack, "_service_spec", lambda name, port, state_dir: (crash, {}, lambda: False)
    )
    with pytest.raises(local_stack.StackError, match=r"(?s)exited with code 3.*storage is corrupt"):
        local_stack.start_service("mongo", None, tmp_path, timeout=20)


def test_service_that_never_gets_healthy_times_out_and_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    hang = [sys.executable, "-c", "import time; print('waiting forever'); time.sleep(60)"]
    monkeypatch.setattr(local_stack, "_service_spec", lambda name, port, state_dir: (hang, {}, lambda: False))
    with pytest.raises(local_stack.StackError, match=r"(?s)did not become healthy.*waiting forever"):
        local_stack.start_service("s3", None, tmp_path, timeout=2)


def test_connection_env_is_airflow_json(mongo_server, s3_server) -> None:
    import json

    env = local_stack.connection_env(mongo_server.port, s3_server.port)
    aws = json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])
    assert aws["extra"]["endpoint_url"] == f"http://127.0.0.1:{s3_server.port}"
    mongo = json.loads(env["AIRFLOW_CONN_MONGO_DEFAULT"])
    assert mongo["conn_type"] == "mongo" and mongo["port"] == mongo_server.port


def test_endpoint_service_starts_without_a_model_and_guards_admin(tmp_path: Path) -> None:
    import httpx

    running = local_stack.up(["endpoint"], tmp_path, ports={"endpoint": local_stack.free_port()})
    try:
        base = f"http://127.0.0.1:{running['endpoint'].port}"
        assert running["endpoint"].cmd_marker == "serve_endpoint.py"
        ping = httpx.get(f"{base}/ping", timeout=10)
        assert ping.status_code == 503
        assert httpx.post(f"{base}/admin/rollback", timeout=10).status_code == 401
        token = local_stack.endpoint_env(tmp_path, running["endpoint"].port)["FRAUD_ENDPOINT_ADMIN_TOKEN"]
        status = httpx.get(f"{base}/admin/status", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert status.status_code == 200
        assert status.json()["current_version"] is None
    finally:
        assert local_stack.down(tmp_path) == ["endpoint"]


def test_endpoint_gets_what_it_needs_to_load_s3_models(tmp_path: Path, s3_server) -> None:
    """endpoint_update deploys by s3:// URI: with S3 up, the endpoint must reach it on its own
    (a regression: the S3 settings once went to the scorer instead, and deploys failed with
    NoCredentialsError)."""
    env = local_stack.endpoint_service_env(tmp_path, {"s3": s3_server})
    assert env["FRAUD_S3_ENDPOINT_URL"] == local_stack.s3_endpoint(s3_server.port)
    assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"] and env["AWS_DEFAULT_REGION"]
    assert env["FRAUD_ENDPOINT_ADMIN_TOKEN"] == (tmp_path / "endpoint_admin.token").read_text().strip()
    assert set(local_stack.endpoint_service_env(tmp_path, {})) == {"FRAUD_ENDPOINT_ADMIN_TOKEN"}
