"""Test harness: the real MongoDB wire server (SecantusDB) and moto's S3/SageMaker server,
started once per session on free loopback ports by the same launcher `make up` uses."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pymongo
import pytest

import local_stack


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def mongo_server(stack_dir: Path) -> Iterator[local_stack.RunningService]:
    service = local_stack.start_service("mongo", None, stack_dir)
    yield service
    local_stack.stop_service(service)


@pytest.fixture(scope="session")
def s3_server(stack_dir: Path) -> Iterator[local_stack.RunningService]:
    service = local_stack.start_service("s3", None, stack_dir)
    yield service
    local_stack.stop_service(service)


@pytest.fixture(scope="session")
def mongo_uri(mongo_server: local_stack.RunningService) -> str:
    return local_stack.mongo_uri(mongo_server.port)


@pytest.fixture(scope="session")
def mongo_client(mongo_uri: str) -> Iterator[pymongo.MongoClient]:
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=5000, tz_aware=True)
    yield client
    client.close()


@pytest.fixture
def mongo_db(mongo_client: pymongo.MongoClient) -> Iterator[pymongo.database.Database]:
    """A fresh database per test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield mongo_client[name]
    mongo_client.drop_database(name)


@pytest.fixture(scope="session")
def s3_endpoint_url(s3_server: local_stack.RunningService) -> str:
    return local_stack.s3_endpoint(s3_server.port)


@pytest.fixture(scope="session")
def s3_client(s3_endpoint_url: str):
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint_url,
        aws_access_key_id=local_stack.LOCAL_S3_KEY_ID,
        aws_secret_access_key=local_stack.LOCAL_S3_SECRET,
        region_name=local_stack.LOCAL_REGION,
    )


@pytest.fixture
def s3_bucket(s3_client) -> str:
    """A fresh bucket per test."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def airflow_connections(
    monkeypatch: pytest.MonkeyPatch,
    mongo_server: local_stack.RunningService,
    s3_server: local_stack.RunningService,
) -> dict[str, str]:
    """`mongo_default` and `aws_default` as AIRFLOW_CONN_* variables pointing at the test servers."""
    env = local_stack.connection_env(mongo_server.port, s3_server.port)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def pytest_configure(config: pytest.Config) -> None:
    # Airflow reads its home at import; keep tests away from ~/airflow.
    os.environ.setdefault("AIRFLOW_HOME", str(Path(config.rootpath) / ".local" / "airflow-test"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(Path(config.rootpath) / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(Path(config.rootpath) / "plugins"))


@pytest.fixture
def use_case_config_file(tmp_path: Path):
    """Factory: the bundled use-case YAML with the database and/or bucket swapped; returns its path."""
    import yaml

    from fraud_retraining.config import DEFAULT_CONFIG_PATH

    def write(*, database: str | None = None, bucket: str | None = None) -> str:
        raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
        if database is not None:
            raw["mongo"]["database"] = database
        if bucket is not None:
            raw["s3"]["bucket"] = bucket
        path = tmp_path / "use_case.yaml"
        path.write_text(yaml.safe_dump(raw))
        return str(path)

    return write
