"""Card-transaction simulator after the "Reproducible Machine Learning for Credit Card Fraud
Detection" handbook (Le Borgne et al.), vectorised with numpy, plus what operations see:
late labels and a fraud tactic that appears mid-stream (drift, scenario 4).

Pure numpy/pandas: no MongoDB here (see fraud_retraining.seeding).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd

from fraud_retraining.config import UseCaseConfig

SECONDS_PER_DAY = 86_400
GENUINE, SCEN_AMOUNT, SCEN_TERMINAL, SCEN_CUSTOMER, SCEN_DRIFT = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class SimulationParams:
    """Knobs of one simulated stretch; the defaults are the handbook's protocol."""

    n_customers: int
    n_terminals: int
    n_days: int
    start_date: date | datetime | str
    seed: int = 0
    radius: float = 5.0
    fraud_delay_days: tuple[float, float] = (1.0, 14.0)
    # Genuine transactions are confirmed after cfg.label_delay_days unless this overrides it.
    genuine_delay_days: float | None = None
    # Handbook scenario 1/2/3 parameters.
    amount_threshold: float = 220.0
    compromised_terminals_per_day: int = 2
    terminal_compromise_days: int = 28
    compromised_customers_per_day: int = 3
    customer_compromise_days: int = 14
    # Drift (scenario 4): from drift_start_day, on a set of terminals, small amounts at night are fraud.
    drift_start_day: int | None = None
    drift_terminal_share: float = 0.05
    drift_max_amount: float = 25.0
    drift_night_start_hour: int = 22
    drift_night_end_hour: int = 6
    drift_fraud_probability: float = 1.0


@dataclass(frozen=True)
class Profiles:
    """Customer and terminal profiles, and each customer's terminals within the radius (CSR)."""

    customer_xy: np.ndarray
    mean_amount: np.ndarray
    std_amount: np.ndarray
    mean_tx_per_day: np.ndarray
    terminal_xy: np.ndarray
    terminal_offsets: np.ndarray  # customer c uses terminal_index[offsets[c]:offsets[c+1]]
    terminal_index: np.ndarray

    @property
    def terminal_counts(self) -> np.ndarray:
        return np.diff(self.terminal_offsets)


def start_timestamp(start: date | datetime | str) -> pd.Timestamp:
    """Midnight UTC of the first simulated day."""
    ts = pd.Timestamp(start)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.normalize()


def build_profiles(params: SimulationParams, rng: np.random.Generator) -> Profiles:
    """Handbook profiles: locations U(0,100)^2, mean amount U(5,100), std mean/2, tx/day U(0,4)."""
    nc, nt = params.n_customers, params.n_terminals
    customer_xy = rng.uniform(0, 100, size=(nc, 2))
    mean_amount = rng.uniform(5, 100, size=nc)
    std_amount = mean_amount / 2
    mean_tx_per_day = rng.uniform(0, 4, size=nc)
    terminal_xy = rng.uniform(0, 100, size=(nt, 2))
    # Distances in customer chunks: a full 5000x10000 matrix would be 400 MB.
    chunks, counts = [], []
    step = max(1, 4_000_000 // max(nt, 1))
    r2 = params.radius**2
    for lo in range(0, nc, step):
        diff = customer_xy[lo : lo + step, None, :] - terminal_xy[None, :, :]
        near = (diff**2).sum(axis=2) < r2
        rows, cols = np.nonzero(near)
        chunks.append(cols)
        counts.append(np.bincount(rows, minlength=near.shape[0]))
    terminal_index = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)
    count_arr = np.concatenate(counts) if counts else np.empty(0, dtype=np.int64)
    offsets = np.zeros(nc + 1, dtype=np.int64)
    np.cumsum(count_arr, out=offsets[1:])
    return Profiles(
        customer_xy,
        mean_amount,
        std_amount,
        mean_tx_per_day,
        terminal_xy,
        offsets,
        terminal_index.astype(np.int64),
    )


