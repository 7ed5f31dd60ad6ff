"""Training engines: the staged training set in, a portable model plus its evidence out.

`local` runs FLAML in-process (engines/local.py); `sagemaker` runs SageMaker Autopilot V2
(engines/sagemaker.py). Both read the stage task's output, described by its manifest.json:
{"features": [...], "label", "id", "time", "customer", "window", "rows", "frauds", "data_hash"}.
"""

from __future__ import annotations

import io
import json
import platform
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
import pandas as pd

SPLITS = ("train", "valid", "test")
MANIFEST_FILE = "manifest.json"
REQUIRED_MANIFEST_KEYS = ("features", "label", "time", "customer")
_VERSIONED_LIBRARIES = ("flaml", "lightgbm", "xgboost", "scikit-learn", "numpy", "pandas", "pyarrow", "boto3")


@dataclass
class TrainingSet:
    """The three time-ordered splits and the manifest that names their columns."""

    manifest: dict[str, Any]
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame

    @property
    def features(self) -> list[str]:
        return list(self.manifest["features"])

    @property
    def label(self) -> str:
        return str(self.manifest["label"])

    def matrix(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Features (float64, manifest order) and 0/1 labels of one split."""
        frame = getattr(self, split)
        # na_value: nullable (pd.NA) columns become NaN, which the boosters treat as missing.
        features = frame[self.features].to_numpy(dtype=np.float64, na_value=np.nan)
        return features, frame[self.label].to_numpy(dtype=np.int64)

    def days(self, split: str) -> np.ndarray:
        """UTC calendar day of each row, for the per-day card precision."""
        times = pd.to_datetime(getattr(self, split)[self.manifest["time"]], utc=True)
        return times.dt.strftime("%Y-%m-%d").to_numpy()

    def customers(self, split: str) -> np.ndarray:
        return getattr(self, split)[self.manifest["customer"]].to_numpy()


@dataclass
class TrainingResult:
    """What an engine hands to the operator: artifact files to upload and a summary to register."""

    engine: str
    version: str
    files: dict[str, bytes]
    metrics: dict[str, Any]
    best_estimator: str
    best_config: dict[str, Any]
    leaderboard: list[dict[str, Any]]
    budget_s: float
    elapsed_s: float
    details: dict[str, Any] = field(default_factory=dict)


def validate_manifest(manifest: dict[str, Any]) -> None:
    missing = [key for key in REQUIRED_MANIFEST_KEYS if key not in manifest]
    if missing:
        raise ValueError(f"training manifest lacks {missing}")
    if not manifest["features"]:
        raise ValueError("training manifest lists no features")


def read_training_set(s3_client: Any, bucket: str, prefix: str) -> TrainingSet:
    """Read manifest.json and train/valid/test.parquet from `prefix` (training/<run_key>/)."""
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    manifest = json.loads(s3_client.get_object(Bucket=bucket, Key=prefix + MANIFEST_FILE)["Body"].read())
    validate_manifest(manifest)
    frames = {}
    for split in SPLITS:
        body = s3_client.get_object(Bucket=bucket, Key=f"{prefix}{split}.parquet")["Body"].read()
        frames[split] = pd.read_parquet(io.BytesIO(body))
        absent = [c for c in [*manifest["features"], manifest["label"]] if c not in frames[split].columns]
        if absent:
            raise ValueError(f"{prefix}{split}.parquet lacks columns {absent}")
    return TrainingSet(manifest=manifest, **frames)


def library_versions() -> dict[str, str]:
    """Versions of the libraries a model depends on, for the registry's lineage."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED_LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True, default=str).encode("utf-8")
