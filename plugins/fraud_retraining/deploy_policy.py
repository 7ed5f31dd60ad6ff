"""Which runs may change the live champion: the gate's verdict plus the run's place in time.

A backfill re-extracts, re-stages and may retrain as of a past date, but it must never replace
the model serving live traffic, and neither may a scheduled run that is only catching up on an
old interval. Only a run for the latest interval (or a manual run with `force_deploy`) deploys,
and never a model trained on older data than the champion's. Pure: the endpoint_update task
calls it with facts about its run, tests call it with tables of cases.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from fraud_retraining.timeutil import as_utc

DEPLOY = "deploy"
SKIP = "skip"


@dataclass(frozen=True)
class DeploymentDecision:
    action: str  # DEPLOY | SKIP
    reason: str

    @property
    def deploy(self) -> bool:
        return self.action == DEPLOY

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_deployment(
    *,
    gate_passed: bool,
    gate_reasons: list[str] | None = None,
    run_type: str,
    interval_end: datetime | str | None,
    run_started_at: datetime | str | None,
    schedule_period: timedelta = timedelta(days=1),
    force_deploy: bool = False,
    champion_interval_end: datetime | str | None = None,
    max_lag_periods: float = 2.0,
) -> DeploymentDecision:
    """Deploy or skip, with the reason a person reads in the UI and the report.

    - a failed gate never deploys (force_deploy does not bypass the gate: it bypasses the
      "latest interval" rules below, for a manual re-run of a past day that must go live);
    - backfill runs never deploy, even with force_deploy (it is a run parameter a backfill
      inherits from its defaults, and a backfill replacing the live model is the accident
      this policy exists to prevent);
    - a run whose interval ended more than `max_lag_periods` schedule periods before the run
      started is a catch-up run, not the latest interval;
    - a model whose interval ends before the champion's was trained on older data.
    """
    if not gate_passed:
        reasons = "; ".join(gate_reasons or []) or "no reason recorded"
        return DeploymentDecision(SKIP, f"gate failed: {reasons}")
    if run_type == "backfill":
        return DeploymentDecision(SKIP, "backfill runs never replace the live champion")
    if force_deploy and run_type == "manual":
        return DeploymentDecision(DEPLOY, "manual run with force_deploy")
    end = as_utc(interval_end) if interval_end else None
    if end is not None and run_started_at:
        lag = as_utc(run_started_at) - end
        if lag > schedule_period * max_lag_periods:
            return DeploymentDecision(
                SKIP,
                f"catch-up run: interval ended {end.isoformat()}, {_days(lag)} before the run started "
                f"(more than {max_lag_periods:g} schedule periods); only the latest interval deploys",
            )
    if end is not None and champion_interval_end:
        champion_end = as_utc(champion_interval_end)
        if end < champion_end:
            return DeploymentDecision(
                SKIP,
                f"trained on data up to {end.isoformat()}, older than the champion's "
                f"{champion_end.isoformat()}",
            )
    return DeploymentDecision(DEPLOY, "gate passed on the latest interval")


def _days(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 86400:.1f} days"
