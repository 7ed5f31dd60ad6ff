"""Storage preparation shared by the seeder and the DAG: MongoDB indexes and the S3 bucket;
and the one reader of small JSON objects in S3 (manifests, summaries)."""

from __future__ import annotations

import json
from typing import Any

from pymongo import ASCENDING
from pymongo.collection import Collection

from fraud_retraining.config import FieldNames


def transaction_indexes(fields: FieldNames) -> list[dict[str, Any]]:
    """The indexes of DESIGN.md, named by the use-case config's field names."""
    return [
        {"keys": [(fields.id, ASCENDING)], "name": f"{fields.id}_unique", "unique": True},
        {"keys": [(fields.time, ASCENDING)], "name": f"{fields.time}_1"},
        {
            "keys": [(fields.customer, ASCENDING), (fields.time, ASCENDING)],
            "name": f"{fields.customer}_{fields.time}",
        },
        {
            "keys": [(fields.terminal, ASCENDING), (fields.time, ASCENDING)],
            "name": f"{fields.terminal}_{fields.time}",
        },
        # Label events are extracted by the time they became known (late labels).
        {"keys": [(fields.labeled_at, ASCENDING)], "name": f"{fields.labeled_at}_1", "sparse": True},
    ]


def ensure_transaction_indexes(collection: Collection, fields: FieldNames) -> list[str]:
    """Create the transaction indexes if missing (idempotent); return their names."""
    names = []
    for spec in transaction_indexes(fields):
        options = {k: v for k, v in spec.items() if k != "keys"}
        names.append(collection.create_index(spec["keys"], **options))
    return names


def ensure_bucket(s3_client: Any, bucket: str) -> bool:
    """Create `bucket` if it does not exist; return True if it was created."""
    from botocore.exceptions import ClientError

    try:
        s3_client.head_bucket(Bucket=bucket)
        return False
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code not in {"404", "NoSuchBucket", "NotFound"}:
            raise
    region = s3_client.meta.region_name
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region and region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3_client.create_bucket(**kwargs)
    return True


def read_json(s3_client: Any, bucket: str, key: str) -> Any | None:
    """The JSON object at `key`, or None if it does not exist (any other error raises)."""
    from botocore.exceptions import ClientError

    try:
        body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as err:
        if str(err.response.get("Error", {}).get("Code")) in {"NoSuchKey", "404", "NotFound"}:
            return None
        raise
    return json.loads(body)
