"""Training quality on the handbook protocol, printed beside the handbook's published baselines.

Protocol ("Reproducible Machine Learning for Credit Card Fraud Detection", Le Borgne et al.):
simulated transactions from 2018-04-01 (handbook parameters at --scale 1: 5,000 customers,
10,000 terminals, 183 days), 7-day label delay, test week 2018-08-08..2018-08-14 with the cards
already known compromised removed exactly as the handbook's get_train_test_set does (frauds of
its training week 2018-07-25..31 plus those of the delay period up to the day before). The test
set is the handbook's whatever our training window is, so the figures compare like with like.

Ours: features from fraud_retraining.features (the same code the stage task and the scoring
handler use), the local engine (FLAML, --budget seconds on 2 cores), trained on --train-weeks of
data ending 2018-07-24 and selected on the validation week 2018-07-25..31 (the handbook's training
week), i.e. more fresh data than the handbook's single week, which is the point of the product.

Label timing (--fraud-delay): the handbook treats every label of the last 7 days as unknown. By
default each fraud's label arrives uniformly 1 to 7 days after it (all are known once the
handbook's delay has passed, as it assumes), and our features use a label from the moment it is
known: frauds inside the delay already reported, days since a terminal's first/last known fraud.
`--fraud-delay 7,7` withholds every label for exactly 7 days, the handbook's information
exactly; those features then only see what the handbook's see.

    .venv/bin/python bench/bench_training.py --scale 0.2 --budget 30    # quick check
    .venv/bin/python bench/bench_training.py --scale 1 --budget 120     # the issue's target
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from fraud_retraining.config import load_use_case
from fraud_retraining.engines import TrainingSet
from fraud_retraining.engines.local import train_local

START = date(2018, 4, 1)
VALID_START = datetime(2018, 7, 25)  # the handbook's training week: our validation week
TRAIN_END = VALID_START  # our training data ends where validation starts
DELAY_DAYS = 7
TEST_START = VALID_START + timedelta(days=7 + DELAY_DAYS)  # 2018-08-08
TEST_DAYS = 7

# Published on the handbook's split (AUC ROC, average precision, card precision@100).
HANDBOOK = {
    "handbook logistic regression": (0.871, 0.606, 0.291),
    "handbook random forest": (0.867, 0.658, 0.287),
    "handbook XGBoost": (0.862, 0.639, 0.273),
    "handbook best after model selection (XGBoost)": (0.869, 0.687, 0.303),
}
HANDBOOK_SPLIT = {"train": (67_240, 598), "test": (58_264, 385)}
TARGET = {"average_precision": 0.70, "card_precision_at_100": 0.30}


def simulate_handbook(scale: float, seed: int, cfg, fraud_delay: tuple[float, float]) -> pd.DataFrame:
    from fraud_retraining.simulator import SimulationParams, simulate

    params = SimulationParams(
        fraud_delay_days=fraud_delay,
        n_customers=round(5000 * scale),
        n_terminals=round(10000 * scale),
        n_days=183,
        start_date=START,
        seed=seed,
        drift_start_day=None,
    )
    return simulate(params, cfg)


def batch_features(transactions: pd.DataFrame, cfg) -> tuple[pd.DataFrame, list[str]]:
    """The stage task's batch features over all transactions (labels used only once known),
    with the eventual label attached for training and evaluation, as the handbook does."""
    from fraud_retraining.features import FEATURE_COLUMNS, compute_features

    f = cfg.fields
    raw = transactions[[f.id, f.time, f.customer, f.terminal, f.amount]]
    labels = transactions[[f.id, f.label, f.labeled_at]]
    featured = compute_features(raw, labels, cfg)
    featured[f.label] = transactions[f.label].to_numpy()
    return featured, list(FEATURE_COLUMNS)


def handbook_test_set(frame: pd.DataFrame, cfg) -> pd.DataFrame:
    """The handbook's get_train_test_set test part: known-compromised cards removed day by day."""
    f = cfg.fields
    times = frame[f.time].dt.tz_convert(None)
    week = frame[(times >= VALID_START) & (times < VALID_START + timedelta(days=7))]
    known = set(week.loc[week[f.label] == 1, f.customer])
    days = []
    for day in range(TEST_DAYS):
        start = TEST_START + timedelta(days=day)
        delay_day = VALID_START + timedelta(days=7 + day - 1)
        in_delay = frame[(times >= delay_day) & (times < delay_day + timedelta(days=1))]
        known |= set(in_delay.loc[in_delay[f.label] == 1, f.customer])
        today = frame[(times >= start) & (times < start + timedelta(days=1))]
        days.append(today[~today[f.customer].isin(known)])
    return pd.concat(days, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="share of the handbook's customers/terminals"
    )
    parser.add_argument("--budget", type=float, default=120.0, help="AutoML wall-clock budget, seconds")
    parser.add_argument("--train-weeks", type=int, default=8, help="weeks of training data before validation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument(
        "--fraud-delay",
        default="1,7",
        help="min,max days until a fraud's label is known: 1,7 = reported during the handbook's 7-day "
        "delay; 7,7 = the handbook's information exactly; our simulator's default, 1,14, adds "
        "later chargebacks",
    )
    parser.add_argument(
        "--refit-on-valid",
        action="store_true",
        help="refit the selected configuration on train + valid (the freshest week) within the budget",
    )
    args = parser.parse_args(argv)
    fraud_delay = tuple(float(x) for x in args.fraud_delay.split(","))
    cfg = load_use_case()
    f = cfg.fields

    started = time.monotonic()
    transactions = simulate_handbook(args.scale, args.seed, cfg, fraud_delay)
    simulated_s = time.monotonic() - started
    started = time.monotonic()
    featured, feature_names = batch_features(transactions, cfg)
    features_s = time.monotonic() - started

    times = featured[f.time].dt.tz_convert(None)
    train_start = TRAIN_END - timedelta(weeks=args.train_weeks)
    train = featured[(times >= train_start) & (times < TRAIN_END)].reset_index(drop=True)
    valid = featured[(times >= VALID_START) & (times < VALID_START + timedelta(days=7))].reset_index(
        drop=True
    )
    test = handbook_test_set(featured, cfg)
    manifest = {
        "features": feature_names,
        "label": f.label,
        "id": f.id,
        "time": f.time,
        "customer": f.customer,
        "window": {
            "train_start": str(train_start),
            "valid_start": str(VALID_START),
            "test_start": str(TEST_START),
        },
    }
    training_set = TrainingSet(manifest=manifest, train=train, valid=valid, test=test)
    started = time.monotonic()
    result = train_local(
        training_set,
        version="bench",
        time_budget_s=args.budget,
        seed=args.seed,
        n_jobs=args.n_jobs,
        refit_on_valid=args.refit_on_valid,
    )
    train_s = time.monotonic() - started

    print(
        f"simulated {len(transactions):,} transactions in {simulated_s:.1f}s; features in {features_s:.1f}s"
    )
    print(
        f"split      ours: train {len(train):,} ({int(train[f.label].sum())} frauds), valid {len(valid):,} "
        f"({int(valid[f.label].sum())}), test {len(test):,} ({int(test[f.label].sum())})"
    )
    hb_train, hb_test = HANDBOOK_SPLIT["train"], HANDBOOK_SPLIT["test"]
    print(f"split handbook: train {hb_train[0]:,} ({hb_train[1]} frauds), test {hb_test[0]:,} ({hb_test[1]})")
    print(
        f"AutoML: {result.details['trials']} trials, search {result.details['search_seconds']:.1f}s, "
        f"all of train_local {train_s:.1f}s (budget {args.budget:.0f}s, "
        f"{args.n_jobs} threads), chosen {result.best_estimator}"
    )
    test_metrics = result.metrics["test"]
    ours = (test_metrics["auc_roc"], test_metrics["average_precision"], test_metrics["card_precision_at_100"])
    best = HANDBOOK["handbook best after model selection (XGBoost)"]
    print()
    print(f"{'model (test week 2018-08-08..14)':50s} {'AUC ROC':>8s} {'AP':>8s} {'CP@100':>8s}")
    for name, row in HANDBOOK.items():
        print(f"{name:50s} {row[0]:8.3f} {row[1]:8.3f} {row[2]:8.3f}")
    label = (
        f"ours: local FLAML, {args.train_weeks} weeks, {args.budget:.0f}s, labels {args.fraud_delay} d"
        + (" +refit" if args.refit_on_valid else "")
    )
    print(f"{label:50s} {ours[0]:8.3f} {ours[1]:8.3f} {ours[2]:8.3f}")
    ratios = [o / b for o, b in zip(ours, best, strict=True)]
    print(f"{'ratio ours / handbook best':50s} {ratios[0]:8.2f}x {ratios[1]:7.2f}x {ratios[2]:7.2f}x")
    met = ours[1] >= TARGET["average_precision"] and ours[2] >= TARGET["card_precision_at_100"]
    print(f"target AP >= 0.70 and CP@100 >= 0.30: {'met' if met else 'NOT met'} (scale {args.scale})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