def _draw_amounts(rng: np.random.Generator, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    amount = rng.normal(mean, std)
    negative = amount < 0
    # The handbook redraws negative amounts uniformly in (0, 2*mean).
    amount[negative] = rng.uniform(0, 2 * mean[negative])
    return np.round(amount, 2)


def _window_matrix(n_entities: int, n_days: int, events: np.ndarray, length: int) -> np.ndarray:
    """Boolean [entity, day]: inside a window [event_day, event_day + length) of some event.

    `events` is an int array of shape (n_days, k): the entities hit on each day.
    """
    marks = np.zeros((n_entities, n_days + length + 1), dtype=np.int32)
    days = np.repeat(np.arange(n_days), events.shape[1])
    np.add.at(marks, (events.ravel(), days), 1)
    np.add.at(marks, (events.ravel(), days + length), -1)
    return np.cumsum(marks, axis=1)[:, :n_days] > 0


def simulate(params: SimulationParams, cfg: UseCaseConfig) -> pd.DataFrame:
    """One row per transaction, sorted by time, columns named by cfg.fields (see module doc)."""
    rng = np.random.default_rng(params.seed)
    profiles = build_profiles(params, rng)
    nc, nd = params.n_customers, params.n_days

    # Per customer and day a Poisson count; customers without terminals in range never transact.
    counts = rng.poisson(np.repeat(profiles.mean_tx_per_day, nd).reshape(nc, nd))
    counts[profiles.terminal_counts == 0, :] = 0
    flat = counts.ravel()
    customer = np.repeat(np.repeat(np.arange(nc), nd), flat)
    day = np.repeat(np.tile(np.arange(nd), nc), flat)
    seconds = rng.normal(SECONDS_PER_DAY / 2, 20_000, size=customer.size).astype(np.int64)
    # As the handbook: a time of day outside the day drops the transaction (hence ~1.75 M, not 1.83 M).
    inside = (seconds > 0) & (seconds < SECONDS_PER_DAY)
    customer, day, seconds = customer[inside], day[inside], seconds[inside]
    n = customer.size

    amount = _draw_amounts(rng, profiles.mean_amount[customer], profiles.std_amount[customer])
    pick = np.floor(rng.random(n) * profiles.terminal_counts[customer]).astype(np.int64)
    terminal = profiles.terminal_index[profiles.terminal_offsets[customer] + pick]

    scenario = np.zeros(n, dtype=np.int8)
    # Scenario 1: any amount above the threshold.
    scenario[amount > params.amount_threshold] = SCEN_AMOUNT
    # Scenario 2: terminals compromised each day; all their transactions for the next 28 days.
    if params.n_terminals and params.compromised_terminals_per_day:
        k = min(params.compromised_terminals_per_day, params.n_terminals)
        hit = np.stack([rng.choice(params.n_terminals, k, replace=False) for _ in range(nd)])
        compromised = _window_matrix(params.n_terminals, nd, hit, params.terminal_compromise_days)
        scenario[compromised[terminal, day]] = SCEN_TERMINAL
    # Scenario 3: customers compromised each day; 1/3 of their next 14 days' transactions, amount x5.
    # Rows are grouped by customer then day here, so each window is a contiguous slice.
    if nc and params.compromised_customers_per_day:
        k = min(params.compromised_customers_per_day, nc)
        row_start = np.zeros(nc + 1, dtype=np.int64)
        np.cumsum(np.bincount(customer, minlength=nc), out=row_start[1:])
        for d in range(nd):
            for c in rng.choice(nc, k, replace=False):
                lo, hi = row_start[c], row_start[c + 1]
                days_c = day[lo:hi]
                a = lo + np.searchsorted(days_c, d, side="left")
                b = lo + np.searchsorted(days_c, d + params.customer_compromise_days, side="left")
                if b - a < 3:
                    continue
                chosen = a + rng.choice(b - a, (b - a) // 3, replace=False)
                amount[chosen] = np.round(amount[chosen] * 5, 2)
                scenario[chosen] = SCEN_CUSTOMER
    # Scenario 4 (drift): a new tactic, small amounts at night on a set of merchants.
    if params.drift_start_day is not None and params.n_terminals:
        n_drift = max(1, round(params.n_terminals * params.drift_terminal_share))
        drift_terminals = np.zeros(params.n_terminals, dtype=bool)
        # Its own random stream, so switching drift on leaves everything else unchanged.
        drift_rng = np.random.default_rng([params.seed, SCEN_DRIFT])
        drift_terminals[drift_rng.choice(params.n_terminals, n_drift, replace=False)] = True
        hour = seconds // 3600
        night = (hour >= params.drift_night_start_hour) | (hour < params.drift_night_end_hour)
        target = (
            (day >= params.drift_start_day)
            & drift_terminals[terminal]
            & night
            & (amount <= params.drift_max_amount)
            & (scenario == GENUINE)
        )
        target &= drift_rng.random(n) < params.drift_fraud_probability
        scenario[target] = SCEN_DRIFT

    label = (scenario > 0).astype(np.int8)
    seconds_total = day * SECONDS_PER_DAY + seconds
    genuine_delay = cfg.label_delay_days if params.genuine_delay_days is None else params.genuine_delay_days
    lo_d, hi_d = params.fraud_delay_days
    delay_s = np.where(
        label == 1,
        rng.uniform(lo_d, hi_d, size=n) * SECONDS_PER_DAY,  # drawn for all rows: stable streams
        genuine_delay * SECONDS_PER_DAY,
    ).astype(np.int64)

    order = np.argsort(seconds_total, kind="stable")
    start_ms = start_timestamp(params.start_date).value // 1_000_000
    time_ms = start_ms + seconds_total[order] * 1000
    labeled_ms = time_ms + delay_s[order] * 1000
    f = cfg.fields
    prefix = f"tx-{params.seed}-{start_timestamp(params.start_date):%Y%m%d}-{nd}-"
    ids = pd.Series(np.arange(n)).astype(str).str.zfill(8)
    frame = pd.DataFrame(
        {
            f.id: (prefix + ids).astype(object),
            f.time: pd.to_datetime(time_ms, unit="ms", utc=True).astype("datetime64[ms, UTC]"),
            f.customer: customer[order].astype(np.int64),
            f.terminal: terminal[order].astype(np.int64),
            f.amount: amount[order].astype(np.float64),
            f.label: label[order],
            f.labeled_at: pd.to_datetime(labeled_ms, unit="ms", utc=True).astype("datetime64[ms, UTC]"),
            (f.scenario or "fraud_scenario"): scenario[order],
        }
    )
    return frame


def simulate_live_batch(
    profiles: Profiles,
    params: SimulationParams,
    cfg: UseCaseConfig,
    n: int,
    now: datetime,
    rng: np.random.Generator,
    id_prefix: str,
    compromised_terminals: np.ndarray | None = None,
) -> pd.DataFrame:
    """`n` transactions at `now` (live traffic) from the same profiles; scenarios 1 and 2 apply."""
    active = np.flatnonzero(profiles.terminal_counts > 0)
    weights = profiles.mean_tx_per_day[active]
    customer = rng.choice(active, n, p=weights / weights.sum())
    amount = _draw_amounts(rng, profiles.mean_amount[customer], profiles.std_amount[customer])
    pick = np.floor(rng.random(n) * profiles.terminal_counts[customer]).astype(np.int64)
    terminal = profiles.terminal_index[profiles.terminal_offsets[customer] + pick]
    scenario = np.where(amount > params.amount_threshold, SCEN_AMOUNT, GENUINE).astype(np.int8)
    if compromised_terminals is not None and compromised_terminals.size:
        scenario[np.isin(terminal, compromised_terminals)] = SCEN_TERMINAL
    label = (scenario > 0).astype(np.int8)
    genuine_delay = cfg.label_delay_days if params.genuine_delay_days is None else params.genuine_delay_days
    delay = np.where(label == 1, rng.uniform(*params.fraud_delay_days, size=n), genuine_delay)
    now_ts = pd.Timestamp(now).tz_convert("UTC") if pd.Timestamp(now).tzinfo else pd.Timestamp(now, tz="UTC")
    times = pd.DatetimeIndex([now_ts] * n).astype("datetime64[ms, UTC]")
    labeled = times + pd.to_timedelta(np.round(delay * SECONDS_PER_DAY * 1000).astype(np.int64), unit="ms")
    f = cfg.fields
    return pd.DataFrame(
        {
            f.id: [f"{id_prefix}{i:06d}" for i in range(n)],
            f.time: times,
            f.customer: customer.astype(np.int64),
            f.terminal: terminal.astype(np.int64),
            f.amount: amount,
            f.label: label,
            f.labeled_at: labeled.astype("datetime64[ms, UTC]"),
            (f.scenario or "fraud_scenario"): scenario,
        }
    )


def end_timestamp(params: SimulationParams) -> pd.Timestamp:
    """First instant after the simulated stretch."""
    return start_timestamp(params.start_date) + timedelta(days=params.n_days)
