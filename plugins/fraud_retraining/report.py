"""The per-run HTML report: what the run saw, trained and decided, readable in ten seconds.

Three steps, so the rendering is testable without any server:

* `build_run_report` gathers the inputs from S3 and the registry into a plain, JSON-safe dict:
  data volumes and quarantined rows per day (raw partition manifests and the stray sweep's
  `_strays.json`), fraud rate and label coverage (the staged training set's manifest), feature
  drift of this run's training split against the champion's (PSI per feature), the AutoML
  leaderboard and feature importance (stored with the model version), precision-recall and ROC
  curves and card precision@k per day of challenger and champion on the same holdout, the gate's
  decision, the deployment outcome and the lineage.
* `render_report_html(data)` turns that dict into one self-contained HTML page (plots are
  inline PNG data: URIs, no external assets), with a PASS/FAIL + deployed banner on top.
* `publish_run_report` writes the page next to the model (`models/<name>/<version>/report.html`)
  or, when the run produced no model, under `reports/<run_key>/report.html`.

Tolerant by design: the report task runs at the end of every DAG run, also after an upstream
failure, so each section is gathered on its own and a missing input turns into a section that
says why ("unavailable: ...") instead of a crashed report. No Airflow import here.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from fraud_retraining.config import UseCaseConfig
from fraud_retraining.extract import MANIFEST_NAME, STRAYS_SUMMARY
from fraud_retraining.layout import (
    DATASETS,
    model_prefix,
    quarantine_partition_prefix,
    raw_partition_prefix,
    safe_run_key,
)
from fraud_retraining.storage import read_json
from fraud_retraining.timeutil import as_utc

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
DEFAULT_PSI_THRESHOLD = 0.2
DEFAULT_PSI_BINS = 10
# Bounds the number of manifest reads (4 per day) for very long training windows.
MAX_VOLUME_DAYS = 120
MAX_LEADERBOARD_ROWS = 20
MAX_CURVE_POINTS = 250
# PSI of an empty bin is infinite; a floor on proportions keeps it finite and comparable.
PSI_EPSILON = 1e-4

# Section ids in page order; tests and the UI link rely on them.
SECTIONS = (
    "decision",
    "deployment",
    "volumes",
    "training_set",
    "drift",
    "leaderboard",
    "curves",
    "card_precision",
    "importance",
    "lineage",
)
SECTION_TITLES = {
    "decision": "Gate decision",
    "deployment": "Deployment",
    "volumes": "Data volumes and quarantine",
    "training_set": "Training set: fraud rate and label coverage",
    "drift": "Feature drift against the champion's training data",
    "leaderboard": "AutoML leaderboard",
    "curves": "Precision-recall and ROC on the holdout",
    "card_precision": "Card precision@k per test day",
    "importance": "Feature importance",
    "lineage": "Lineage",
}


# ------------------------------------------------------------------ small pure helpers


def population_stability_index(
    expected: Sequence[float] | np.ndarray,
    actual: Sequence[float] | np.ndarray,
    bins: int = DEFAULT_PSI_BINS,
) -> float | None:
    """PSI of `actual` against `expected`: sum over bins of (a - e) * ln(a / e).

    Bins are quantiles of `expected` (so each holds about 1/bins of the reference), or its
    distinct values when it has at most `bins` of them (flags, counts); missing values form a
    bin of their own, since a feature that starts arriving empty is drift too. None when the
    reference is empty.
    """
    ref = np.asarray(expected, dtype=np.float64).ravel()
    new = np.asarray(actual, dtype=np.float64).ravel()
    if ref.size == 0 or new.size == 0:
        return None
    ref_nan, new_nan = np.isnan(ref), np.isnan(new)
    ref_values, new_values = ref[~ref_nan], new[~new_nan]
    distinct = np.unique(ref_values)
    if distinct.size <= bins:
        # Discrete reference: one bin per value, plus one for values the reference never had.
        ref_idx = np.searchsorted(distinct, ref_values)
        pos = np.searchsorted(distinct, new_values)
        known = (pos < distinct.size) & (distinct[np.minimum(pos, distinct.size - 1)] == new_values)
        new_idx = np.where(known, pos, distinct.size)
        n_bins = distinct.size + 1
    else:
        edges = np.unique(np.quantile(ref_values, np.linspace(0, 1, bins + 1))[1:-1])
        ref_idx = np.searchsorted(edges, ref_values, side="right")
        new_idx = np.searchsorted(edges, new_values, side="right")
        n_bins = edges.size + 1
    ref_counts = np.append(np.bincount(ref_idx, minlength=n_bins), ref_nan.sum())
    new_counts = np.append(np.bincount(new_idx, minlength=n_bins), new_nan.sum())
    e = np.maximum(ref_counts / ref.size, PSI_EPSILON)
    a = np.maximum(new_counts / new.size, PSI_EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def normalize_deployment(
    deploy: Mapping[str, Any] | str | None, gate: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """{"status": deployed|skipped|failed|unknown, "text", "version", "detail"} from what the
    deployment step reported: a string such as "deployed version X", "skipped: gate failed",
    "skipped: backfill", "failed: <reason>"; a dict with "outcome" or "status"; the endpoint
    update's "outcome" XCom ({"deployed": bool, "version", "action", "reason"}) or its return
    value ({"version", ...}); or nothing (then inferred from the gate)."""
    detail: dict[str, Any] = {}
    text = ""
    if isinstance(deploy, Mapping):
        detail = dict(deploy)
        if isinstance(deploy.get("outcome"), str):
            text = deploy["outcome"]
        elif isinstance(deploy.get("deployed"), bool):
            # endpoint_update's "outcome" XCom, pushed on deploy and on a policy skip alike.
            if deploy["deployed"]:
                text = f"deployed version {deploy.get('version', '?')}"
            else:
                text = f"skipped: {deploy.get('reason') or 'no reason recorded'}"
        elif deploy.get("status"):
            status = str(deploy["status"])
            reason = deploy.get("reason") or deploy.get("error") or ""
            if status == "deployed":
                text = f"deployed version {deploy.get('version', '?')}"
            else:
                text = f"{status}: {reason}" if reason else status
        elif deploy.get("version"):
            # The endpoint update operator returns its summary only when the model serves.
            text = f"deployed version {deploy['version']}"
    elif isinstance(deploy, str):
        text = deploy
    text = text.strip()
    if not text:
        if gate is None:
            text = "skipped: gate did not run"
        elif not gate.get("passed"):
            text = "skipped: gate failed"
        else:
            text = "unknown: no deployment outcome was recorded"
    head = text.split(":", 1)[0].split(" ", 1)[0].lower()
    status = head if head in {"deployed", "skipped", "failed"} else "unknown"
    version = detail.get("version")
    if status == "deployed" and not version:
        version = text.split("version", 1)[1].strip() if "version" in text else None
    return {"status": status, "text": text, "version": version, "detail": _jsonable(detail)}


def report_key(cfg: UseCaseConfig, run_key: str, model_version: str | None) -> str:
    """Next to the model when the run produced one, else under the reports prefix by run."""
    if model_version:
        return model_prefix(cfg, model_version) + REPORT_FILE
    return f"{cfg.s3.reports_prefix}/{safe_run_key(run_key)}/{REPORT_FILE}"


def _jsonable(value: Any) -> Any:
    """Registry documents carry datetimes and numpy scalars; the report dict stays JSON-safe."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return as_utc(value).isoformat()  # pymongo gives naive UTC unless the client is tz_aware
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _downsample(xs: np.ndarray, ys: np.ndarray, limit: int = MAX_CURVE_POINTS) -> tuple[list, list]:
    """At most `limit` points of a curve, first and last kept (enough for a plot)."""
    if xs.size <= limit:
        idx = np.arange(xs.size)
    else:
        idx = np.unique(np.linspace(0, xs.size - 1, limit).round().astype(int))
    return [round(float(v), 5) for v in xs[idx]], [round(float(v), 5) for v in ys[idx]]


