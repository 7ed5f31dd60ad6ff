"""Registry against the real MongoDB wire server: lineage, compare-and-set promotion, history."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from fraud_retraining.registry import (
    ModelRegistry,
    PromotionConflict,
    RegistryError,
    version_for_run,
)

T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def registry(mongo_db) -> ModelRegistry:
    reg = ModelRegistry(mongo_db["model_registry"], "card-fraud")
    reg.ensure_indexes()
    return reg


def _register(reg: ModelRegistry, version: str, ap: float = 0.7, at: datetime = T0) -> None:
    reg.register(
        version,
        engine="local",
        lineage={"dag_id": "fraud_model_retraining", "run_id": f"run-{version}", "rows": {"train": 100}},
        metrics={"test": {"average_precision": ap}},
        artifact={"bucket": "b", "prefix": f"models/card-fraud/{version}/", "keys": []},
        registered_at=at,
    )


def test_version_for_run_is_stable_and_distinct() -> None:
    when = datetime(2026, 12, 3, tzinfo=UTC)
    first = version_for_run("dag", "scheduled__2026-12-03", when)
    assert first == version_for_run("dag", "scheduled__2026-12-03", when)
    assert first != version_for_run("dag", "manual__2026-12-03", when)
    assert first.startswith("20261203T000000Z-")


def test_register_is_idempotent_and_lists_newest_first(registry: ModelRegistry) -> None:
    _register(registry, "v1", at=T0)
    _register(registry, "v2", at=T0 + timedelta(days=1))
    _register(registry, "v1", ap=0.8, at=T0 + timedelta(days=5))  # a retry re-registers
    versions = registry.list_versions()
    assert [v["version"] for v in versions] == ["v2", "v1"]
    v1 = registry.get("v1")
    assert v1["metrics"]["test"]["average_precision"] == 0.8
    assert v1["lineage"]["run_id"] == "run-v1"
    # The first registration time is kept across retries.
    assert v1["registered_at"].replace(tzinfo=UTC) == T0


def test_promote_requires_registered_version_and_expected_champion(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="not registered"):
        registry.promote("nope", expected_champion=None)
    _register(registry, "v1")
    _register(registry, "v2")
    registry.promote("v1", expected_champion=None, at=T0)
    assert registry.champion_version() == "v1"
    with pytest.raises(PromotionConflict):
        registry.promote("v2", expected_champion=None)
    with pytest.raises(PromotionConflict):
        registry.promote("v2", expected_champion="v9")
    assert registry.champion_version() == "v1"
    registry.promote("v2", expected_champion="v1", at=T0 + timedelta(days=1))
    assert registry.champion()["generation"] == 2


def test_a_version_that_served_is_immutable(registry: ModelRegistry) -> None:
    _register(registry, "v1")
    registry.promote("v1", expected_champion=None)
    with pytest.raises(RegistryError, match="served as champion"):
        _register(registry, "v1")


@pytest.mark.parametrize("start_with_champion", [False, True])
def test_concurrent_promotions_exactly_one_wins(registry: ModelRegistry, start_with_champion: bool) -> None:
    for version in ("v0", "a", "b"):
        _register(registry, version)
    expected = None
    if start_with_champion:
        registry.promote("v0", expected_champion=None)
        expected = "v0"
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def promote(version: str) -> None:
        # Each thread has its own registry object, as two Airflow workers would.
        mine = ModelRegistry(registry.collection, registry.model_name)
        barrier.wait()
        try:
            mine.promote(version, expected_champion=expected)
            outcomes[version] = "won"
        except PromotionConflict:
            outcomes[version] = "lost"

    threads = [threading.Thread(target=promote, args=(v,)) for v in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes.values()) == ["lost", "won"]
    winner = next(v for v, outcome in outcomes.items() if outcome == "won")
    assert registry.champion_version() == winner
    history = registry.history()
    assert [e["version"] for e in history] == ([expected] if expected else []) + [winner]


def test_history_answers_served_at_and_rollback_walks_back(registry: ModelRegistry) -> None:
    for version in ("v1", "v2", "v3"):
        _register(registry, version)
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback()
    registry.promote("v1", expected_champion=None, at=T0)
    registry.promote("v2", expected_champion="v1", at=T0 + timedelta(days=2))
    registry.promote("v3", expected_champion="v2", at=T0 + timedelta(days=4))

    assert registry.served_at(T0 - timedelta(seconds=1)) is None
    assert registry.served_at(T0 + timedelta(days=1)) == "v1"
    assert registry.served_at(T0 + timedelta(days=2)) == "v2"
    assert registry.served_at(T0 + timedelta(days=30)) == "v3"

    registry.rollback(reason="v3 alerts too much", at=T0 + timedelta(days=5))
    assert registry.champion_version() == "v2"
    assert registry.history()[-1]["action"] == "rollback"
    assert registry.history()[-1]["previous"] == "v3"
    # A second rollback keeps walking back instead of toggling to v3.
    registry.rollback(at=T0 + timedelta(days=6))
    assert registry.champion_version() == "v1"
    assert registry.served_at(T0 + timedelta(days=5, hours=12)) == "v2"
    assert registry.champion_stack() == ["v1"]
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback()


def test_cli_promote_rollback_and_served_at(mongo_db, mongo_uri, use_case_config_file, capsys) -> None:
    import json

    import registry_cli

    from fraud_retraining.config import load_use_case

    config = use_case_config_file(database=mongo_db.name)
    cfg = load_use_case(config)
    registry = ModelRegistry(mongo_db[cfg.mongo.registry_collection], cfg.model_name)
    _register(registry, "v1")
    _register(registry, "v2", at=T0 + timedelta(days=1))

    def cli(*args: str) -> tuple[int, str]:
        code = registry_cli.main(["--mongo-uri", mongo_uri, "--config", str(config), *args])
        return code, capsys.readouterr().out

    code, out = cli("list")
    assert code == 0 and [row["version"] for row in json.loads(out)] == ["v2", "v1"]
    assert cli("promote", "v1", "--no-champion")[0] == 0
    assert cli("promote", "v2", "--expected-champion", "v9")[0] == 2  # compare-and-set refused
    assert cli("promote", "v2")[0] == 0
    code, out = cli("champion")
    assert json.loads(out)["version"] == "v2"
    assert cli("rollback")[0] == 0
    assert registry.champion_version() == "v1"
    today = datetime.now(UTC).date().isoformat()
    code, out = cli("served-at", today)
    assert json.loads(out)["version"] == "v1"
    code, out = cli("served-at", "2000-01-01")
    assert json.loads(out)["version"] is None
    assert cli("show", "nope")[0] == 1


def test_gate_decision_is_recorded_on_the_version(mongo_db) -> None:
    registry = ModelRegistry(mongo_db["model_registry"], "card-fraud")
    _register(registry, "v1")
    registry.record_gate("v1", {"passed": False, "reasons": ["average_precision 0.2 vs floor 0.3"]})
    assert registry.get("v1")["gate"]["reasons"] == ["average_precision 0.2 vs floor 0.3"]
    with pytest.raises(RegistryError, match="not registered"):
        registry.record_gate("v404", {"passed": True})
