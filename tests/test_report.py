"""The per-run HTML report: pure rendering from hand-made dicts, and a report of a real run on the
local stack (seeded MongoDB -> extract -> stage -> local AutoML -> gate -> report in S3)."""

from __future__ import annotations

import copy
import json
import math
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from fraud_retraining.config import load_use_case
from fraud_retraining.features import FEATURE_COLUMNS
from fraud_retraining.report import (
    SECTIONS,
    normalize_deployment,
    population_stability_index,
    render_report_html,
    report_key,
)

CFG = load_use_case()
NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?( %)?$")


# ------------------------------------------------------------------ an HTML reader for the checks


class ReportPage(HTMLParser):
    """Sections by id, each with its text, tables (class -> rows of cell texts) and images."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.sections: dict[str, dict[str, Any]] = {}
        self.banner_text: list[str] = []
        self.banner_class = ""
        self.external: list[str] = []
        self._section: str | None = None
        self._in_banner = 0
        self._table: list[list[str]] | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if tag in {"link", "script"} or (tag == "img" and not (attr.get("src") or "").startswith("data:")):
            self.external.append(f"{tag} {attr}")
        if tag == "div" and attr.get("id") == "banner":
            self._in_banner = 1
            self.banner_class = attr.get("class") or ""
        elif tag == "div" and self._in_banner:
            self._in_banner += 1
        if tag == "section":
            self._section = attr["id"]
            self.sections[self._section] = {"text": [], "tables": {}, "images": []}
        if self._section is None:
            return
        current = self.sections[self._section]
        if tag == "table":
            self._table = []
            current["tables"].setdefault(attr.get("class") or "", []).append(self._table)
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in {"td", "th"} and self._row is not None:
            self._cell = []
        elif tag == "img":
            current["images"].append(attr.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._in_banner:
            self._in_banner -= 1
        if tag in {"td", "th"} and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        if self._in_banner:
            self.banner_text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._section is not None:
            self.sections[self._section]["text"].append(data)

    def text(self, section: str) -> str:
        return " ".join("".join(self.sections[section]["text"]).split())

    def table(self, section: str, css: str) -> list[list[str]]:
        """Body rows (header row dropped) of the first table with that class in the section."""
        return self.sections[section]["tables"][css][0][1:]

    @property
    def banner(self) -> str:
        return " ".join(" ".join(self.banner_text).split())


def is_number(text: str) -> bool:
    return bool(NUMBER.match(text.strip()))


def png_data_uri(src: str) -> bool:
    import base64

    prefix = "data:image/png;base64,"
    return src.startswith(prefix) and base64.b64decode(src[len(prefix) :])[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ hand-made report dicts


def _curve(n: int, power: float) -> dict[str, list[float]]:
    xs = np.linspace(0, 1, n)
    return {"recall": xs.tolist(), "precision": (1 - xs**power).tolist()}


def full_report() -> dict[str, Any]:
    features = ["amount", "is_night", "terminal_fraud_share_7d"]
    gate_rules = [
        {
            "name": "min_train_frauds",
            "passed": True,
            "observed": 120.0,
            "threshold": 50.0,
            "detail": "trained on 120 frauds; at least 50 required",
        },
        {
            "name": "floor:auc_roc",
            "passed": True,
            "observed": 0.91,
            "threshold": 0.75,
            "detail": "auc_roc 0.9100 vs floor 0.7500",
        },
        {
            "name": "floor:average_precision",
            "passed": True,
            "observed": 0.52,
            "threshold": 0.3,
            "detail": "average_precision 0.5200 vs floor 0.3000",
        },
        {
            "name": "no_regression:average_precision",
            "passed": True,
            "observed": 0.52,
            "threshold": 0.47,
            "detail": "average_precision 0.5200 vs champion 0.4800 (tolerance 0.0100, so at least 0.4700)",
        },
    ]
    return {
        "title": "card-fraud retraining run scheduled__2026-12-03",
        "generated_at": "2026-12-04T00:10:00+00:00",
        "run": {
            "dag_id": "fraud_model_retraining",
            "run_id": "scheduled__2026-12-03T00:00:00+00:00",
            "model_name": "card-fraud",
            "data_interval": {"start": "2026-12-03T00:00:00+00:00", "end": "2026-12-04T00:00:00+00:00"},
            "challenger_version": "20261204T000000Z-abcd1234",
            "champion_version": "20261203T000000Z-00ff00ff",
            "training_prefix": "training/scheduled__2026-12-03/",
        },
        "gate": {
            "passed": True,
            "reasons": ["all floors hold and no regression against the champion"],
            "rules": gate_rules,
            "challenger": {"auc_roc": 0.91, "average_precision": 0.52, "card_precision_at_100": 0.21},
            "champion": {"auc_roc": 0.9, "average_precision": 0.48, "card_precision_at_100": 0.2},
            "holdout_rows": 5400,
        },
        "deployment": normalize_deployment("deployed version 20261204T000000Z-abcd1234"),
        "volumes": {
            "days": [
                {
                    "day": "2026-12-02",
                    "in_run_interval": False,
                    "transactions": 5210,
                    "labels": 4980,
                    "quarantined": {"transactions: missing_field:customer_id": 3},
                    "quarantined_total": 3,
                },
                {
                    "day": "2026-12-03",
                    "in_run_interval": True,
                    "transactions": 5302,
                    "labels": 5011,
                    "quarantined": {
                        "transactions: wrong_type:amount": 2,
                        "transactions: wrong_type:tx_datetime": 1,
                    },
                    "quarantined_total": 3,
                },
            ],
            "quarantined_by_reason": [
                {
                    "dataset": "transactions",
                    "reason": "missing_field:customer_id",
                    "source": "extract",
                    "window": 3,
                    "run_interval": 0,
                },
                {
                    "dataset": "transactions",
                    "reason": "wrong_type:amount",
                    "source": "extract",
                    "window": 2,
                    "run_interval": 2,
                },
                {
                    "dataset": "transactions",
                    "reason": "wrong_type:tx_datetime",
                    "source": "stray sweep",
                    "window": 1,
                    "run_interval": 1,
                },
            ],
            "totals": {
                "days": 2,
                "days_extracted": 2,
                "transactions": 10512,
                "labels": 9991,
                "quarantined": 6,
            },
        },
        "training_set": {
            "splits": [
                {
                    "split": "train",
                    "from": "2026-10-01",
                    "to": "2026-11-12",
                    "rows": 200000,
                    "frauds": 1700,
                    "fraud_rate": 0.0085,
                    "raw_transactions": 210000,
                    "label_coverage": 200000 / 210000,
                },
                {
                    "split": "valid",
                    "from": "2026-11-19",
                    "to": "2026-11-26",
                    "rows": 35000,
                    "frauds": 290,
                    "fraud_rate": 290 / 35000,
                    "raw_transactions": 36000,
                    "label_coverage": 35000 / 36000,
                },
                {
                    "split": "test",
                    "from": "2026-11-26",
                    "to": "2026-12-03",
                    "rows": 34000,
                    "frauds": 250,
                    "fraud_rate": 250 / 34000,
                    "raw_transactions": 36100,
                    "label_coverage": 34000 / 36100,
                },
            ],
            "fraud_rate": 2240 / 269000,
            "rows": 269000,
            "frauds": 2240,
            "removed_known_compromised_cards": 41,
        },
        "drift": {
            "reference_version": "20261203T000000Z-00ff00ff",
            "reference_training_data": "s3://fraud-retraining/training/scheduled__2026-12-02/",
            "reference_rows": 199000,
            "current_rows": 200000,
            "threshold": 0.2,
            "bins": 10,
            "features": [
                {
                    "feature": "terminal_fraud_share_7d",
                    "psi": 0.31,
                    "flagged": True,
                    "reference_mean": 0.004,
                    "current_mean": 0.009,
                },
                {
                    "feature": "amount",
                    "psi": 0.012,
                    "flagged": False,
                    "reference_mean": 53.1,
                    "current_mean": 53.4,
                },
                {
                    "feature": "is_night",
                    "psi": 0.0004,
                    "flagged": False,
                    "reference_mean": 0.2,
                    "current_mean": 0.2,
                },
            ],
            "flagged": ["terminal_fraud_share_7d"],
        },
        "leaderboard": {
            "rows": [
                {
                    "rank": 1,
                    "model": "lgbm",
                    "metric": "validation average precision",
                    "score": 0.55,
                    "fit_seconds": 1.2,
                    "detail": '{"n_estimators": 40}',
                },
                {
                    "rank": 2,
                    "model": "xgboost",
                    "metric": "validation average precision",
                    "score": 0.5,
                    "fit_seconds": 0.8,
                    "detail": '{"max_depth": 6}',
                },
            ],
            "total": 2,
            "chosen": {"estimator": "lgbm"},
        },
        "curves": {
            "holdout_rows": 5400,
            "holdout_frauds": 44,
            "models": {
                "challenger": {
                    "version": "20261204T000000Z-abcd1234",
                    "metrics": {"auc_roc": 0.91, "average_precision": 0.52},
                    "pr": _curve(50, 2),
                    "roc": {
                        "fpr": np.linspace(0, 1, 20).tolist(),
                        "tpr": np.sqrt(np.linspace(0, 1, 20)).tolist(),
                    },
                },
                "champion": {
                    "version": "20261203T000000Z-00ff00ff",
                    "metrics": {"auc_roc": 0.9, "average_precision": 0.48},
                    "pr": _curve(50, 1.5),
                    "roc": {"fpr": [0.0, 0.5, 1.0], "tpr": [0.0, 0.8, 1.0]},
                },
            },
        },
        "card_precision": {
            "k": 100,
            "days": ["2026-11-26", "2026-11-27", "2026-11-28"],
            "models": {
                "challenger": {"version": "20261204T000000Z-abcd1234", "values": [0.2, 0.25, 0.18]},
                "champion": {"version": "20261203T000000Z-00ff00ff", "values": [0.19, 0.2, 0.17]},
            },
        },
        "importance": {
            "version": "20261204T000000Z-abcd1234",
            "kind": "gain",
            "features": [
                {"feature": f, "importance": v, "share": v / 60.0}
                for f, v in zip(features, [30.0, 20.0, 10.0], strict=True)
            ],
        },
        "lineage": {
            "dag_id": "fraud_model_retraining",
            "run_id": "scheduled__2026-12-03T00:00:00+00:00",
            "data_interval": {"start": "2026-12-03T00:00:00+00:00", "end": "2026-12-04T00:00:00+00:00"},
            "data_hash": "9f" * 32,
            "training_library_versions": {"lightgbm": "4.6.0", "flaml": "2.3.6"},
            "report_library_versions": {"matplotlib": "3.11.2"},
        },
    }


def no_champion_report() -> dict[str, Any]:
    data = full_report()
    data["run"]["champion_version"] = None
    data["gate"]["rules"] = data["gate"]["rules"][:3]
    data["gate"]["champion"] = None
    data["gate"]["reasons"] = ["all floors hold (no champion yet)"]
    data["drift"] = {"unavailable": "no champion yet: nothing to compare the training window with"}
    del data["curves"]["models"]["champion"]
    del data["card_precision"]["models"]["champion"]
    data["deployment"] = normalize_deployment("skipped: backfill")
    return data


def gate_did_not_run_report() -> dict[str, Any]:
    """The stage task failed: no training set, no model, no gate, no deployment."""
    data = full_report()
    data["run"].update(challenger_version=None, training_prefix=None)
    data["gate"] = None
    data["run"]["task_states"] = {
        "extract_from_mongo_0": "success",
        "stage_to_s3": "failed",
        "automl_training": "upstream_failed",
    }
    data["deployment"] = normalize_deployment(None, None)
    for name in ("training_set", "drift", "leaderboard", "curves", "card_precision", "importance"):
        data[name] = {"unavailable": "no staged training set (the stage task did not run or failed)"}
    return data


# ------------------------------------------------------------------ pure tests


def test_full_report_has_every_section_with_numbers_and_embedded_plots() -> None:
    page = ReportPage(render_report_html(full_report()))
    assert list(page.sections) == list(SECTIONS)
    assert page.external == [], "the report must be self-contained"
    assert page.banner.startswith("PASS · DEPLOYED 20261204T000000Z-abcd1234")
    assert "pass" in page.banner_class.split()

    rules = page.table("decision", "gate-rules")
    assert [r[0] for r in rules] == [
        "min_train_frauds",
        "floor:auc_roc",
        "floor:average_precision",
        "no_regression:average_precision",
    ]
    assert rules[1][2:4] == ["0.9100", "0.7500"] and rules[3][3] == "0.4700"
    assert page.table("volumes", "quarantine")[1] == [
        "transactions",
        "wrong_type:amount",
        "extract",
        "2",
        "2",
    ]
    assert page.table("volumes", "volumes")[1][:2] == ["2026-12-03 (this run)", "5,302"]
    assert page.table("training_set", "training-set")[0][2:5] == ["200,000", "1,700", "0.850 %"]
    drift = page.table("drift", "drift")
    assert drift[0][:3] == ["terminal_fraud_share_7d", "0.3100", "DRIFT"]
    assert all(is_number(row[1]) for row in drift)
    assert page.table("leaderboard", "leaderboard")[0][:4] == [
        "1",
        "lgbm",
        "validation average precision",
        "0.5500",
    ]
    assert page.table("card_precision", "card-precision")[-1] == ["mean", "0.2100", "0.1867"]
    assert page.table("importance", "importance")[0] == ["amount", "30.00", "50.0 %"]
    for name in ("volumes", "drift", "curves", "card_precision", "importance"):
        images = page.sections[name]["images"]
        assert images and all(png_data_uri(src) for src in images), name
    assert "9f" * 32 in page.text("lineage") and "lightgbm" in page.text("lineage")


def test_no_champion_report_says_so_instead_of_comparing() -> None:
    page = ReportPage(render_report_html(no_champion_report()))
    assert list(page.sections) == list(SECTIONS)
    assert page.banner.startswith("PASS · NOT DEPLOYED")
    assert "skipped: backfill" in page.banner
    assert "no champion yet" in page.text("drift")
    assert "no_regression" not in page.text("decision")
    assert "no champion" in page.table("decision", "gate-metrics")[0][2]
    assert "No champion to compare with" in page.text("curves")
    assert page.sections["curves"]["images"]  # the challenger's curves alone
    assert page.table("card_precision", "card-precision")[0][0] == "2026-11-26"


def test_gate_did_not_run_report_still_renders_every_section() -> None:
    data = gate_did_not_run_report()
    page = ReportPage(render_report_html(data))
    assert list(page.sections) == list(SECTIONS)
    assert page.banner.startswith("NO DECISION · NOT DEPLOYED")
    assert "unknown" in page.banner_class.split()
    assert "stage_to_s3 failed" in page.banner and "automl_training upstream_failed" in page.banner
    assert "gate did not run" in page.text("decision")
    assert ["stage_to_s3", "failed"] in page.table("decision", "task-states")
    assert "skipped: gate did not run" in page.text("deployment")
    for name in ("training_set", "drift", "leaderboard", "curves", "card_precision", "importance"):
        assert page.text(name).endswith(
            "Unavailable: no staged training set (the stage task did not run or failed)"
        )
    # What did run is still reported with its numbers.
    assert page.table("volumes", "quarantine")
    json.dumps(data)  # a plain dict, JSON-safe


@pytest.mark.parametrize(
    ("passed", "deploy", "banner", "css"),
    [
        (True, "failed: smoke test returned 500", "PASS · NOT DEPLOYED (deployment failed)", "fail"),
        (True, None, "PASS · DEPLOYMENT UNKNOWN", "pass"),
        (False, None, "FAIL · NOT DEPLOYED", "fail"),
    ],
)
def test_banner_reads_gate_and_deployment_together(passed: bool, deploy: Any, banner: str, css: str) -> None:
    data = full_report()
    data["gate"]["passed"] = passed
    data["deployment"] = normalize_deployment(deploy, data["gate"])
    page = ReportPage(render_report_html(data))
    assert page.banner.startswith(banner), page.banner
    assert css in page.banner_class.split()


def test_a_malformed_section_costs_that_section_only() -> None:
    data = full_report()
    data["leaderboard"] = {"rows": [{"no": "keys"}]}
    data.pop("importance")
    page = ReportPage(render_report_html(data))
    assert "could not render" in page.text("leaderboard")
    assert "Unavailable: not gathered" in page.text("importance")
    assert page.table("drift", "drift")


def test_text_is_escaped() -> None:
    data = copy.deepcopy(full_report())
    data["gate"]["reasons"] = ["<script>alert(1)</script>"]
    page_text = render_report_html(data)
    assert "<script>" not in page_text and "&lt;script&gt;" in page_text


@pytest.mark.parametrize(
    ("deploy", "gate", "status", "text"),
    [
        ("deployed version v7", {"passed": True}, "deployed", "deployed version v7"),
        ({"outcome": "skipped: backfill"}, {"passed": True}, "skipped", "skipped: backfill"),
        (
            {"status": "failed", "reason": "smoke test 500"},
            {"passed": True},
            "failed",
            "failed: smoke test 500",
        ),
        (
            {"engine": "local", "version": "v8", "previous_version": "v7"},
            {"passed": True},
            "deployed",
            "deployed version v8",
        ),
        (
            {"deployed": False, "version": "v8", "action": "skip", "reason": "backfill runs never deploy"},
            {"passed": True},
            "skipped",
            "skipped: backfill runs never deploy",
        ),
        (
            {
                "deployed": True,
                "version": "v8",
                "previous_champion": "v7",
                "action": "deploy",
                "reason": "ok",
            },
            {"passed": True},
            "deployed",
            "deployed version v8",
        ),
        (None, {"passed": False}, "skipped", "skipped: gate failed"),
        (None, None, "skipped", "skipped: gate did not run"),
        (None, {"passed": True}, "unknown", "unknown: no deployment outcome was recorded"),
    ],
)
def test_normalize_deployment(deploy: Any, gate: Any, status: str, text: str) -> None:
    outcome = normalize_deployment(deploy, gate)
    assert (outcome["status"], outcome["text"]) == (status, text)
    if status == "deployed":
        assert outcome["version"] in {"v7", "v8"}


def test_population_stability_index() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=20_000)
    assert population_stability_index(reference, rng.normal(size=20_000)) < 0.01
    shifted = population_stability_index(reference, rng.normal(loc=1.0, size=20_000))
    assert shifted > 0.2
    # Flags: one bin per value; a new value and missing values count as drift too.
    flags = rng.random(10_000) < 0.2
    assert population_stability_index(flags, rng.random(10_000) < 0.2) < 0.01
    assert population_stability_index(flags, rng.random(10_000) < 0.6) > 0.2
    with_nan = np.where(rng.random(10_000) < 0.5, np.nan, 1.0)
    assert population_stability_index(np.ones(10_000), with_nan) > 1.0
    assert population_stability_index([], [1.0]) is None
    assert math.isfinite(population_stability_index(reference, np.full(100, 99.0)))


def test_report_key_next_to_the_model_or_by_run() -> None:
    assert report_key(CFG, "scheduled__x", "v1") == "models/card-fraud/v1/report.html"
    assert report_key(CFG, "scheduled__2026-12-03T00:00:00+00:00", None) == (
        "reports/scheduled__2026-12-03T00_00_00_00_00/report.html"
    )


def test_parse_summary_accepts_json_repr_and_sentences() -> None:
    from fraud_retraining.operators.report import parse_summary

    assert parse_summary('{"passed": true}') == {"passed": True}
    assert parse_summary("{'passed': True}") == {"passed": True}  # rendered without | tojson
    assert parse_summary("null") is None and parse_summary("None") is None and parse_summary("") is None
    assert parse_summary("skipped: backfill") == "skipped: backfill"
    with pytest.raises(ValueError, match="JSON object"):
        parse_summary("[1, 2]")


def test_operator_reads_task_states_and_names_a_failed_deployment() -> None:
    from fraud_retraining.operators.report import RunReportOperator

    operator = RunReportOperator(task_id="run_report")
    assert operator.trigger_rule == "all_done"

    class TI:
        """The Task SDK's get_task_states answer: {run_id: {task_id: state}}."""

        def __init__(self, states: dict[str, str]) -> None:
            self.states = states
            self.asked: dict[str, Any] = {}

        def get_task_states(self, **query: Any) -> dict[str, dict[str, str]]:
            self.asked = query
            return {"r1": self.states}

    ti = TI({"model_evaluation_gate": "success", "endpoint_update": "failed", "run_report": "running"})
    context = {"ti": ti, "dag_run": SimpleNamespace(run_type="scheduled")}
    states = operator._task_states(context, DAG_ID, "r1")
    assert ti.asked == {"dag_id": DAG_ID, "run_ids": ["r1"]}
    assert states == {"model_evaluation_gate": "success", "endpoint_update": "failed"}  # not itself
    assert (
        operator._deploy_without_outcome(context, states)
        == "failed: task endpoint_update failed (see its log)"
    )
    assert operator._deploy_without_outcome(context, {"endpoint_update": "upstream_failed"}) is None
    backfill = {"ti": ti, "dag_run": SimpleNamespace(run_type=SimpleNamespace(value="backfill"))}
    assert operator._deploy_without_outcome(backfill, {}) == "skipped: backfill"
    assert operator._task_states({"ti": object()}, DAG_ID, "r1") == {}  # outside a real task


