"""Which runs may change the live champion (pure policy)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fraud_retraining.deploy_policy import decide_deployment

END = datetime(2026, 11, 10, tzinfo=UTC)


def decide(**overrides):
    facts = {
        "gate_passed": True,
        "gate_reasons": [],
        "run_type": "scheduled",
        "interval_end": END,
        "run_started_at": END + timedelta(minutes=5),
        "champion_interval_end": END - timedelta(days=1),
    }
    facts.update(overrides)
    return decide_deployment(**facts)


def test_latest_scheduled_run_that_passed_the_gate_deploys() -> None:
    decision = decide()
    assert decision.deploy and decision.reason == "gate passed on the latest interval"


def test_failed_gate_never_deploys_even_forced() -> None:
    decision = decide(
        gate_passed=False,
        gate_reasons=["average_precision 0.2 < floor 0.3"],
        run_type="manual",
        force_deploy=True,
    )
    assert not decision.deploy
    assert decision.reason == "gate failed: average_precision 0.2 < floor 0.3"


@pytest.mark.parametrize("force", [False, True])
def test_backfill_never_deploys(force: bool) -> None:
    decision = decide(run_type="backfill", force_deploy=force)
    assert not decision.deploy and "backfill" in decision.reason


def test_catch_up_run_for_an_old_interval_does_not_deploy() -> None:
    decision = decide(run_started_at=END + timedelta(days=3))
    assert not decision.deploy and decision.reason.startswith("catch-up run")
    # Inside two schedule periods it is still the latest interval (a late scheduler, a retry).
    assert decide(run_started_at=END + timedelta(hours=47)).deploy


def test_model_trained_on_older_data_than_the_champion_does_not_deploy() -> None:
    decision = decide(champion_interval_end=END + timedelta(days=1))
    assert not decision.deploy and "older than the champion" in decision.reason


def test_manual_force_deploy_overrides_the_time_rules_only() -> None:
    old = {"run_type": "manual", "run_started_at": END + timedelta(days=30), "force_deploy": True}
    assert decide(**old).deploy
    assert (
        decide(**old, champion_interval_end=END + timedelta(days=5)).reason == "manual run with force_deploy"
    )
    assert not decide(**{**old, "force_deploy": False}).deploy


def test_first_model_and_runs_without_interval_deploy_on_the_gate() -> None:
    assert decide(champion_interval_end=None).deploy
    assert decide(interval_end=None, run_type="manual").deploy
    assert decide(interval_end=END.isoformat(), run_started_at=(END + timedelta(hours=1)).isoformat()).deploy
