"""Point-in-time features: one definition for the batch stage and for one live transaction.

For a transaction of customer c at terminal k at time t (label delay d):

* amount, is_weekend, is_night (00:00-06:00 UTC, as the handbook);
* customer_tx_count_{w}d, customer_mean_amount_{w}d: the customer's transactions in (t - w, t),
  strictly before t: a transaction never sees itself or anything later;
* terminal_tx_count_{w}d, terminal_fraud_share_{w}d: the terminal's transactions in
  [t - d - w, t - d) (the handbook's delay shift), counting a transaction as fraud only if its
  fraud label was known at t (labeled_at <= t): a label written after t never leaks;
* terminal_known_frauds_in_delay: frauds at the terminal in [t - d, t) whose label was already
  known at t. The handbook treats the whole delay period as unlabelled; in practice many frauds
  are reported within days (a customer calls, a chargeback arrives early), and a freshly
  compromised terminal is visible only through those labels for its first week;
* terminal_days_since_first_known_fraud, terminal_days_since_last_known_fraud: over the
  terminal's frauds in [t - d - 30d, t) known at t, -1 when there is none. How long a terminal
  has been known to be compromised tells whether the compromise is still going on (a terminal
  is fixed some time after its first fraud): fraud shares alone keep flagging a repaired
  terminal for a month.

Vectorised: window counts are two binary searches over (entity, time) keys plus cumulative sums;
known frauds are a join of each transaction with the (rare) frauds of its own terminal.
The live path (`features_for_transaction`) runs the same function on the transaction plus its
history and takes its row, so batch and online cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from fraud_retraining.config import UseCaseConfig

WINDOWS_DAYS = (1, 7, 30)
DAY_NS = 86_400 * 1_000_000_000
FEATURE_COLUMNS = [
    "amount",
    "is_weekend",
    "is_night",
    *[f"customer_tx_count_{w}d" for w in WINDOWS_DAYS],
    *[f"customer_mean_amount_{w}d" for w in WINDOWS_DAYS],
    *[f"terminal_tx_count_{w}d" for w in WINDOWS_DAYS],
    *[f"terminal_fraud_share_{w}d" for w in WINDOWS_DAYS],
    "terminal_known_frauds_in_delay",
    "terminal_days_since_first_known_fraud",
    "terminal_days_since_last_known_fraud",
]
# terminal_days_since_*_known_fraud when the terminal has no known fraud in its lookback.
NO_KNOWN_FRAUD = -1.0


def history_window(cfg: UseCaseConfig) -> timedelta:
    """How far back a transaction's features look (longest window plus the label delay)."""
    return timedelta(days=max(WINDOWS_DAYS) + cfg.label_delay_days)


def _ns(values: pd.Series) -> np.ndarray:
    return pd.to_datetime(values, utc=True).dt.as_unit("ns").astype("int64").to_numpy()


