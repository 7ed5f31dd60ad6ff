"""The simulator against the handbook's published parameters, at small scale."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from fraud_retraining.config import load_use_case
from fraud_retraining.simulator import (
    SCEN_CUSTOMER,
    SCEN_DRIFT,
    SCEN_TERMINAL,
    SimulationParams,
    build_profiles,
    simulate,
)

CFG = load_use_case()
F = CFG.fields


def _params(**overrides) -> SimulationParams:
    base = {
        "n_customers": 200,
        "n_terminals": 400,
        "n_days": 30,
        "start_date": date(2018, 4, 1),
        "seed": 3,
    }
    return SimulationParams(**{**base, **overrides})


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    return simulate(_params(), CFG)


def test_columns_and_dtypes_follow_config(small: pd.DataFrame) -> None:
    assert list(small.columns) == [
        F.id,
        F.time,
        F.customer,
        F.terminal,
        F.amount,
        F.label,
        F.labeled_at,
        F.scenario,
    ]
    assert str(small[F.time].dtype) == "datetime64[ms, UTC]"
    assert str(small[F.labeled_at].dtype) == "datetime64[ms, UTC]"
    assert small[F.customer].dtype == np.int64
    assert small[F.terminal].dtype == np.int64
    assert small[F.amount].dtype == np.float64
    assert small[F.label].dtype == np.int8
    assert small[F.scenario].dtype == np.int8
    assert small[F.time].is_monotonic_increasing
    assert small[F.id].is_unique
    assert (np.round(small[F.amount], 2) == small[F.amount]).all()
    assert (small[F.amount] >= 0).all()


def test_deterministic_for_a_seed(small: pd.DataFrame) -> None:
    again = simulate(_params(), CFG)
    pd.testing.assert_frame_equal(small, again)
    other = simulate(_params(seed=4), CFG)
    assert not set(other[F.id]) & set(small[F.id])


def test_stays_within_the_requested_days(small: pd.DataFrame) -> None:
    start = pd.Timestamp("2018-04-01", tz="UTC")
    assert small[F.time].min() >= start
    assert small[F.time].max() < start + pd.Timedelta(days=30)


def test_customers_use_only_terminals_within_radius() -> None:
    params = _params()
    profiles = build_profiles(params, np.random.default_rng(params.seed))
    frame = simulate(params, CFG)
    cust = profiles.customer_xy[frame[F.customer].to_numpy()]
    term = profiles.terminal_xy[frame[F.terminal].to_numpy()]
    assert (np.sqrt(((cust - term) ** 2).sum(axis=1)) < params.radius).all()
    # About pi * r^2 / 100^2 of the terminals are in range (edge effects lower it).
    mean_available = profiles.terminal_counts.mean()
    assert 0.5 * 400 * np.pi * 25 / 1e4 < mean_available < 1.05 * 400 * np.pi * 25 / 1e4


def test_volume_and_time_of_day_match_the_profiles() -> None:
    params = _params(n_customers=500, n_terminals=1000, n_days=60)
    profiles = build_profiles(params, np.random.default_rng(params.seed))
    frame = simulate(params, CFG)
    active = profiles.terminal_counts > 0
    # Poisson(mean) a day, minus the ~3.1% whose N(43200, 20000) time falls outside the day.
    expected = profiles.mean_tx_per_day[active].sum() * 60 * 0.9692
    assert abs(len(frame) / expected - 1) < 0.02
    seconds = (frame[F.time] - frame[F.time].dt.normalize()).dt.total_seconds()
    assert abs(seconds.mean() - 43_200) < 300
    # N(43200, 20000) truncated at +-2.16 sd has sd 20000 * 0.91 = 18,190.
    assert 17_700 < seconds.std() < 18_700


def test_handbook_scale_volume_and_fraud_share() -> None:
    # One fifth of the handbook's customers and terminals: volume scales, the per-day compromise
    # counts do not, so the fraud share is compared with the scaled expectation below.
    frame = simulate(_params(n_customers=1000, n_terminals=2000, n_days=183, seed=0), CFG)
    assert abs(len(frame) / (1_754_155 * 0.2) - 1) < 0.05
    assert 0.02 < frame[F.label].mean() < 0.06
    counts = frame[F.scenario].value_counts()
    assert set(counts.index) == {0, 1, 2, 3}


def test_amounts_follow_customer_profiles() -> None:
    params = _params(compromised_customers_per_day=0, compromised_terminals_per_day=0)
    profiles = build_profiles(params, np.random.default_rng(params.seed))
    frame = simulate(params, CFG)
    by_customer = frame.groupby(F.customer)[F.amount].agg(["mean", "size"])
    by_customer = by_customer[by_customer["size"] >= 50]
    expected = profiles.mean_amount[by_customer.index.to_numpy()]
    # N(mean, mean/2) with negatives redrawn in (0, 2 mean): the sample mean sits near the profile.
    assert np.median(np.abs(by_customer["mean"].to_numpy() / expected - 1)) < 0.1


def test_scenario_one_is_every_amount_over_220(small: pd.DataFrame) -> None:
    assert (small.loc[small[F.amount] > 220, F.label] == 1).all()


def test_scenario_two_makes_a_terminal_fraudulent_for_28_days(small: pd.DataFrame) -> None:
    s2 = small[small[F.scenario] == SCEN_TERMINAL]
    assert len(s2) > 0
    first = s2.sort_values(F.time).iloc[0]
    day0 = first[F.time].normalize()
    same = small[
        (small[F.terminal] == first[F.terminal])
        & (small[F.time] >= day0)
        & (small[F.time] < day0 + pd.Timedelta(days=28))
    ]
    assert (same[F.label] == 1).all()


def test_scenario_three_multiplies_a_third_of_amounts_by_five() -> None:
    params = _params(compromised_terminals_per_day=0)
    plain = simulate(params, CFG)
    s3 = plain[plain[F.scenario] == SCEN_CUSTOMER]
    assert len(s3) > 0
    # Their amounts are 5x a profile draw: far above the customer's usual spend.
    usual = plain[plain[F.label] == 0].groupby(F.customer)[F.amount].mean()
    ratio = s3[F.amount].to_numpy() / usual.reindex(s3[F.customer]).to_numpy()
    assert np.nanmedian(ratio) > 3


def test_late_labels(small: pd.DataFrame) -> None:
    delay_days = (small[F.labeled_at] - small[F.time]).dt.total_seconds() / 86_400
    fraud = small[F.label] == 1
    assert delay_days[fraud].between(1, 14).all()
    assert delay_days[fraud].std() > 2  # spread, not a constant
    assert (delay_days[~fraud] == CFG.label_delay_days).all()


def test_drift_adds_the_new_tactic_only_from_its_day() -> None:
    params = _params(n_days=40, drift_start_day=20)
    drifted = simulate(params, CFG)
    baseline = simulate(_params(n_days=40), CFG)
    s4 = drifted[drifted[F.scenario] == SCEN_DRIFT]
    assert len(s4) > 0
    start = pd.Timestamp("2018-04-01", tz="UTC")
    assert (s4[F.time] >= start + pd.Timedelta(days=20)).all()
    hours = s4[F.time].dt.hour
    assert ((hours >= 22) | (hours < 6)).all()
    assert (s4[F.amount] <= params.drift_max_amount).all()
    # Before the drift day the two runs are the same data.
    before = drifted[F.time] < start + pd.Timedelta(days=20)
    pd.testing.assert_frame_equal(
        drifted[before].reset_index(drop=True),
        baseline[baseline[F.time] < start + pd.Timedelta(days=20)].reset_index(drop=True),
    )
    after = ~before
    assert (
        drifted.loc[after, F.label].mean()
        > baseline.loc[baseline[F.time] >= start + pd.Timedelta(days=20), F.label].mean()
    )
