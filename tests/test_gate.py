"""The gate's rules: floors, no regression within a tolerance, too few frauds, first model."""

from __future__ import annotations

import pytest

from fraud_retraining.gate import GatePolicy, decide

POLICY = GatePolicy(floors={"auc_roc": 0.8, "average_precision": 0.4}, tolerance=0.02, min_train_frauds=30)
GOOD = {"auc_roc": 0.9, "average_precision": 0.6}


def test_first_model_passes_on_floors_alone() -> None:
    decision = decide(GOOD, None, train_frauds=100, policy=POLICY)
    assert decision.passed
    assert decision.reasons == ["all floors hold (no champion yet)"]
    assert [r.name for r in decision.rules] == [
        "min_train_frauds",
        "floor:auc_roc",
        "floor:average_precision",
    ]


def test_first_model_below_a_floor_fails_with_the_numbers() -> None:
    decision = decide({"auc_roc": 0.9, "average_precision": 0.35}, None, train_frauds=100, policy=POLICY)
    assert not decision.passed
    assert decision.reasons == ["average_precision 0.3500 vs floor 0.4000"]


@pytest.mark.parametrize(
    ("challenger_ap", "passed"),
    [(0.61, True), (0.59, True), (0.58, True), (0.5799, False), (0.45, False)],
)
def test_no_regression_beyond_tolerance(challenger_ap: float, passed: bool) -> None:
    champion = {"auc_roc": 0.9, "average_precision": 0.60}
    decision = decide(
        {"auc_roc": 0.9, "average_precision": challenger_ap}, champion, train_frauds=100, policy=POLICY
    )
    assert decision.passed is passed
    rule = decision.rules[-1]
    assert rule.name == "no_regression:average_precision"
    assert rule.threshold == pytest.approx(0.58)


def test_too_few_frauds_is_refused_even_with_great_metrics() -> None:
    decision = decide({"auc_roc": 0.99, "average_precision": 0.99}, None, train_frauds=12, policy=POLICY)
    assert not decision.passed
    assert decision.reasons == ["trained on 12 frauds; at least 30 required"]


def test_undefined_metric_fails_its_floor() -> None:
    decision = decide(
        {"auc_roc": None, "average_precision": float("nan")}, None, train_frauds=100, policy=POLICY
    )
    assert not decision.passed
    assert len(decision.reasons) == 2
    assert "undefined" in decision.reasons[0]


def test_champion_with_undefined_primary_lets_floors_decide() -> None:
    decision = decide(GOOD, {"average_precision": None}, train_frauds=100, policy=POLICY)
    assert decision.passed


def test_decision_serialises_for_xcom_and_registry() -> None:
    import json

    payload = decide(
        GOOD, {"auc_roc": 0.95, "average_precision": 0.7}, train_frauds=100, policy=POLICY
    ).to_dict()
    assert payload["passed"] is False
    assert json.loads(json.dumps(payload))["rules"][-1]["observed"] == 0.6


def test_policy_from_params_defaults_missing_keys() -> None:
    policy = GatePolicy.from_params({"tolerance": 0.05, "floors": {"auc_roc": 0.7}})
    assert policy.tolerance == 0.05
    assert dict(policy.floors) == {"auc_roc": 0.7}
    assert policy.primary_metric == "average_precision"
