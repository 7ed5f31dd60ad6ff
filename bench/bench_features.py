"""Stage features at handbook scale: ours (vectorised binary searches + fraud join) next to the
handbook's own approach (pandas groupby + time-based rolling per customer and per terminal),
the peer run on a share of the customers/terminals and extrapolated linearly.

    python bench/bench_features.py [--scale 1.0] [--peer-share 0.1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

import pandas as pd

from fraud_retraining.config import load_use_case
from fraud_retraining.features import compute_features
from fraud_retraining.simulator import SimulationParams, simulate


def handbook_features(tx: pd.DataFrame, delay_days: int) -> pd.DataFrame:
    """The handbook's feature code shape: per-entity rolling windows via groupby().apply()."""

    def customer(group: pd.DataFrame) -> pd.DataFrame:
        group = group.sort_values("tx_datetime").set_index("tx_datetime")
        for w in (1, 7, 30):
            count = group["amount"].rolling(f"{w}D").count()
            total = group["amount"].rolling(f"{w}D").sum()
            group[f"c_count_{w}"] = count
            group[f"c_mean_{w}"] = total / count
        return group.reset_index()

    def terminal(group: pd.DataFrame) -> pd.DataFrame:
        group = group.sort_values("tx_datetime").set_index("tx_datetime")
        d = f"{delay_days}D"
        n_delay = group["is_fraud"].rolling(d).count()
        f_delay = group["is_fraud"].rolling(d).sum()
        for w in (1, 7, 30):
            n_all = group["is_fraud"].rolling(f"{delay_days + w}D").count()
            f_all = group["is_fraud"].rolling(f"{delay_days + w}D").sum()
            n = n_all - n_delay
            group[f"t_count_{w}"] = n
            group[f"t_risk_{w}"] = ((f_all - f_delay) / n).fillna(0)
        return group.reset_index()

    out = tx.groupby("customer_id", group_keys=False).apply(customer)
    return out.groupby("terminal_id", group_keys=False).apply(terminal)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="share of the handbook's customers/terminals"
    )
    parser.add_argument("--peer-share", type=float, default=0.1, help="share of the data the peer runs on")
    args = parser.parse_args()
    cfg = load_use_case()
    params = SimulationParams(
        n_customers=int(5000 * args.scale),
        n_terminals=int(10000 * args.scale),
        n_days=183,
        start_date="2018-04-01",
    )
    sim = simulate(params, cfg)
    tx = sim[["tx_id", "tx_datetime", "customer_id", "terminal_id", "amount"]]
    labels = sim[["tx_id", "is_fraud", "labeled_at"]]
    started = time.perf_counter()
    ours = compute_features(tx, labels, cfg)
    ours_s = time.perf_counter() - started

    subset = sim[sim["customer_id"] < params.n_customers * args.peer_share]
    started = time.perf_counter()
    handbook_features(
        subset[["tx_datetime", "customer_id", "terminal_id", "amount", "is_fraud"]], cfg.label_delay_days
    )
    peer_s = (time.perf_counter() - started) * len(sim) / max(len(subset), 1)

    print(f"rows: {len(ours):,} ({len(sim):,} simulated, 183 days)")
    print(f"{'contender':42s} {'seconds':>9s} {'rows/s':>12s}")
    print(f"{'ours: compute_features':42s} {ours_s:9.1f} {len(sim) / ours_s:12,.0f}")
    print(f"{'handbook-style groupby/rolling (extrap.)':42s} {peer_s:9.1f} {len(sim) / peer_s:12,.0f}")
    print(
        f"speed-up: {peer_s / ours_s:.1f}x; target: ours < 60 s at full scale -> {'met' if ours_s < 60 else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
