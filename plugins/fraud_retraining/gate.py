"""The evaluation gate: does the challenger replace the champion?

An absolute floor on every gated metric plus a no-regression check of the primary metric against
the champion, both measured on the same holdout (the Vertex AI MLOps pattern). With no champion
yet, the floors alone decide. A model trained on too few frauds is refused outright: its
metrics are noise. A failed gate is a normal outcome, recorded with every rule and its numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_FLOORS = {"auc_roc": 0.75, "average_precision": 0.30}


@dataclass(frozen=True)
class GatePolicy:
    floors: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_FLOORS))
    primary_metric: str = "average_precision"
    # How much worse than the champion the challenger may be on the primary metric (absolute).
    tolerance: float = 0.01
    min_train_frauds: int = 50

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> GatePolicy:
        """Build from DAG Params: floors as a mapping, the rest as scalars; missing keys default."""
        defaults = cls()
        return cls(
            floors=dict(params.get("floors") or defaults.floors),
            primary_metric=str(params.get("primary_metric") or defaults.primary_metric),
            tolerance=float(params.get("tolerance", defaults.tolerance)),
            min_train_frauds=int(params.get("min_train_frauds", defaults.min_train_frauds)),
        )


@dataclass(frozen=True)
class GateRule:
    name: str
    passed: bool
    observed: float | None
    threshold: float | None
    detail: str


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    rules: list[GateRule]
    challenger: Mapping[str, Any]
    champion: Mapping[str, Any] | None

    @property
    def reasons(self) -> list[str]:
        """One line per rule that failed (or a single line saying why it passed)."""
        failed = [rule.detail for rule in self.rules if not rule.passed]
        if failed:
            return failed
        return [
            "all floors hold"
            + (" and no regression against the champion" if self.champion else " (no champion yet)")
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reasons": self.reasons,
            "rules": [asdict(rule) for rule in self.rules],
            "challenger": dict(self.challenger),
            "champion": dict(self.champion) if self.champion is not None else None,
        }


def _number(metrics: Mapping[str, Any] | None, name: str) -> float | None:
    if metrics is None:
        return None
    value = metrics.get(name)
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def decide(
    challenger: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    *,
    train_frauds: int,
    policy: GatePolicy | None = None,
) -> GateDecision:
    """Apply the policy to holdout metrics of the challenger and (if any) the champion."""
    policy = policy or GatePolicy()
    rules = [
        GateRule(
            "min_train_frauds",
            train_frauds >= policy.min_train_frauds,
            float(train_frauds),
            float(policy.min_train_frauds),
            f"trained on {train_frauds} frauds; at least {policy.min_train_frauds} required",
        )
    ]
    for metric, floor in sorted(policy.floors.items()):
        observed = _number(challenger, metric)
        ok = observed is not None and observed >= floor
        shown = "undefined" if observed is None else f"{observed:.4f}"
        rules.append(
            GateRule(f"floor:{metric}", ok, observed, float(floor), f"{metric} {shown} vs floor {floor:.4f}")
        )
    if champion is not None:
        mine = _number(challenger, policy.primary_metric)
        theirs = _number(champion, policy.primary_metric)
        if theirs is None:
            ok, detail = (
                True,
                f"champion's {policy.primary_metric} is undefined on this holdout; floors decide",
            )
            threshold = None
        else:
            threshold = theirs - policy.tolerance
            ok = mine is not None and mine >= threshold
            shown = "undefined" if mine is None else f"{mine:.4f}"
            detail = (
                f"{policy.primary_metric} {shown} vs champion {theirs:.4f} "
                f"(tolerance {policy.tolerance:.4f}, so at least {threshold:.4f})"
            )
        rules.append(GateRule(f"no_regression:{policy.primary_metric}", ok, mine, threshold, detail))
    return GateDecision(all(rule.passed for rule in rules), rules, dict(challenger), champion)
