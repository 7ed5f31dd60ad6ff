"""Where things live in S3: one place that builds every key, so writers and readers agree.

raw/transactions/dt=YYYY-MM-DD/part-NNNNN.parquet  transactions by their time field, no label columns
raw/labels/dt=YYYY-MM-DD/part-NNNNN.parquet        label events by the time they became known
quarantine/<dataset>/dt=YYYY-MM-DD/part-NNNNN.parquet  rejected documents with a reason column
training/<run_key>/train|valid|test.parquet, manifest.json
models/<model_name>/<version>/...
"""

from __future__ import annotations

import re
from datetime import date, datetime

from fraud_retraining.config import UseCaseConfig

DATASETS = ("transactions", "labels")
_SAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


def partition_day(value: date | datetime) -> str:
    return value.strftime("%Y-%m-%d")


def raw_partition_prefix(cfg: UseCaseConfig, dataset: str, day: date | datetime) -> str:
    if dataset not in DATASETS:
        raise ValueError(f"unknown raw dataset {dataset!r}; expected one of {DATASETS}")
    return f"{cfg.s3.raw_prefix}/{dataset}/dt={partition_day(day)}/"


def quarantine_partition_prefix(cfg: UseCaseConfig, dataset: str, day: date | datetime) -> str:
    return f"{cfg.s3.quarantine_prefix}/{dataset}/dt={partition_day(day)}/"


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def safe_run_key(run_id: str) -> str:
    """An S3-safe folder name for a DAG run id (run ids carry ':' and '+')."""
    return _SAFE.sub("_", run_id).strip("_")


def training_prefix(cfg: UseCaseConfig, run_key: str) -> str:
    return f"{cfg.s3.training_prefix}/{safe_run_key(run_key)}/"


def model_prefix(cfg: UseCaseConfig, version: str) -> str:
    return f"{cfg.s3.models_prefix}/{cfg.model_name}/{version}/"


def autopilot_input_prefix(training_set_prefix: str) -> str:
    """training/<run_key>/autopilot/: the CSV copies of the staged splits that Autopilot reads."""
    return f"{training_set_prefix.rstrip('/')}/autopilot/"
