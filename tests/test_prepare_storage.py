"""prepare_storage against the real MongoDB wire server and S3 server: idempotent setup."""

from __future__ import annotations

from fraud_retraining.config import load_use_case


def test_prepare_storage_creates_bucket_and_indexes_once(
    use_case_config_file, airflow_connections, mongo_db, s3_client
) -> None:
    from fraud_retraining.operators.prepare_storage import PrepareStorageOperator

    bucket = f"prep-{mongo_db.name.replace('_', '-')}"
    config_path = use_case_config_file(database=mongo_db.name, bucket=bucket)
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
