"""Use-case configuration: field names, collections, buckets and the raw-zone schema.

Loaded from YAML so that another collection and label can be served by configuration alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

CONFIG_ENV_VAR = "FRAUD_USE_CASE_CONFIG"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_PATH = REPO_ROOT / "include" / "config" / "card_fraud.yaml"


@dataclass(frozen=True)
class FieldNames:
    """Names of the operational fields in MongoDB (and in the raw Parquet zone)."""

    id: str
    time: str
    customer: str
    terminal: str
    amount: str
    label: str
    labeled_at: str
    scenario: str | None = None


@dataclass(frozen=True)
class MongoSettings:
    conn_id: str
    database: str
    collection: str
    scores_collection: str
    registry_collection: str


@dataclass(frozen=True)
class S3Settings:
    conn_id: str
    bucket: str
    raw_prefix: str
    quarantine_prefix: str
    training_prefix: str
    models_prefix: str
    reports_prefix: str


@dataclass(frozen=True)
class UseCaseConfig:
    use_case: str
    model_name: str
    mongo: MongoSettings
    fields: FieldNames
    schema: dict[str, str]
    s3: S3Settings
    label_delay_days: int
    source_path: str = field(default="", compare=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source_path: str = "") -> UseCaseConfig:
        missing = {"use_case", "model_name", "mongo", "fields", "schema", "s3"} - raw.keys()
        if missing:
            raise ValueError(f"use-case config {source_path or '<dict>'} lacks keys: {sorted(missing)}")
        fields = FieldNames(**raw["fields"])
        schema = dict(raw["schema"])
        required = [fields.id, fields.time, fields.customer, fields.terminal, fields.amount]
        absent = [name for name in required if name not in schema]
        if absent:
            raise ValueError(f"use-case config schema lacks the fields it names: {absent}")
        return cls(
            use_case=raw["use_case"],
            model_name=raw["model_name"],
            mongo=MongoSettings(**raw["mongo"]),
            fields=fields,
            schema=schema,
            s3=S3Settings(**raw["s3"]),
            label_delay_days=int(raw.get("label_delay_days", 7)),
            source_path=source_path,
        )


def load_use_case(path: str | os.PathLike[str] | None = None) -> UseCaseConfig:
    """Load the use-case config from `path`, `$FRAUD_USE_CASE_CONFIG`, or the bundled default."""
    resolved = Path(path or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)
    return _load_cached(str(resolved.resolve()))


@lru_cache(maxsize=8)
def _load_cached(path: str) -> UseCaseConfig:
    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    if not isinstance(raw, dict):
        raise ValueError(f"use-case config {path} is not a mapping")
    return UseCaseConfig.from_dict(raw, source_path=path)