# ------------------------------------------------------------------ a real run on the local stack

# Small on purpose (the extract costs about a second per day on the embedded servers): a 2-day
# label delay and 3-day validation/test splits fit a 7-day training window and a champion trained
# 3 days earlier into 20 simulated days.
START = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 20
LABEL_DELAY_DAYS = 2
SPLITS = {"training_window_days": 7, "valid_days": 3, "test_days": 3}
DAG_ID = "fraud_model_retraining"


def run_context(as_of: datetime, run_type: str = "scheduled") -> dict[str, Any]:
    start = as_of - timedelta(days=1)
    run_id = f"{run_type}__{start.isoformat()}"
    return {
        "dag": SimpleNamespace(dag_id=DAG_ID),
        "dag_run": SimpleNamespace(run_id=run_id, run_after=as_of, run_type=run_type),
        "run_id": run_id,
        "data_interval_start": start,
        "data_interval_end": as_of,
        "logical_date": start,
    }


def train_and_gate(config_path: str, training_prefix: str, context: dict[str, Any]) -> tuple[dict, dict]:
    """The DAG's own training and gate operators on a staged set, at a tiny budget."""
    from fraud_retraining.operators.gate import ModelEvaluationGateOperator
    from fraud_retraining.operators.train import AutoMLTrainingOperator

    trained = AutoMLTrainingOperator(
        task_id="automl_training",
        training_prefix=training_prefix,
        use_case_config=config_path,
        time_budget_s=8,
        max_trials=4,
        estimators=("lgbm", "lrl1"),
        seed=3,
    ).execute(context)
    gate = ModelEvaluationGateOperator(
        task_id="model_evaluation_gate",
        training_prefix=training_prefix,
        challenger_version=trained["version"],
        use_case_config=config_path,
        floors={"auc_roc": 0.6, "average_precision": 0.05},
        min_train_frauds=5,
    ).execute(context)
    return trained, gate