# ------------------------------------------------------------------ S3 readers


def _read_parquet(s3: Any, bucket: str, key: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


def _split_s3_uri(uri: str, default_bucket: str) -> tuple[str, str]:
    """("bucket", "prefix/") of "s3://bucket/prefix" or of a bare key prefix."""
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://") :].partition("/")
        return bucket, key.rstrip("/") + "/"
    return default_bucket, uri.rstrip("/") + "/"


# ------------------------------------------------------------------ gathering


class _Unavailable(Exception):
    """A section cannot be built for an expected reason (no champion, gate not run, ...)."""


def _gather(name: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One section; its failure becomes a sentence in the report instead of a crashed report."""
    try:
        return _jsonable(build())
    except _Unavailable as reason:
        return {"unavailable": str(reason)}
    except Exception as err:  # the report must be written whatever broke upstream
        log.warning("report section %s unavailable: %s", name, err, exc_info=True)
        return {"unavailable": f"{type(err).__name__}: {err}"}


def _days(first: datetime, last: datetime) -> list[datetime]:
    """Midnights of the days that [first, last) touches."""
    day = first.replace(hour=0, minute=0, second=0, microsecond=0)
    out = []
    while day < last:
        out.append(day)
        day += timedelta(days=1)
    return out


def _volumes(
    s3: Any,
    cfg: UseCaseConfig,
    start: datetime,
    end: datetime,
    manifest: Mapping[str, Any] | None,
) -> dict[str, Any]:
    bucket = cfg.s3.bucket
    first = start
    if manifest and manifest.get("window", {}).get("train_start"):
        first = min(first, as_utc(manifest["window"]["train_start"]))
    days = _days(first, end)[-MAX_VOLUME_DAYS:]
    rows: list[dict[str, Any]] = []
    totals: Counter[tuple[str, str, str]] = Counter()
    run_totals: Counter[tuple[str, str, str]] = Counter()
    for day in days:
        in_run = start <= day < end or day <= start < day + timedelta(days=1)
        entry: dict[str, Any] = {"day": day.strftime("%Y-%m-%d"), "in_run_interval": in_run}
        quarantined: Counter[str] = Counter()
        for dataset in DATASETS:
            part = read_json(s3, bucket, raw_partition_prefix(cfg, dataset, day) + MANIFEST_NAME)
            entry[dataset] = None if part is None else int(part.get("rows", 0))
            found = [("extract", (part or {}).get("quarantined") or {})]
            strays = read_json(s3, bucket, quarantine_partition_prefix(cfg, dataset, day) + STRAYS_SUMMARY)
            found.append(("stray sweep", (strays or {}).get("quarantined") or {}))
            for source, counts in found:
                for reason, n in counts.items():
                    quarantined[f"{dataset}: {reason}"] += int(n)
                    totals[(dataset, reason, source)] += int(n)
                    if in_run:
                        run_totals[(dataset, reason, source)] += int(n)
        entry["quarantined"] = dict(sorted(quarantined.items()))
        entry["quarantined_total"] = sum(quarantined.values())
        rows.append(entry)
    by_reason = [
        {
            "dataset": dataset,
            "reason": reason,
            "source": source,
            "window": n,
            "run_interval": run_totals.get((dataset, reason, source), 0),
        }
        for (dataset, reason, source), n in sorted(totals.items())
    ]
    extracted = [r for r in rows if r["transactions"] is not None]
    return {
        "days": rows,
        "quarantined_by_reason": by_reason,
        "totals": {
            "days": len(rows),
            "days_extracted": len(extracted),
            "transactions": sum(r["transactions"] or 0 for r in rows),
            "labels": sum(r["labels"] or 0 for r in rows),
            "quarantined": sum(r["quarantined_total"] for r in rows),
        },
    }


def _training_set(manifest: Mapping[str, Any] | None, volumes: Mapping[str, Any]) -> dict[str, Any]:
    if not manifest:
        raise _Unavailable("no staged training set (the stage task did not run or failed)")
    window = {k: as_utc(v) for k, v in manifest["window"].items()}
    periods = {
        "train": (window["train_start"], window["train_end"]),
        "valid": (window["valid_start"], window["test_start"]),
        "test": (window["test_start"], window["test_end"]),
    }
    raw_by_day = {d["day"]: d["transactions"] for d in volumes.get("days", [])}
    splits = []
    for name in ("train", "valid", "test"):
        rows = int(manifest["rows"][name])
        frauds = int(manifest["frauds"][name])
        lo, hi = periods[name]
        counts = [raw_by_day.get(day.strftime("%Y-%m-%d")) for day in _days(lo, hi)]
        raw = sum(c for c in counts if c is not None) if counts and None not in counts else None
        splits.append(
            {
                "split": name,
                "from": lo.isoformat(),
                "to": hi.isoformat(),
                "rows": rows,
                "frauds": frauds,
                "fraud_rate": frauds / rows if rows else None,
                "raw_transactions": raw,
                # Labelled (label known by the run's end) over all extracted transactions of the
                # period; the test split also loses the cards already known compromised.
                "label_coverage": rows / raw if raw else None,
            }
        )
    total_rows = sum(s["rows"] for s in splits)
    total_frauds = sum(s["frauds"] for s in splits)
    return {
        "splits": splits,
        "fraud_rate": total_frauds / total_rows if total_rows else None,
        "rows": total_rows,
        "frauds": total_frauds,
        "removed_known_compromised_cards": manifest.get("removed_known_compromised_cards"),
        "as_of": manifest.get("as_of"),
        "data_hash": manifest.get("data_hash"),
    }


def _reference_champion(registry: Any, challenger: str | None, gate: Mapping[str, Any] | None) -> str | None:
    """The champion this run is compared with: the gate's, else the one serving before this run."""
    if gate is not None and "champion_version" in gate:
        return gate.get("champion_version")
    if registry is None:
        return None
    stack = registry.champion_stack()
    if stack and stack[-1] == challenger:  # already promoted by this run: compare with its predecessor
        stack = stack[:-1]
    return stack[-1] if stack else None


def _drift(
    s3: Any,
    cfg: UseCaseConfig,
    registry: Any,
    champion: str | None,
    training_prefix: str | None,
    manifest: Mapping[str, Any] | None,
    threshold: float,
    bins: int,
) -> dict[str, Any]:
    if not manifest or not training_prefix:
        raise _Unavailable("no staged training set to compare")
    if not champion:
        raise _Unavailable("no champion yet: nothing to compare the training window with")
    entry = registry.get(champion) if registry is not None else None
    source = ((entry or {}).get("lineage") or {}).get("training_data")
    if not source:
        raise _Unavailable(f"champion {champion} has no training data in its registry lineage")
    ref_bucket, ref_prefix = _split_s3_uri(source, cfg.s3.bucket)
    bucket, prefix = _split_s3_uri(training_prefix, cfg.s3.bucket)
    if (ref_bucket, ref_prefix) == (bucket, prefix):
        raise _Unavailable(f"champion {champion} was trained on this very training set")
    reference = _read_parquet(s3, ref_bucket, ref_prefix + "train.parquet")
    current = _read_parquet(s3, bucket, prefix + "train.parquet")
    features = [name for name in manifest["features"] if name in reference.columns]
    rows = []
    for name in features:
        ref = pd.to_numeric(reference[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        cur = pd.to_numeric(current[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        psi = population_stability_index(ref, cur, bins)
        rows.append(
            {
                "feature": name,
                "psi": psi,
                "flagged": psi is not None and psi > threshold,
                "reference_mean": float(np.nanmean(ref)) if np.isfinite(ref).any() else None,
                "current_mean": float(np.nanmean(cur)) if np.isfinite(cur).any() else None,
            }
        )
    rows.sort(key=lambda r: -(r["psi"] or 0.0))
    ref_manifest = read_json(s3, ref_bucket, ref_prefix + "manifest.json") or {}
    return {
        "reference_version": champion,
        "reference_training_data": f"s3://{ref_bucket}/{ref_prefix}",
        "reference_window": ref_manifest.get("window"),
        "reference_rows": len(reference),
        "current_rows": len(current),
        "threshold": threshold,
        "bins": bins,
        "features": rows,
        "flagged": [r["feature"] for r in rows if r["flagged"]],
    }


def _leaderboard(s3: Any, cfg: UseCaseConfig, version: str | None, limit: int) -> dict[str, Any]:
    if not version:
        raise _Unavailable("no model version: training did not run or failed")
    prefix = model_prefix(cfg, version)
    raw = read_json(s3, cfg.s3.bucket, prefix + "leaderboard.json")
    if raw is None:
        raise _Unavailable(f"no leaderboard stored under {prefix}")
    source = None
    if isinstance(raw, Mapping):  # SageMaker Autopilot: {"source", "candidates"}
        source, raw = raw.get("source"), raw.get("candidates", [])
    rows = []
    for rank, trial in enumerate(raw, start=1):
        if "validation_average_precision" in trial:  # local engine (FLAML trials)
            model, metric = trial.get("estimator"), "validation average precision"
            score, detail = trial.get("validation_average_precision"), trial.get("config")
        else:
            model, metric = trial.get("candidate"), trial.get("objective") or "objective"
            score, detail = trial.get("validation_score"), trial.get("steps")
        rows.append(
            {
                "rank": rank,
                "model": model,
                "metric": metric,
                "score": score,
                "fit_seconds": trial.get("fit_seconds"),
                "detail": json.dumps(_jsonable(detail), sort_keys=True, default=str)[:300],
            }
        )
    chosen = read_json(s3, cfg.s3.bucket, prefix + "chosen_config.json") or {}
    return {"rows": rows[:limit], "total": len(rows), "source": source, "chosen": chosen}


def _score_holdout(
    s3: Any, cfg: UseCaseConfig, training_prefix: str, versions: Mapping[str, str | None], k: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Curves and card precision per day of each loadable model on the run's test split."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    from fraud_retraining.evaluation import read_holdout
    from fraud_retraining.metrics import card_precision_top_k_per_day, fraud_metrics
    from fraud_retraining.model_artifact import load_model_from_s3

    bucket, prefix = _split_s3_uri(training_prefix, cfg.s3.bucket)
    holdout, manifest = read_holdout(s3, bucket, prefix)
    labels = holdout[manifest["label"]].to_numpy(dtype=np.int64)
    days = pd.to_datetime(holdout[manifest["time"]], utc=True).dt.strftime("%Y-%m-%d").to_numpy()
    customers = holdout[manifest["customer"]].to_numpy()
    frauds = int(labels.sum())
    curves: dict[str, Any] = {"holdout_rows": len(holdout), "holdout_frauds": frauds, "models": {}}
    per_day: dict[str, Any] = {"k": k, "days": sorted(set(days.tolist())), "models": {}}
    for role, version in versions.items():
        if not version:
            continue
        try:
            scorer = load_model_from_s3(s3, cfg.s3.bucket, model_prefix(cfg, version))
            scores = scorer.predict_proba(holdout[list(scorer.feature_names)])
        except Exception as err:  # e.g. an Autopilot champion, served only by SageMaker
            curves["models"][role] = {"version": version, "unavailable": f"{type(err).__name__}: {err}"}
            continue
        entry: dict[str, Any] = {
            "version": version,
            "metrics": fraud_metrics(labels, scores, days=days, customers=customers, k=k),
        }
        if 0 < frauds < len(labels):
            precision, recall, _ = precision_recall_curve(labels, scores)
            fpr, tpr, _ = roc_curve(labels, scores)
            entry["pr"] = dict(zip(("recall", "precision"), _downsample(recall, precision), strict=True))
            entry["roc"] = dict(zip(("fpr", "tpr"), _downsample(fpr, tpr), strict=True))
        curves["models"][role] = entry
        per_day["models"][role] = {
            "version": version,
            "values": card_precision_top_k_per_day(days, customers, labels, scores, k=k),
        }
    if not 0 < frauds < len(labels):
        curves["note"] = f"the holdout has {frauds} frauds in {len(labels)} rows: curves are undefined"
    return curves, per_day


def _importance(s3: Any, cfg: UseCaseConfig, version: str | None) -> dict[str, Any]:
    if not version:
        raise _Unavailable("no model version: training did not run or failed")
    raw = read_json(s3, cfg.s3.bucket, model_prefix(cfg, version) + "feature_importance.json")
    if not raw:
        raise _Unavailable(f"model {version} stored no feature importance (e.g. an Autopilot model)")
    total = sum(float(v) for v in raw.values()) or 1.0
    rows = [
        {"feature": name, "importance": float(value), "share": float(value) / total}
        for name, value in sorted(raw.items(), key=lambda item: -float(item[1]))
    ]
    kind = (
        "gain"
        if (read_json(s3, cfg.s3.bucket, model_prefix(cfg, version) + "model.json") or {}).get("kind")
        in {"lightgbm", "xgboost"}
        else "|coefficient|"
    )
    return {"version": version, "kind": kind, "features": rows}


def _lineage(
    dag_id: str,
    run_id: str,
    start: datetime,
    end: datetime,
    training_prefix: str | None,
    manifest: Mapping[str, Any] | None,
    challenger: Mapping[str, Any] | None,
    champion: str | None,
) -> dict[str, Any]:
    from fraud_retraining.engines import library_versions

    lineage = dict((challenger or {}).get("lineage") or {})
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    report_versions = library_versions()
    try:
        report_versions["matplotlib"] = package_version("matplotlib")
    except PackageNotFoundError:  # only informative
        log.debug("matplotlib version unknown")
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "data_interval": {"start": start.isoformat(), "end": end.isoformat()},
        "training_prefix": training_prefix or None,
        "data_hash": (manifest or {}).get("data_hash") or lineage.get("data_hash"),
        "training_window": (manifest or {}).get("window") or lineage.get("training_window"),
        "challenger_version": (challenger or {}).get("version"),
        "challenger_registered_at": (challenger or {}).get("registered_at"),
        "engine": (challenger or {}).get("engine"),
        "best_estimator": lineage.get("best_estimator"),
        "trials": lineage.get("trials"),
        "budget_s": lineage.get("budget_s"),
        "elapsed_s": lineage.get("elapsed_s"),
        "seed": lineage.get("seed"),
        "champion_version": champion,
        "training_library_versions": lineage.get("library_versions") or {},
        "report_library_versions": report_versions,
    }


def build_run_report(
    s3: Any,
    cfg: UseCaseConfig,
    registry: Any,
    *,
    dag_id: str,
    run_id: str,
    data_interval_start: datetime | str,
    data_interval_end: datetime | str,
    training_prefix: str | None = None,
    challenger_version: str | None = None,
    gate: Mapping[str, Any] | None = None,
    deploy: Mapping[str, Any] | str | None = None,
    psi_threshold: float = DEFAULT_PSI_THRESHOLD,
    psi_bins: int = DEFAULT_PSI_BINS,
    card_precision_k: int = 100,
    max_leaderboard_rows: int = MAX_LEADERBOARD_ROWS,
    task_states: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Gather the run's evidence into a plain, JSON-safe dict (see `render_report_html`).

    `registry` is a `ModelRegistry` (or None when MongoDB is out of reach); `gate` and `deploy`
    are what those tasks returned (None when they did not run); `task_states` maps the run's
    other tasks to their states, so a report after a failure names the task that failed.
    Inputs that are missing make their section say why instead of raising.
    """
    start, end = as_utc(data_interval_start), as_utc(data_interval_end)
    training_prefix = (training_prefix or "").strip() or None
    challenger_version = (challenger_version or "").strip() or None
    manifest: dict[str, Any] | None = None
    if training_prefix:
        bucket, prefix = _split_s3_uri(training_prefix, cfg.s3.bucket)
        try:
            manifest = read_json(s3, bucket, prefix + "manifest.json")
        except Exception as err:  # reported by the sections that need it
            log.warning("training manifest %s unreadable: %s", prefix, err)
    challenger_doc = None
    if registry is not None and challenger_version:
        try:
            challenger_doc = registry.get(challenger_version)
        except Exception as err:
            log.warning("registry entry %s unreadable: %s", challenger_version, err)
    if gate is None and challenger_doc is not None:
        gate = challenger_doc.get("gate")  # the gate ran, but its XCom did not reach us
    try:
        champion = _reference_champion(registry, challenger_version, gate)
    except Exception as err:
        log.warning("champion unknown: %s", err)
        champion = None

    data: dict[str, Any] = {
        "title": f"{cfg.model_name} retraining run {run_id}",
        "generated_at": as_utc(now or datetime.now(UTC)).isoformat(),
        "run": {
            "dag_id": dag_id,
            "run_id": run_id,
            "model_name": cfg.model_name,
            "data_interval": {"start": start.isoformat(), "end": end.isoformat()},
            "challenger_version": challenger_version,
            "champion_version": champion,
            "training_prefix": training_prefix,
            "task_states": {str(k): str(v) for k, v in (task_states or {}).items()},
        },
        "gate": _jsonable(dict(gate)) if gate is not None else None,
        "deployment": normalize_deployment(deploy, gate),
    }
    data["volumes"] = _gather("volumes", lambda: _volumes(s3, cfg, start, end, manifest))
    data["training_set"] = _gather("training_set", lambda: _training_set(manifest, data["volumes"]))
    data["drift"] = _gather(
        "drift",
        lambda: _drift(s3, cfg, registry, champion, training_prefix, manifest, psi_threshold, psi_bins),
    )
    data["leaderboard"] = _gather(
        "leaderboard", lambda: _leaderboard(s3, cfg, challenger_version, max_leaderboard_rows)
    )

    def scored() -> dict[str, Any]:
        if not training_prefix or not manifest:
            raise _Unavailable("no staged holdout (the stage task did not run or failed)")
        if not challenger_version:
            raise _Unavailable("no challenger: training did not run or failed")
        curves, per_day = _score_holdout(
            s3,
            cfg,
            training_prefix,
            {"challenger": challenger_version, "champion": champion},
            card_precision_k,
        )
        return {"curves": curves, "card_precision": per_day}

    both = _gather("curves", scored)
    data["curves"] = both.get("curves", both)
    data["card_precision"] = both.get("card_precision", both)
    data["importance"] = _gather("importance", lambda: _importance(s3, cfg, challenger_version))
    data["lineage"] = _gather(
        "lineage",
        lambda: _lineage(dag_id, run_id, start, end, training_prefix, manifest, challenger_doc, champion),
    )
    return data


# ------------------------------------------------------------------ rendering


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: Any, digits: int = 4) -> str:
    """Numbers as people read them; "n/a" for missing ones."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _esc(value)


def _rule_num(value: Any) -> str:
    """Gate rules carry counts as floats (191.0 frauds); metrics there are scores below 2."""
    if isinstance(value, float) and value.is_integer() and abs(value) >= 2:
        return f"{int(value):,}"
    return _num(value)


def _pct(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{100 * float(value):.{digits}f} %"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], css: str = "") -> str:
    """A table from already-escaped cell strings."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{_esc(css)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _kv_table(pairs: Iterable[tuple[str, str]], css: str = "kv") -> str:
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f'<table class="{_esc(css)}"><tbody>{body}</tbody></table>'


def _figure(width: float = 6.4, height: float = 3.4) -> Any:
    # The Agg canvas directly, no pyplot: no global backend state, safe in a worker thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _img(fig: Any, alt: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{encoded}">'


def _unavailable(section: Mapping[str, Any] | None, fallback: str) -> str | None:
    if section is None:
        return fallback
    if "unavailable" in section:
        return str(section["unavailable"])
    return None


def _banner(data: Mapping[str, Any]) -> str:
    gate = data.get("gate")
    deployment = data.get("deployment") or normalize_deployment(None, gate)
    if gate is None:
        verdict, css, why = "NO DECISION", "unknown", f"the gate did not run ({_failed_tasks_text(data)})"
    elif gate.get("passed"):
        verdict, css, why = "PASS", "pass", "; ".join(gate.get("reasons") or [])
    else:
        verdict, css, why = "FAIL", "fail", "; ".join(gate.get("reasons") or [])
    deployed = {
        "deployed": f"DEPLOYED {deployment.get('version') or ''}".strip(),
        "failed": "NOT DEPLOYED (deployment failed)",
        "skipped": "NOT DEPLOYED",
    }.get(deployment["status"], "DEPLOYMENT UNKNOWN")
    if deployment["status"] == "failed":
        css = "fail"  # a model that passed but could not be rolled out needs a person too
    run = data.get("run") or {}
    return (
        f'<div id="banner" class="banner {css}">'
        f'<div class="verdict">{_esc(verdict)} &middot; {_esc(deployed)}</div>'
        f'<div class="why">{_esc(why)}</div>'
        f'<div class="why">deployment: {_esc(deployment["text"])}</div>'
        f'<div class="meta">challenger {_esc(run.get("challenger_version") or "none")} &middot; '
        f"champion {_esc(run.get('champion_version') or 'none')} &middot; "
        f"interval {_esc((run.get('data_interval') or {}).get('start'))} to "
        f"{_esc((run.get('data_interval') or {}).get('end'))}</div></div>"
    )


FAILED_STATES = ("failed", "upstream_failed")


def _failed_tasks_text(data: Mapping[str, Any]) -> str:
    states = (data.get("run") or {}).get("task_states") or {}
    # The task that failed first, then those it kept from running.
    failed = [
        f"{task} {state}"
        for state in FAILED_STATES
        for task in sorted(t for t, s in states.items() if s == state)
    ]
    return ", ".join(failed) if failed else "an upstream task failed or was skipped"


def _render_task_states(data: Mapping[str, Any]) -> str:
    states = (data.get("run") or {}).get("task_states") or {}
    if not states:
        return ""
    rows = [
        (_esc(task), f'<span class="bad">{_esc(state)}</span>' if state in FAILED_STATES else _esc(state))
        for task, state in sorted(states.items())
    ]
    return "<h3>Tasks of this run</h3>" + _table(
        ("task", "state when the report was written"), rows, "task-states"
    )


def _render_decision(data: Mapping[str, Any]) -> str:
    gate = data.get("gate")
    if gate is None:
        return (
            '<p class="unavailable">The gate did not run: no decision was recorded for this run '
            f"({_esc(_failed_tasks_text(data))}).</p>" + _render_task_states(data)
        )
    rows = [
        (
            _esc(rule.get("name")),
            '<span class="ok">pass</span>' if rule.get("passed") else '<span class="bad">FAIL</span>',
            _rule_num(rule.get("observed")),
            _rule_num(rule.get("threshold")),
            _esc(rule.get("detail")),
        )
        for rule in gate.get("rules") or []
    ]
    out = [
        f"<p><b>{'PASSED' if gate.get('passed') else 'FAILED'}</b>: "
        f"{_esc('; '.join(gate.get('reasons') or []))}</p>",
        _table(("rule", "result", "observed", "threshold", "detail"), rows, "gate-rules"),
    ]
    challenger, champion = gate.get("challenger") or {}, gate.get("champion")
    metrics = sorted(set(challenger) | set(champion or {}))
    if metrics:
        out.append("<h3>Holdout metrics the gate compared</h3>")
        out.append(
            _table(
                ("metric", "challenger", "champion"),
                [
                    (
                        _esc(m),
                        _num(challenger.get(m)),
                        _num((champion or {}).get(m)) if champion else "no champion",
                    )
                    for m in metrics
                ],
                "gate-metrics",
            )
        )
    extra = [(k, _num(gate.get(k))) for k in ("holdout_rows", "decided_at") if k in gate]
    if extra:
        out.append(_kv_table(extra))
    return "".join(out)


def _render_deployment(data: Mapping[str, Any]) -> str:
    deployment = data.get("deployment") or normalize_deployment(None, data.get("gate"))
    pairs = [("outcome", _esc(deployment["text"])), ("status", _esc(deployment["status"]))]
    pairs += [
        (k, _esc(v if isinstance(v, str) else json.dumps(v, default=str)))
        for k, v in sorted(deployment.get("detail", {}).items())
        if k not in {"outcome", "status"}
    ]
    return _kv_table(pairs, "deployment")


def _render_volumes(section: Mapping[str, Any]) -> str:
    days = section.get("days") or []
    totals = section.get("totals") or {}
    out = [
        f"<p>{_num(totals.get('days_extracted'))} of {_num(totals.get('days'))} days extracted; "
        f"{_num(totals.get('transactions'))} transactions, {_num(totals.get('labels'))} label events, "
        f"{_num(totals.get('quarantined'))} quarantined documents. The run's own interval is marked.</p>"
    ]
    if days:
        fig = _figure(7.5, 3.0)
        ax = fig.add_subplot()
        x = np.arange(len(days))
        tx = [d.get("transactions") or 0 for d in days]
        colors = ["#d9822b" if d.get("in_run_interval") else "#4a78b5" for d in days]
        ax.bar(x, tx, color=colors, label="transactions")
        ax.plot(x, [d.get("labels") or 0 for d in days], color="#2e8540", marker=".", label="label events")
        ax.set_xticks(x[:: max(1, len(days) // 10)], [d["day"] for d in days][:: max(1, len(days) // 10)])
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.set_ylabel("rows per day")
        ax.set_ylim(0, 1.3 * max([*tx, *[d.get("labels") or 0 for d in days], 1]))
        ax.legend(fontsize=8, loc="upper left", ncol=2)
        out.append(_img(fig, "rows per day"))
    reasons = section.get("quarantined_by_reason") or []
    out.append("<h3>Quarantined documents by reason</h3>")
    if reasons:
        out.append(
            _table(
                ("dataset", "reason", "found by", "in the window", "in this run's interval"),
                [
                    (
                        _esc(r["dataset"]),
                        _esc(r["reason"]),
                        _esc(r["source"]),
                        _num(r["window"]),
                        _num(r["run_interval"]),
                    )
                    for r in reasons
                ],
                "quarantine",
            )
        )
    else:
        out.append("<p>No document was quarantined in the window.</p>")
    out.append("<h3>Per day</h3>")
    out.append(
        _table(
            ("day", "transactions", "label events", "quarantined", "reasons"),
            [
                (
                    _esc(d["day"]) + (" <b>(this run)</b>" if d.get("in_run_interval") else ""),
                    _num(d.get("transactions")) if d.get("transactions") is not None else "not extracted",
                    _num(d.get("labels")) if d.get("labels") is not None else "not extracted",
                    _num(d.get("quarantined_total", 0)),
                    _esc(", ".join(f"{k} {v}" for k, v in (d.get("quarantined") or {}).items())),
                )
                for d in days
            ],
            "volumes",
        )
    )
    return "".join(out)


def _render_training_set(section: Mapping[str, Any]) -> str:
    rows = [
        (
            _esc(s["split"]),
            _esc(f"{str(s['from'])[:10]} .. {str(s['to'])[:10]}"),
            _num(s["rows"]),
            _num(s["frauds"]),
            _pct(s.get("fraud_rate"), 3),
            _num(s.get("raw_transactions")),
            _pct(s.get("label_coverage"), 1),
        )
        for s in section.get("splits") or []
    ]
    return (
        f"<p>Overall fraud rate {_pct(section.get('fraud_rate'), 3)} "
        f"({_num(section.get('frauds'))} frauds in {_num(section.get('rows'))} labelled rows); "
        f"{_num(section.get('removed_known_compromised_cards'))} cards already known compromised were "
        "removed from the test split. Label coverage is labelled rows over all extracted transactions "
        "of the period (labels arrive late; unlabelled rows are left out).</p>"
        + _table(
            (
                "split",
                "period [from, to)",
                "labelled rows",
                "frauds",
                "fraud rate",
                "raw transactions",
                "label coverage",
            ),
            rows,
            "training-set",
        )
    )


def _render_drift(section: Mapping[str, Any]) -> str:
    features = section.get("features") or []
    threshold = section.get("threshold", DEFAULT_PSI_THRESHOLD)
    flagged = section.get("flagged") or []
    out = [
        f"<p>This run's training split ({_num(section.get('current_rows'))} rows) against the training "
        f"split of champion {_esc(section.get('reference_version'))} ({_num(section.get('reference_rows'))} "
        f"rows, {_esc(section.get('reference_training_data'))}). PSI over {_num(section.get('bins'))} "
        f"quantile bins of the champion's data; above {_num(threshold, 2)} is flagged. "
        + (
            f"<b>{len(flagged)} feature(s) drifted: {_esc(', '.join(flagged))}.</b>"
            if flagged
            else "No feature above the threshold."
        )
        + "</p>"
    ]
    if features:
        fig = _figure(6.4, max(2.4, 0.28 * len(features) + 0.8))
        ax = fig.add_subplot()
        names = [f["feature"] for f in features][::-1]
        values = [f["psi"] or 0.0 for f in features][::-1]
        ax.barh(names, values, color=["#c0392b" if v > threshold else "#4a78b5" for v in values])
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
        ax.set_xlabel("PSI")
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(fontsize=8)
        out.append(_img(fig, "PSI per feature"))
    out.append(
        _table(
            ("feature", "PSI", "flagged", "champion mean", "this run mean"),
            [
                (
                    _esc(f["feature"]),
                    _num(f.get("psi")),
                    '<span class="bad">DRIFT</span>' if f.get("flagged") else "no",
                    _num(f.get("reference_mean")),
                    _num(f.get("current_mean")),
                )
                for f in features
            ],
            "drift",
        )
    )
    return "".join(out)


def _render_leaderboard(section: Mapping[str, Any]) -> str:
    rows = section.get("rows") or []
    chosen = section.get("chosen") or {}
    out = [
        f"<p>{_num(section.get('total'))} trials/candidates, best first"
        + (f" (showing {len(rows)})" if len(rows) < (section.get("total") or 0) else "")
        + (f"; source: {_esc(section.get('source'))}" if section.get("source") else "")
        + ".</p>"
    ]
    out.append(
        _table(
            ("rank", "model", "metric", "score", "fit seconds", "configuration"),
            [
                (
                    _num(r["rank"]),
                    _esc(r["model"]),
                    _esc(r["metric"]),
                    _num(r.get("score")),
                    _num(r.get("fit_seconds"), 2),
                    f"<code>{_esc(r.get('detail'))}</code>",
                )
                for r in rows
            ],
            "leaderboard",
        )
    )
    if chosen:
        out.append("<h3>Chosen</h3>")
        out.append(_kv_table([(k, _esc(json.dumps(v, default=str))) for k, v in sorted(chosen.items())]))
    return "".join(out)


def _render_curves(section: Mapping[str, Any]) -> str:
    models = section.get("models") or {}
    out = [
        f"<p>Both models scored on the same holdout: {_num(section.get('holdout_rows'))} rows, "
        f"{_num(section.get('holdout_frauds'))} frauds."
        + ("" if "champion" in models else " No champion to compare with.")
        + "</p>"
    ]
    if section.get("note"):
        out.append(f'<p class="unavailable">{_esc(section["note"])}</p>')
    styles = {"challenger": ("#d9822b", "-"), "champion": ("#4a78b5", "--")}
    drawable = {role: m for role, m in models.items() if "pr" in m}
    if drawable:
        fig = _figure(8.0, 3.4)
        ax_pr, ax_roc = fig.subplots(1, 2)
        for role, model in drawable.items():
            color, style = styles.get(role, ("gray", ":"))
            ap = (model.get("metrics") or {}).get("average_precision")
            auc = (model.get("metrics") or {}).get("auc_roc")
            label = f"{role} {model.get('version')}"
            ax_pr.plot(
                model["pr"]["recall"],
                model["pr"]["precision"],
                style,
                color=color,
                label=f"{label} AP={_num(ap, 3)}",
            )
            ax_roc.plot(
                model["roc"]["fpr"],
                model["roc"]["tpr"],
                style,
                color=color,
                label=f"{label} AUC={_num(auc, 3)}",
            )
        ax_roc.plot([0, 1], [0, 1], ":", color="gray", linewidth=1)
        ax_pr.set(xlabel="recall", ylabel="precision", title="precision-recall", xlim=(0, 1), ylim=(0, 1.02))
        ax_roc.set(
            xlabel="false positive rate",
            ylabel="true positive rate",
            title="ROC",
            xlim=(0, 1),
            ylim=(0, 1.02),
        )
        ax_pr.legend(fontsize=8)
        ax_roc.legend(fontsize=8, loc="lower right")
        out.append(_img(fig, "precision-recall and ROC curves"))
    metric_names = sorted({name for m in models.values() for name in (m.get("metrics") or {})})
    if metric_names:
        roles = list(models)
        out.append(
            _table(
                ("metric", *[f"{role} {models[role].get('version')}" for role in roles]),
                [
                    (_esc(n), *[_num((models[r].get("metrics") or {}).get(n)) for r in roles])
                    for n in metric_names
                ],
                "holdout-metrics",
            )
        )
    for role, model in models.items():
        if "unavailable" in model:
            out.append(
                f'<p class="unavailable">{_esc(role)} {_esc(model.get("version"))}: {_esc(model["unavailable"])}</p>'
            )
    return "".join(out)


def _render_card_precision(section: Mapping[str, Any]) -> str:
    days = section.get("days") or []
    models = section.get("models") or {}
    k = section.get("k", 100)
    out = [
        f"<p>Per test day, the share of the {_num(k)} highest-scoring cards that are compromised "
        "(the handbook's card precision@k; cards detected earlier are removed).</p>"
    ]
    if days and models:
        fig = _figure(6.4, 3.0)
        ax = fig.add_subplot()
        for role, model in models.items():
            color = {"challenger": "#d9822b", "champion": "#4a78b5"}.get(role, "gray")
            ax.plot(days, model["values"], marker="o", color=color, label=f"{role} {model.get('version')}")
        ax.set_ylabel(f"card precision@{k}")
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.legend(fontsize=7)
        out.append(_img(fig, f"card precision@{k} per day"))
        roles = list(models)
        rows = [(_esc(day), *[_num(models[r]["values"][i]) for r in roles]) for i, day in enumerate(days)]
        rows.append(("<b>mean</b>", *[_num(float(np.mean(models[r]["values"]))) for r in roles]))
        out.append(_table(("day", *roles), rows, "card-precision"))
    return "".join(out)


def _render_importance(section: Mapping[str, Any]) -> str:
    features = section.get("features") or []
    out = [f"<p>Model {_esc(section.get('version'))}, importance by {_esc(section.get('kind'))}.</p>"]
    if features:
        fig = _figure(6.4, max(2.4, 0.28 * len(features) + 0.8))
        ax = fig.add_subplot()
        ax.barh([f["feature"] for f in features][::-1], [f["share"] for f in features][::-1], color="#4a78b5")
        ax.set_xlabel("share of total importance")
        ax.tick_params(axis="y", labelsize=7)
        out.append(_img(fig, "feature importance"))
    out.append(
        _table(
            ("feature", "importance", "share"),
            [(_esc(f["feature"]), _num(f["importance"], 2), _pct(f["share"], 1)) for f in features],
            "importance",
        )
    )
    return "".join(out)


def _render_lineage(section: Mapping[str, Any]) -> str:
    pairs = []
    for key, value in section.items():
        if key.endswith("library_versions"):
            continue
        shown = json.dumps(value, default=str) if isinstance(value, Mapping | list) else value
        pairs.append((key, _esc(shown if shown is not None else "n/a")))
    out = [_kv_table(pairs, "lineage")]
    for key in ("training_library_versions", "report_library_versions"):
        versions = section.get(key) or {}
        if versions:
            out.append(f"<h3>{_esc(key.replace('_', ' '))}</h3>")
            out.append(_kv_table([(name, _esc(v)) for name, v in sorted(versions.items())], "versions"))
    return "".join(out)


_RENDERERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "volumes": _render_volumes,
    "training_set": _render_training_set,
    "drift": _render_drift,
    "leaderboard": _render_leaderboard,
    "curves": _render_curves,
    "card_precision": _render_card_precision,
    "importance": _render_importance,
    "lineage": _render_lineage,
}

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1100px;
padding:1rem 1.5rem;color:#1d2733}
h1{font-size:1.3rem;margin:.2rem 0 1rem}h2{font-size:1.1rem;border-bottom:1px solid #ccd;padding-bottom:.2rem;
margin-top:2rem}h3{font-size:.95rem}
.banner{border-radius:8px;padding:1rem 1.4rem;color:#fff}.banner .verdict{font-size:2.4rem;font-weight:800}
.banner .why{font-size:1rem;margin-top:.3rem}.banner .meta{font-size:.8rem;opacity:.85;margin-top:.5rem}
.banner.pass{background:#2e8540}.banner.fail{background:#c0392b}.banner.unknown{background:#6b7280}
table{border-collapse:collapse;font-size:.82rem;margin:.4rem 0}td,th{border:1px solid #dde;padding:.2rem .5rem;
text-align:left;vertical-align:top}thead th{background:#f1f3f7}code{font-size:.72rem}
.ok{color:#2e8540;font-weight:600}.bad{color:#c0392b;font-weight:700}.unavailable{color:#6b7280;font-style:italic}
img{max-width:100%;display:block;margin:.5rem 0}nav a{margin-right:.8rem;font-size:.85rem}
"""


def render_report_html(data: Mapping[str, Any]) -> str:
    """The self-contained HTML page of a report dict (pure: no I/O; plots as PNG data: URIs)."""
    sections = []
    for name in SECTIONS:
        title = SECTION_TITLES[name]
        if name == "decision":
            body = _render_decision(data)
        elif name == "deployment":
            body = _render_deployment(data)
        else:
            section = data.get(name)
            missing = _unavailable(section, "not gathered")
            if missing is not None:
                body = f'<p class="unavailable">Unavailable: {_esc(missing)}</p>'
            else:
                try:
                    body = _RENDERERS[name](section)
                except Exception as err:  # a malformed section must not cost the whole report
                    log.warning("report section %s failed to render: %s", name, err, exc_info=True)
                    body = f'<p class="unavailable">Unavailable: could not render ({_esc(type(err).__name__)}: {_esc(err)})</p>'
        if name == "lineage" and data.get("gate") is not None:
            body += _render_task_states(data)  # without a gate they are shown under the decision
        sections.append(f'<section id="{name}"><h2>{_esc(title)}</h2>{body}</section>')
    nav = "".join(f'<a href="#{name}">{_esc(SECTION_TITLES[name])}</a>' for name in SECTIONS)
    title = data.get("title") or "Retraining run report"
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>{_esc(title)}</h1>"
        f"{_banner(data)}"
        f'<p class="meta">generated {_esc(data.get("generated_at"))}</p>'
        f"<nav>{nav}</nav>" + "".join(sections) + "</body></html>\n"
    )


def _available(data: Mapping[str, Any], name: str) -> bool:
    if name == "decision":
        return data.get("gate") is not None
    if name == "deployment":
        return True
    section = data.get(name)
    return isinstance(section, Mapping) and "unavailable" not in section


def publish_run_report(
    s3: Any,
    cfg: UseCaseConfig,
    registry: Any,
    *,
    run_key: str,
    dag_id: str,
    run_id: str,
    data_interval_start: datetime | str,
    data_interval_end: datetime | str,
    training_prefix: str | None = None,
    challenger_version: str | None = None,
    gate: Mapping[str, Any] | None = None,
    deploy: Mapping[str, Any] | str | None = None,
    psi_threshold: float = DEFAULT_PSI_THRESHOLD,
    card_precision_k: int = 100,
    task_states: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Build, render and write the report; return {"key", "keys", "bucket", "bytes", "sections", ...}.

    `key` is beside the model when the challenger's artifact exists, else
    `<reports_prefix>/<run_key>/report.html`; the page is always written to the latter too (the
    UI finds reports by run id). A rerun overwrites its own report.
    """
    data = build_run_report(
        s3,
        cfg,
        registry,
        dag_id=dag_id,
        run_id=run_id,
        data_interval_start=data_interval_start,
        data_interval_end=data_interval_end,
        training_prefix=training_prefix,
        challenger_version=challenger_version,
        gate=gate,
        deploy=deploy,
        psi_threshold=psi_threshold,
        card_precision_k=card_precision_k,
        task_states=task_states,
        now=now,
    )
    page = render_report_html(data).encode("utf-8")
    version = data["run"]["challenger_version"]
    has_model = (
        bool(version) and read_json(s3, cfg.s3.bucket, model_prefix(cfg, version) + "model.json") is not None
    )
    key = report_key(cfg, run_key, version if has_model else None)
    # Also by run: the UI's "Run report" link knows only the run id.
    keys = list(dict.fromkeys([key, report_key(cfg, run_key, None)]))
    for target in keys:
        s3.put_object(Bucket=cfg.s3.bucket, Key=target, Body=page, ContentType="text/html; charset=utf-8")
    gate = data.get("gate")
    return {
        "key": key,
        "keys": keys,
        "bucket": cfg.s3.bucket,
        "bytes": len(page),
        "sections": [{"id": name, "available": _available(data, name)} for name in SECTIONS],
        "decision": "no decision" if gate is None else ("pass" if gate.get("passed") else "fail"),
        "deployment": data["deployment"]["text"],
        "drift_flagged": (data.get("drift") or {}).get("flagged", []),
    }
