"""Portable model artifact: what training writes and what the endpoint, gate and scoring load.

A model is a folder of files (in S3: models/<model_name>/<version>/):

    model.json        {"format": ARTIFACT_FORMAT, "kind", "model_file", "feature_names", "version", ...}
    booster.txt       kind "lightgbm": LightGBM's native text model (Booster.model_to_string)
    booster.json      kind "xgboost": XGBoost's native JSON model (Booster.save_raw("json"))
    linear.json       kind "linear": logistic-regression coefficients and intercept

Native booster formats load in milliseconds, survive library upgrades that break pickles, and
carry no executable code, so the endpoint never unpickles anything it downloaded.
`Scorer.predict_proba` returns the probability of the positive class, shape (n,).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ARTIFACT_FORMAT = "fraud-retraining-model/1"
METADATA_FILE = "model.json"
MODEL_FILES = {"lightgbm": "booster.txt", "xgboost": "booster.json", "linear": "linear.json"}


@dataclass
class Scorer:
    """A loaded model: native booster or coefficients plus the feature order it expects."""

    kind: str
    feature_names: list[str]
    version: str
    metadata: dict[str, Any] = field(default_factory=dict)
    _model: Any = None

    def _matrix(self, X: np.ndarray | pd.DataFrame) -> np.ndarray:
        if isinstance(X, pd.DataFrame):
            missing = [name for name in self.feature_names if name not in X.columns]
            if missing:
                raise KeyError(f"input lacks features {missing}")
            matrix = X[self.feature_names].to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            matrix = np.asarray(X, dtype=np.float64)
            if matrix.ndim == 1:
                matrix = matrix.reshape(1, -1)
        if matrix.ndim != 2 or matrix.shape[1] != len(self.feature_names):
            raise ValueError(f"expected {len(self.feature_names)} feature columns, got shape {matrix.shape}")
        return matrix

    def predict_proba(self, X: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Probability of the positive class for each row, shape (n,)."""
        matrix = self._matrix(X)
        if self.kind == "lightgbm":
            return np.asarray(self._model.predict(matrix), dtype=np.float64)
        if self.kind == "xgboost":
            return np.asarray(self._model.inplace_predict(matrix), dtype=np.float64)
        coefficients, intercept = self._model
        return 1.0 / (1.0 + np.exp(-(matrix @ coefficients + intercept)))

    def feature_importance(self) -> dict[str, float]:
        """Gain importance for boosters, |coefficient| for the linear model, by feature name."""
        if self.kind == "lightgbm":
            gains = self._model.feature_importance(importance_type="gain")
            return {name: float(gain) for name, gain in zip(self.feature_names, gains, strict=True)}
        if self.kind == "xgboost":
            # XGBoost names unnamed columns f0, f1, ... and omits features no tree used.
            scores = self._model.get_score(importance_type="total_gain")
            return {name: float(scores.get(f"f{i}", 0.0)) for i, name in enumerate(self.feature_names)}
        coefficients, _ = self._model
        return {name: float(abs(c)) for name, c in zip(self.feature_names, coefficients, strict=True)}


def serialize_model(
    estimator: Any,
    feature_names: Sequence[str],
    version: str,
    extra_metadata: Mapping[str, Any] | None = None,
) -> dict[str, bytes]:
    """The artifact files of a fitted LightGBM, XGBoost or logistic-regression model, by name.

    The estimator must have been fitted on a numeric matrix whose columns are `feature_names`
    in that order.
    """
    kind, payload = _native_payload(estimator)
    metadata = {
        **dict(extra_metadata or {}),
        "format": ARTIFACT_FORMAT,
        "kind": kind,
        "model_file": MODEL_FILES[kind],
        "feature_names": list(feature_names),
        "version": version,
    }
    return {
        METADATA_FILE: json.dumps(metadata, indent=2, sort_keys=True).encode("utf-8"),
        MODEL_FILES[kind]: payload,
    }