@pytest.mark.integration
def test_report_of_a_real_run_on_the_local_stack(
    mongo_client, mongo_db, s3_client, s3_bucket, airflow_connections, use_case_config_file
) -> None:
    import os
    from pathlib import Path

    import yaml
    from bson import ObjectId

    from fraud_retraining.extract import extract_interval, sweep_strays
    from fraud_retraining.operators.report import RunReportOperator
    from fraud_retraining.registry import ModelRegistry
    from fraud_retraining.seeding import seed
    from fraud_retraining.simulator import SimulationParams, simulate
    from fraud_retraining.staging import stage_training_set

    config_path = use_case_config_file(database=mongo_db.name, bucket=s3_bucket)
    raw = yaml.safe_load(Path(config_path).read_text())
    Path(config_path).write_text(yaml.safe_dump({**raw, "label_delay_days": LABEL_DELAY_DAYS}))
    cfg = load_use_case(config_path)
    assert (cfg.mongo.database, cfg.s3.bucket, cfg.label_delay_days) == (mongo_db.name, s3_bucket, 2)
    end = START + timedelta(days=DAYS)
    params = SimulationParams(
        n_customers=300,
        n_terminals=400,
        n_days=DAYS,
        start_date=START.date(),
        seed=11,
        drift_start_day=10,
        fraud_delay_days=(0.5, float(LABEL_DELAY_DAYS)),
    )
    sim = simulate(params, cfg)
    collection = mongo_db[cfg.mongo.collection]
    seed(collection, sim, cfg, as_of=end, malformed_share=0.002, seed_value=11)
    # A document whose time is not a date, inserted during the last day: only the sweep finds it.
    stray_day = end - timedelta(days=1)
    collection.insert_one(
        {
            "_id": ObjectId.from_datetime(stray_day + timedelta(hours=3)),
            "tx_id": "stray-1",
            "tx_datetime": "2026-11-11 03:00",
            "customer_id": 1,
            "terminal_id": 1,
            "amount": 12.5,
        }
    )
    for day in range(DAYS):
        lo = START + timedelta(days=day)
        extract_interval(mongo_client, s3_client, cfg, lo, lo + timedelta(days=1), now=end)
    # The DAG sweeps every interval; here only the run's own, the one with the stray (saves ~1 s a day).
    sweep_strays(mongo_client, s3_client, cfg, stray_day, end)
    registry = ModelRegistry(mongo_db[cfg.mongo.registry_collection], cfg.model_name)

    # The champion: an earlier run, a week before, promoted as the deploy step would.
    champion_as_of = end - timedelta(days=3)
    champion_ctx = run_context(champion_as_of)
    champion_set = stage_training_set(s3_client, cfg, champion_as_of, champion_ctx["run_id"], **SPLITS)
    champion, _ = train_and_gate(config_path, champion_set["training_prefix"], champion_ctx)
    registry.promote(champion["version"], expected_champion=None, reason="test champion")

    # This run: stage, train, gate against the champion, then the report.
    ctx = run_context(end)
    staged = stage_training_set(s3_client, cfg, end, ctx["run_id"], **SPLITS)
    trained, gate = train_and_gate(config_path, staged["training_prefix"], ctx)
    assert gate["champion_version"] == champion["version"]
    # endpoint_update's "outcome" XCom (the deploy itself is tested in test_endpoint_deploy.py).
    deploy = (
        {"deployed": True, "version": trained["version"], "action": "deploy", "reason": "latest interval"}
        if gate["passed"]
        else {"deployed": False, "version": trained["version"], "action": "skip", "reason": "gate failed"}
    )
    summary = RunReportOperator(
        task_id="run_report",
        use_case_config=config_path,
        training_prefix=staged["training_prefix"],
        challenger_version=trained["version"],
        gate_summary=json.dumps(gate),
        deploy_summary=json.dumps(deploy),
        run_key=ctx["run_id"],
        data_interval_start=ctx["data_interval_start"].isoformat(),
        data_interval_end=ctx["data_interval_end"].isoformat(),
    ).execute(ctx)
    json.dumps(summary)  # XCom-safe
    assert summary["key"] == f"models/card-fraud/{trained['version']}/report.html"
    by_run = f"reports/{ctx['run_id']}/report.html".replace(":", "_").replace("+", "_")
    assert summary["keys"] == [summary["key"], by_run]  # the UI finds reports by run id
    assert s3_client.get_object(Bucket=s3_bucket, Key=by_run)["ContentLength"] == summary["bytes"]
    assert all(s["available"] for s in summary["sections"]), summary["sections"]
    body = s3_client.get_object(Bucket=s3_bucket, Key=summary["key"])["Body"].read()
    assert len(body) == summary["bytes"]
    html_text = body.decode("utf-8")
    if os.environ.get("FRAUD_REPORT_SAMPLE"):
        Path(os.environ["FRAUD_REPORT_SAMPLE"]).write_text(html_text)
    page = ReportPage(html_text)

    assert list(page.sections) == list(SECTIONS)
    assert page.external == []
    verdict = f"PASS · DEPLOYED {trained['version']}" if gate["passed"] else "FAIL · NOT DEPLOYED"
    assert page.banner.startswith(verdict), page.banner
    # Gate: every rule with its observed number and threshold, as recorded.
    rules = page.table("decision", "gate-rules")
    assert [r[0] for r in rules] == [rule["name"] for rule in gate["rules"]]
    assert rules[-1][0] == "no_regression:average_precision"
    assert rules[1][3] == "0.6000" and all(is_number(r[2]) and is_number(r[3]) for r in rules)
    # Volumes: one row per window day with real counts; the seeded malformed documents and the
    # stray are counted by reason.
    days = page.table("volumes", "volumes")
    window_days = (
        SPLITS["training_window_days"] + LABEL_DELAY_DAYS + SPLITS["valid_days"] + SPLITS["test_days"]
    )
    assert len(days) == window_days + LABEL_DELAY_DAYS and all(
        is_number(r[1]) and is_number(r[2]) for r in days
    )
    assert days[-1][0].endswith("(this run)")
    reasons = {(r[0], r[1], r[2]): int(r[3].replace(",", "")) for r in page.table("volumes", "quarantine")}
    assert reasons[("transactions", "wrong_type:tx_datetime", "stray sweep")] == 1
    assert any(reason.startswith("wrong_type:amount") for _, reason, _ in reasons)
    # Training set: rows, frauds, fraud rate and label coverage per split.
    splits = page.table("training_set", "training-set")
    assert [r[0] for r in splits] == ["train", "valid", "test"]
    assert all(is_number(cell) for r in splits for cell in r[2:])
    assert int(splits[0][2].replace(",", "")) == staged["rows"]["train"]
    # Drift: a PSI number per feature against the champion's training data.
    drift = page.table("drift", "drift")
    assert len(drift) == len(FEATURE_COLUMNS) and all(is_number(r[1]) for r in drift)
    assert champion["version"] in page.text("drift")
    # Leaderboard with rows, curves of both models, card precision per test day, importance.
    leaderboard = page.table("leaderboard", "leaderboard")
    assert leaderboard and all(is_number(r[3]) for r in leaderboard)
    holdout = page.table("curves", "holdout-metrics")
    assert {r[0] for r in holdout} >= {"auc_roc", "average_precision", "card_precision_at_100"}
    assert len(holdout[0]) == 3  # challenger and champion side by side
    per_day = page.table("card_precision", "card-precision")
    assert len(per_day) == SPLITS["test_days"] + 1 and all(is_number(c) for r in per_day for c in r[1:])
    importance = page.table("importance", "importance")
    assert len(importance) == len(FEATURE_COLUMNS) and all(is_number(r[1]) for r in importance)
    for name in ("volumes", "drift", "curves", "card_precision", "importance"):
        images = page.sections[name]["images"]
        assert images and all(png_data_uri(src) for src in images), name
    lineage = page.text("lineage")
    assert ctx["run_id"] in lineage and staged["data_hash"] in lineage and "lightgbm" in lineage

    # A run whose stage failed: nothing upstream but the extract; the report still lands,
    # under reports/<run>/, with the volumes and "did not run" everywhere else.
    failed_ctx = run_context(end, run_type="manual")
    failed = RunReportOperator(
        task_id="run_report",
        use_case_config=config_path,
        training_prefix="None",
        challenger_version="None",
        gate_summary="null",
        deploy_summary="null",
        run_key=failed_ctx["run_id"],
        data_interval_start=failed_ctx["data_interval_start"].isoformat(),
        data_interval_end=failed_ctx["data_interval_end"].isoformat(),
    ).execute(failed_ctx)
    assert failed["key"] == f"reports/manual__{stray_day.isoformat()}/report.html".replace(":", "_").replace(
        "+", "_"
    )
    assert failed["decision"] == "no decision"
    assert failed["keys"] == [failed["key"]]
    page = ReportPage(s3_client.get_object(Bucket=s3_bucket, Key=failed["key"])["Body"].read().decode())
    assert page.banner.startswith("NO DECISION · NOT DEPLOYED")
    assert len(page.table("volumes", "volumes")) == 1
    assert "Unavailable" in page.text("drift") and "Unavailable" in page.text("leaderboard")
