"""Model registry CLI: list versions, show one, current champion, promote, roll back, served-at.

    python include/registry_cli.py list [--limit N]
    python include/registry_cli.py show VERSION
    python include/registry_cli.py champion
    python include/registry_cli.py promote VERSION [--expected-champion V|--no-champion] [--reason TEXT]
    python include/registry_cli.py rollback [--reason TEXT]
    python include/registry_cli.py served-at 2026-12-03[T12:00:00]

MongoDB: --mongo-uri, else $MONGO_URI, else the running local stack (`make up`).
Promotion is compare-and-set: by default against the champion read just before; pass
--expected-champion to refuse if someone else promoted since you looked.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from fraud_retraining.config import load_use_case
from fraud_retraining.registry import ModelRegistry, RegistryError


def _mongo_uri(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("MONGO_URI"):
        return os.environ["MONGO_URI"]
    import local_stack

    return local_stack.stack_env()["MONGO_URI"]


def _parse_when(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    # A bare date means the end of that day: "which model served on D" includes D's promotions.
    if len(text) == 10:
        moment = moment.replace(hour=23, minute=59, second=59, microsecond=999999)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str, sort_keys=True))


def _version_row(doc: dict[str, Any]) -> dict[str, Any]:
    test = (doc.get("metrics") or {}).get("test") or {}
    return {
        "version": doc["version"],
        "engine": doc.get("engine"),
        "registered_at": doc.get("registered_at"),
        "run_id": (doc.get("lineage") or {}).get("run_id"),
        "test_average_precision": test.get("average_precision"),
        "test_card_precision_at_100": test.get("card_precision_at_100"),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mongo-uri", help="MongoDB URI (default $MONGO_URI or the local stack)")
    parser.add_argument("--config", help="use-case YAML (default $FRAUD_USE_CASE_CONFIG or the bundled one)")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="versions, newest first")
    listing.add_argument("--limit", type=int, default=20)
    show = commands.add_parser("show", help="one version with lineage and metrics")
    show.add_argument("version")
    commands.add_parser("champion", help="current champion and its history")
    promote = commands.add_parser("promote", help="make a version champion (compare-and-set)")
    promote.add_argument("version")
    expected = promote.add_mutually_exclusive_group()
    expected.add_argument("--expected-champion", help="refuse unless this is still the champion")
    expected.add_argument("--no-champion", action="store_true", help="refuse unless there is no champion yet")
    promote.add_argument("--reason", default="manual promotion")
    rollback = commands.add_parser("rollback", help="reinstate the previous champion")
    rollback.add_argument("--reason", default="manual rollback")
    served = commands.add_parser("served-at", help="which version was champion at DATE[THH:MM:SS] (UTC)")
    served.add_argument("when")
    return parser


def run(args: argparse.Namespace, registry: ModelRegistry) -> int:
    actor = f"cli:{os.environ.get('USER', 'unknown')}"
    if args.command == "list":
        _print([_version_row(doc) for doc in registry.list_versions(limit=args.limit)])
    elif args.command == "show":
        doc = registry.get(args.version)
        if doc is None:
            print(f"no version {args.version}", file=sys.stderr)
            return 1
        _print(doc)
    elif args.command == "champion":
        _print(registry.champion())
    elif args.command == "promote":
        if args.no_champion:
            expected = None
        elif args.expected_champion:
            expected = args.expected_champion
        else:
            expected = registry.champion_version()
        _print(registry.promote(args.version, expected_champion=expected, reason=args.reason, actor=actor))
    elif args.command == "rollback":
        _print(registry.rollback(reason=args.reason, actor=actor))
    elif args.command == "served-at":
        _print({"at": _parse_when(args.when), "version": registry.served_at(_parse_when(args.when))})
    return 0


def main(argv: list[str] | None = None) -> int:
    import pymongo

    args = build_parser().parse_args(argv)
    cfg = load_use_case(args.config)
    client: pymongo.MongoClient = pymongo.MongoClient(
        _mongo_uri(args.mongo_uri), serverSelectionTimeoutMS=5000
    )
    try:
        return run(args, ModelRegistry.for_use_case(cfg, client))
    except RegistryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        client.close()


if __name__ == "__main__":
    raise SystemExit(main())
