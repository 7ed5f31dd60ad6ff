"""docker-compose.yaml checked structurally (no Docker engine here or in CI)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ONE_SHOT = {"airflow-init", "minio-init"}
AIRFLOW_COMPONENTS = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())


def test_every_service_has_an_image_and_a_healthcheck(compose: dict) -> None:
    for name, service in compose["services"].items():
        assert service.get("image"), f"{name} has no image"
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_minio_healthcheck_does_not_need_curl(compose: dict) -> None:
    assert "curl" not in json.dumps(compose["services"]["minio"]["healthcheck"])


def test_airflow_components_and_celery_profile(compose: dict) -> None:
    services = compose["services"]
    assert AIRFLOW_COMPONENTS <= services.keys()
    assert services["airflow-worker"]["profiles"] == ["celery"]
    assert services["redis"]["profiles"] == ["celery"]
    for name in AIRFLOW_COMPONENTS | {"airflow-worker"}:
        deps = services[name]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
        volumes = services[name]["volumes"]
        for folder in ("dags", "plugins", "include"):
            assert f"./{folder}:/opt/airflow/{folder}" in volumes, f"{name} does not mount {folder}/"


def test_one_shot_jobs_are_awaited_by_completion(compose: dict) -> None:
    services = compose["services"]
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no"
    assert (
        services["airflow-scheduler"]["depends_on"]["minio-init"]["condition"]
        == "service_completed_successfully"
    )


def test_mongo_is_a_replica_set_with_init(compose: dict) -> None:
    mongo = compose["services"]["mongo"]
    assert "--replSet" in mongo["command"]
    assert "rs.initiate" in json.dumps(mongo["healthcheck"])


def test_connection_env_matches_what_the_code_expects(compose: dict) -> None:
    from fraud_retraining.config import load_use_case

    cfg = load_use_case()
    env = compose["services"]["airflow-scheduler"]["environment"]
    assert f"AIRFLOW_CONN_{cfg.mongo.conn_id.upper()}" in env
    assert f"AIRFLOW_CONN_{cfg.s3.conn_id.upper()}" in env
    mongo = json.loads(env["AIRFLOW_CONN_MONGO_DEFAULT"])
    assert mongo["conn_type"] == "mongo"
    assert mongo["host"] == "mongo"
    aws = json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])
    assert aws["conn_type"] == "aws"
    assert aws["extra"]["endpoint_url"] == "http://minio:9000"
    init_cmd = json.dumps(compose["services"]["minio-init"]["entrypoint"])
    assert f"local/{cfg.s3.bucket}" in init_cmd, "the init job must create the configured bucket"


def test_no_literal_secrets_and_loopback_ports(compose: dict) -> None:
    text = (REPO / "docker-compose.yaml").read_text()
    secret_keys = re.finditer(r"^\s*([A-Z_]*(?:PASSWORD|SECRET)[A-Z_]*):\s*(\S+)", text, re.MULTILINE)
    for match in secret_keys:
        value = match.group(2).strip("'\"")
        assert value.startswith(("${", "/")), f"literal secret in compose: {match.group(0).strip()}"
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_image_requirements_match_the_lock() -> None:
    lock = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            lock[name.strip().lower()] = version.split()[0]
    for line in (REPO / "include/docker/requirements-image.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            assert lock.get(name.lower()) == version, f"{name}=={version} differs from requirements.txt"


def test_endpoint_service_serves_and_workers_find_it(compose: dict) -> None:
    services = compose["services"]
    endpoint = services["endpoint"]
    assert "serve_endpoint.py" in " ".join(endpoint["entrypoint"])
    assert endpoint["ports"] == ["127.0.0.1:8081:8081"]
    assert endpoint["environment"]["FRAUD_ENDPOINT_ADMIN_TOKEN"].startswith("${FRAUD_ENDPOINT_ADMIN_TOKEN:?")
    worker_env = services["airflow-scheduler"]["environment"]
    assert worker_env["FRAUD_ENDPOINT_URL"] == "http://endpoint:8081"
    assert worker_env["FRAUD_ENDPOINT_ADMIN_TOKEN"] == endpoint["environment"]["FRAUD_ENDPOINT_ADMIN_TOKEN"]
