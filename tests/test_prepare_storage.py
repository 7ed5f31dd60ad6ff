"""prepare_storage against the real MongoDB wire server and S3 server: idempotent setup."""

from __future__ import annotations

from pathlib import Path

import yaml

from fraud_retraining.config import DEFAULT_CONFIG_PATH, load_use_case


def _config_for(tmp_path: Path, database: str, bucket: str) -> str:
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    raw["mongo"]["database"] = database
    raw["s3"]["bucket"] = bucket
    path = tmp_path / "use_case.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_prepare_storage_creates_bucket_and_indexes_once(
    tmp_path, airflow_connections, mongo_db, s3_client
) -> None:
    from fraud_retraining.operators.prepare_storage import PrepareStorageOperator

    bucket = f"prep-{mongo_db.name.replace('_', '-')}"
    config_path = _config_for(tmp_path, mongo_db.name, bucket)
    operator = PrepareStorageOperator(task_id="prepare_storage", use_case_config=config_path)

    first = operator.execute({})
    second = operator.execute({})

    assert first["bucket_created"] is True
    assert second["bucket_created"] is False
    s3_client.head_bucket(Bucket=bucket)
    cfg = load_use_case(config_path)
    info = mongo_db[cfg.mongo.collection].index_information()
    assert info[f"{cfg.fields.id}_unique"]["unique"] is True
    assert info[f"{cfg.fields.customer}_{cfg.fields.time}"]["key"] == [
        (cfg.fields.customer, 1),
        (cfg.fields.time, 1),
    ]
    assert set(first["indexes"]) <= set(info)