def _window_bounds(
    entity: np.ndarray, times: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by (entity, time): index range of same-entity rows with lo <= time < hi.

    One searchsorted over a composite key (entity rank, time rank). Ranks, not raw nanoseconds:
    entity rank x a nanosecond span overflows int64 (10,000 terminals x 183 days is ~1.6e20),
    which silently corrupted the window counts; entity rank x distinct times stays below
    n_rows**2, far inside int64 for any frame that fits in memory.
    """
    _, ranks = np.unique(entity, return_inverse=True)
    distinct = np.unique(times)
    scale = np.int64(len(distinct) + 1)
    time_rank = np.searchsorted(distinct, times, side="left").astype(np.int64)
    # A row's time rank is >= searchsorted(distinct, x) exactly when its time is >= x.
    lo_rank = np.searchsorted(distinct, lo, side="left").astype(np.int64)
    hi_rank = np.searchsorted(distinct, hi, side="left").astype(np.int64)
    base = ranks.astype(np.int64) * scale
    keys = base + time_rank
    start = np.searchsorted(keys, base + lo_rank, side="left")
    stop = np.searchsorted(keys, base + hi_rank, side="left")
    return start, stop


def compute_features(
    transactions: pd.DataFrame,
    labels: pd.DataFrame,
    cfg: UseCaseConfig,
) -> pd.DataFrame:
    """Features for every row of `transactions` (id, time, customer, terminal, amount).

    `labels` holds label events (id, label, labeled_at) known so far; only frauds matter here.
    Returns the transactions' id/time/customer/terminal columns plus FEATURE_COLUMNS, in the
    input's order.
    """
    f = cfg.fields
    n = len(transactions)
    times = _ns(transactions[f.time])
    amount = transactions[f.amount].to_numpy(dtype=np.float64)
    out = pd.DataFrame(
        {
            f.id: transactions[f.id].to_numpy(),
            f.time: transactions[f.time].to_numpy(),
            f.customer: transactions[f.customer].to_numpy(),
            f.terminal: transactions[f.terminal].to_numpy(),
        }
    )
    stamp = pd.to_datetime(transactions[f.time], utc=True)
    out["amount"] = amount
    out["is_weekend"] = (stamp.dt.weekday >= 5).astype(np.int8).to_numpy()
    out["is_night"] = (stamp.dt.hour < 6).astype(np.int8).to_numpy()

    # Customer windows (t - w, t): strictly before t, so same-instant rows are excluded too.
    customer = transactions[f.customer].to_numpy()
    order = np.lexsort((times, customer))
    c_sorted, t_sorted, a_sorted = customer[order], times[order], amount[order]
    cum_amount = np.concatenate([[0.0], np.cumsum(a_sorted)])
    for w in WINDOWS_DAYS:
        start, stop = _window_bounds(c_sorted, t_sorted, t_sorted - w * DAY_NS + 1, t_sorted)
        count = (stop - start).astype(np.float64)
        total = cum_amount[stop] - cum_amount[start]
        mean = np.divide(total, count, out=np.zeros(n), where=count > 0)
        col_count, col_mean = np.empty(n), np.empty(n)
        col_count[order], col_mean[order] = count, mean
        out[f"customer_tx_count_{w}d"] = col_count
        out[f"customer_mean_amount_{w}d"] = col_mean

    # Terminal windows [t - d - w, t - d).
    terminal = transactions[f.terminal].to_numpy()
    delay = cfg.label_delay_days * DAY_NS
    order = np.lexsort((times, terminal))
    k_sorted, t_sorted = terminal[order], times[order]
    counts = {}
    for w in WINDOWS_DAYS:
        start, stop = _window_bounds(k_sorted, t_sorted, t_sorted - delay - w * DAY_NS, t_sorted - delay)
        col = np.empty(n)
        col[order] = stop - start
        counts[w] = col
        out[f"terminal_tx_count_{w}d"] = col

    known, known_columns = _known_terminal_frauds(transactions, labels, cfg, times, terminal)
    for w in WINDOWS_DAYS:
        out[f"terminal_fraud_share_{w}d"] = np.divide(
            known[w], counts[w], out=np.zeros(n), where=counts[w] > 0
        )
    for name, values in known_columns.items():
        out[name] = values
    return out


def _known_terminal_frauds(
    transactions: pd.DataFrame,
    labels: pd.DataFrame,
    cfg: UseCaseConfig,
    times: np.ndarray,
    terminal: np.ndarray,
) -> tuple[dict[int, np.ndarray], dict[str, np.ndarray]]:
    """Per row, from the frauds at its terminal whose label was known by its time t: the count in
    each [t - d - w, t - d) keyed by w; and the feature columns of the count in [t - d, t) and of
    the days since the first and the last of them within the history window [t - d - 30d, t)."""
    f = cfg.fields
    n = len(transactions)
    per_window = {w: np.zeros(n) for w in WINDOWS_DAYS}
    columns = {
        "terminal_known_frauds_in_delay": np.zeros(n),
        "terminal_days_since_first_known_fraud": np.full(n, NO_KNOWN_FRAUD),
        "terminal_days_since_last_known_fraud": np.full(n, NO_KNOWN_FRAUD),
    }
    result = (per_window, columns)
    if labels is None or len(labels) == 0 or n == 0:
        return result
    frauds = labels.loc[labels[f.label] == 1, [f.id, f.labeled_at]]
    txs = pd.DataFrame({"id": transactions[f.id].to_numpy(), "t": times, "k": terminal})
    frauds = txs.merge(
        pd.DataFrame({"id": frauds[f.id].to_numpy(), "lab": _ns(frauds[f.labeled_at])}), on="id", how="inner"
    )
    if frauds.empty:
        return result
    frauds = frauds.sort_values("lab").drop_duplicates("id", keep="first")
    rows = pd.DataFrame({"row": np.arange(n), "t": times, "k": terminal})
    # Frauds are rare, so pairing each row with its terminal's frauds stays small.
    pairs = rows.merge(frauds[["t", "k", "lab"]].rename(columns={"t": "tf"}), on="k", how="inner")
    delay = cfg.label_delay_days * DAY_NS
    # The live path fetches exactly history_window of history: look no further back than that.
    lookback = pd.Timedelta(history_window(cfg)).value  # nanoseconds
    pairs = pairs[
        (pairs["lab"] <= pairs["t"]) & (pairs["tf"] < pairs["t"]) & (pairs["tf"] >= pairs["t"] - lookback)
    ]
    age = (pairs["t"] - pairs["tf"]).to_numpy()  # > 0
    row = pairs["row"].to_numpy()
    shifted = age - delay  # age past the delay period: (0, w] is inside [t - d - w, t - d)
    for w in WINDOWS_DAYS:
        inside = (shifted > 0) & (shifted <= w * DAY_NS)
        per_window[w] = np.bincount(row[inside], minlength=n).astype(np.float64)
    columns["terminal_known_frauds_in_delay"] = np.bincount(row[shifted <= 0], minlength=n).astype(np.float64)
    if row.size:
        days = age / DAY_NS
        first = np.full(n, -np.inf)
        np.maximum.at(first, row, days)
        last = np.full(n, np.inf)
        np.minimum.at(last, row, days)
        seen = np.isfinite(first)
        columns["terminal_days_since_first_known_fraud"][seen] = first[seen]
        columns["terminal_days_since_last_known_fraud"][seen] = last[seen]
    return result


def features_for_transaction(
    tx: Mapping[str, Any],
    history: pd.DataFrame,
    labels: pd.DataFrame,
    cfg: UseCaseConfig,
) -> dict[str, float]:
    """Features of one new transaction from its recent history, by the batch definition.

    `history`: the customer's and the terminal's transactions within `history_window(cfg)`
    before tx (same columns as the raw zone); `labels`: label events known so far for them.
    """
    f = cfg.fields
    row = pd.DataFrame([{name: tx[name] for name in (f.id, f.time, f.customer, f.terminal, f.amount)}])
    row[f.time] = pd.to_datetime(row[f.time], utc=True)
    frame = pd.concat([history[row.columns], row], ignore_index=True)
    frame[f.time] = pd.to_datetime(frame[f.time], utc=True)
    features = compute_features(frame, labels, cfg)
    last = features.iloc[-1]
    return {name: float(last[name]) for name in FEATURE_COLUMNS}


def feature_matrix(frame: pd.DataFrame, columns: Sequence[str] = FEATURE_COLUMNS) -> np.ndarray:
    return frame[list(columns)].to_numpy(dtype=np.float64)