def _native_payload(estimator: Any) -> tuple[str, bytes]:
    module = type(estimator).__module__
    if module.startswith("lightgbm"):
        booster = estimator.booster_ if hasattr(estimator, "booster_") else estimator
        return "lightgbm", booster.model_to_string().encode("utf-8")
    if module.startswith("xgboost"):
        booster = estimator.get_booster() if hasattr(estimator, "get_booster") else estimator
        return "xgboost", bytes(booster.save_raw(raw_format="json"))
    if hasattr(estimator, "coef_") and hasattr(estimator, "intercept_"):
        coefficients = np.asarray(estimator.coef_, dtype=np.float64)
        if coefficients.shape[0] != 1:
            raise ValueError("only binary linear models are supported")
        body = {
            "coefficients": coefficients[0].tolist(),
            "intercept": float(np.ravel(estimator.intercept_)[0]),
        }
        return "linear", json.dumps(body).encode("utf-8")
    raise TypeError(f"no portable format for {type(estimator).__name__}")


def write_model_dir(files: Mapping[str, bytes], directory: str | os.PathLike[str]) -> Path:
    """Write artifact files into `directory` (created if needed)."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (target / name).write_bytes(content)
    return target


def pack_model(files: Mapping[str, bytes]) -> bytes:
    """The artifact files as one zip archive (what `load_model(bytes)` reads)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in sorted(files.items()):
            archive.writestr(name, content)
    return buffer.getvalue()


def load_model(source: str | os.PathLike[str] | bytes | Mapping[str, bytes]) -> Scorer:
    """Load a model from a directory, a zip archive's bytes, or a mapping of file name -> bytes."""
    if isinstance(source, bytes | bytearray):
        with zipfile.ZipFile(io.BytesIO(source)) as archive:
            files = {name: archive.read(name) for name in archive.namelist()}
    elif isinstance(source, Mapping):
        files = dict(source)
    else:
        directory = Path(source)
        metadata = json.loads((directory / METADATA_FILE).read_text(encoding="utf-8"))
        files = {METADATA_FILE: (directory / METADATA_FILE).read_bytes()}
        model_file = metadata.get("model_file")
        if model_file:
            files[model_file] = (directory / model_file).read_bytes()
    return _scorer_from_files(files)


def load_model_from_s3(s3_client: Any, bucket: str, prefix: str) -> Scorer:
    """Load the model stored under `prefix` (models/<model_name>/<version>/) in `bucket`."""
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    raw = s3_client.get_object(Bucket=bucket, Key=prefix + METADATA_FILE)["Body"].read()
    metadata = json.loads(raw)
    files = {METADATA_FILE: raw}
    model_file = metadata.get("model_file")
    if model_file:
        files[model_file] = s3_client.get_object(Bucket=bucket, Key=prefix + model_file)["Body"].read()
    return _scorer_from_files(files)


def _scorer_from_files(files: Mapping[str, bytes]) -> Scorer:
    if METADATA_FILE not in files:
        raise ValueError(f"artifact lacks {METADATA_FILE}")
    metadata = json.loads(files[METADATA_FILE])
    if metadata.get("format") != ARTIFACT_FORMAT:
        raise ValueError(
            f"unsupported artifact format {metadata.get('format')!r} (kind {metadata.get('kind')!r}); "
            f"this loader reads {ARTIFACT_FORMAT}. SageMaker Autopilot models are served by a "
            "SageMaker endpoint, not loaded here."
        )
    kind = metadata["kind"]
    payload = files[metadata["model_file"]]
    if kind == "lightgbm":
        import lightgbm

        model: Any = lightgbm.Booster(model_str=payload.decode("utf-8"))
    elif kind == "xgboost":
        import xgboost

        model = xgboost.Booster()
        model.load_model(bytearray(payload))
    elif kind == "linear":
        body = json.loads(payload)
        model = (np.asarray(body["coefficients"], dtype=np.float64), float(body["intercept"]))
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    return Scorer(
        kind=kind,
        feature_names=list(metadata["feature_names"]),
        version=str(metadata["version"]),
        metadata=metadata,
        _model=model,
    )
