"""A real browser in the real UI: headless Chromium logs into Airflow (`airflow standalone` from the
local-stack launcher, with our plugins/), opens the model view from the nav entry's route and
finds the champion and the last gate decision that the registry in MongoDB holds. It saves a
screenshot to docs/model_view.png for the README.

Chromium and chromedriver come from the Debian packages (`make browser` installs them); without
them this test fails with that instruction, it is never skipped.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pymongo
import pytest
import yaml

import local_stack
from fraud_retraining.config import DEFAULT_CONFIG_PATH, load_use_case
from fraud_retraining.registry import ModelRegistry

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO_ROOT / "docs" / "model_view.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1440,1100",
)
T0 = datetime(2026, 11, 20, tzinfo=UTC)
V1, V2, V3 = "20261120T000000Z-1f0c9a7e", "20261127T000000Z-8b41d2c3", "20261204T000000Z-c7e5f019"


def require_chromium() -> None:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(
            f"the browser test needs headless Chromium, but {' and '.join(missing)} is missing: "
            "run `make browser` (apt-get install chromium chromium-driver)",
            pytrace=False,
        )


def _seed(registry: ModelRegistry, bucket: str) -> None:
    """Three weekly versions: V1 promoted first, V2 passed the gate and replaced it, V3 failed."""
    for index, (version, ap, auc) in enumerate(((V1, 0.612, 0.912), (V2, 0.684, 0.931), (V3, 0.571, 0.905))):
        registry.register(
            version,
            engine="local",
            lineage={
                "dag_id": "fraud_model_retraining",
                "run_id": f"scheduled__{(T0 + timedelta(days=7 * index)).isoformat()}",
                "rows": {"train": 180_000 + 9_000 * index, "valid": 30_000, "test": 30_000},
                "best_estimator": "lgbm",
            },
            metrics={
                "test": {
                    "average_precision": ap,
                    "auc_roc": auc,
                    "card_precision_at_100": round(ap / 2.4, 4),
                    "recall_at_alert_budget": round(ap - 0.08, 4),
                }
            },
            artifact={"bucket": bucket, "prefix": f"models/card-fraud/{version}/", "keys": []},
            registered_at=T0 + timedelta(days=7 * index),
        )
    registry.promote(V1, expected_champion=None, reason="first model: floors hold", actor="gate", at=T0)
    registry.record_gate(
        V2,
        {
            "passed": True,
            "reasons": ["all floors hold and no regression against the champion"],
            "rules": [],
            "challenger_version": V2,
            "champion_version": V1,
            "decided_at": (T0 + timedelta(days=7, hours=1)).isoformat(),
        },
    )
    registry.promote(
        V2, expected_champion=V1, reason="gate passed", actor="gate", at=T0 + timedelta(days=7, hours=2)
    )
    detail = "average_precision 0.5710 vs champion 0.6840 (tolerance 0.0100, so at least 0.6740)"
    registry.record_gate(
        V3,
        {
            "passed": False,
            "reasons": [detail],
            "rules": [
                {
                    "name": "no_regression:average_precision",
                    "passed": False,
                    "observed": 0.571,
                    "threshold": 0.674,
                    "detail": detail,
                }
            ],
            "challenger_version": V3,
            "champion_version": V2,
            "holdout_rows": 30_000,
            "decided_at": (T0 + timedelta(days=14, hours=1)).isoformat(),
        },
    )


@pytest.fixture(scope="module")
def seeded_use_case(
    tmp_path_factory: pytest.TempPathFactory, mongo_client: pymongo.MongoClient
) -> Iterator[SimpleNamespace]:
    """A use-case YAML on its own database, whose registry has a history to show."""
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    raw["mongo"]["database"] = f"ui_{uuid.uuid4().hex[:12]}"
    path = tmp_path_factory.mktemp("use-case") / "use_case.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_use_case(path)
    _seed(ModelRegistry.for_use_case(cfg, mongo_client), cfg.s3.bucket)
    yield SimpleNamespace(path=str(path), cfg=cfg)
    mongo_client.drop_database(cfg.mongo.database)


@pytest.fixture(scope="module")
def airflow_ui(
    tmp_path_factory: pytest.TempPathFactory, mongo_server, s3_server, seeded_use_case: SimpleNamespace
) -> Iterator[SimpleNamespace]:
    require_chromium()  # before a minute of Airflow start-up, not after
    state_dir = tmp_path_factory.mktemp("airflow-ui")
    local_stack._write_state(state_dir, {"mongo": mongo_server, "s3": s3_server})
    with pytest.MonkeyPatch.context() as patch:
        # The API server (and so the plugin) inherits this: it reads the seeded registry.
        patch.setenv("FRAUD_USE_CASE_CONFIG", seeded_use_case.path)
        running = local_stack.up(["airflow"], state_dir, ports={"airflow": local_stack.free_port()})
    home = Path(local_stack.airflow_env(state_dir)["AIRFLOW_HOME"])
    password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
    try:
        yield SimpleNamespace(base=f"http://127.0.0.1:{running['airflow'].port}", password=password)
    finally:
        local_stack.down(state_dir, ["airflow"])


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # The driver is given explicitly: Selenium Manager must not look anything up online.
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_plugin_api_on_the_running_server_needs_an_airflow_login(airflow_ui: SimpleNamespace) -> None:
    with httpx.Client(base_url=airflow_ui.base, timeout=30) as http:
        plugins = http.get("/api/v2/plugins", headers=_bearer(http, airflow_ui.password)).json()
        ours = next(p for p in plugins["plugins"] if p["name"] == "fraud_models")
        assert ours["fastapi_apps"][0]["url_prefix"] == "/fraud-models"
        assert ours["external_views"][0]["url_route"] == "fraud-models"
        links = " ".join(ours["operator_extra_links"])
        assert "fraud_retraining.links.RunReportLink" in links
        assert "fraud_retraining.links.ModelVersionLink" in links

        assert http.get("/fraud-models/api/champion").status_code == 401
        champion = http.get("/fraud-models/api/champion", headers=_bearer(http, airflow_ui.password))
        assert champion.status_code == 200
        assert champion.json()["champion"]["version"] == V2


def _bearer(http: httpx.Client, password: str) -> dict[str, str]:
    token = http.post("/auth/token", json={"username": "admin", "password": password}).json()
    return {"Authorization": f"Bearer {token['access_token']}"}


def test_browser_logs_in_sees_champion_and_last_gate_decision_and_rolls_back(
    airflow_ui: SimpleNamespace,
    browser: Any,
    seeded_use_case: SimpleNamespace,
    mongo_client: pymongo.MongoClient,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 90)
    # Straight to the plugin page: Airflow sends an anonymous browser to its login page first.
    browser.get(f"{airflow_ui.base}/plugin/fraud-models")
    wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys(airflow_ui.password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda driver: "/auth/login" not in driver.current_url)

    # The plugin's nav entry is in the UI's navigation bar, and login brought us back to its page
    # (whose address the UI extends with the embedded page's path, for deep links).
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "a[href$='plugin/fraud-models']")))
    assert "/plugin/fraud-models" in browser.current_url
    frame = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "iframe[title='Fraud models']")))
    browser.switch_to.frame(frame)
    champion = wait.until(ec.visibility_of_element_located((By.ID, "champion-version")))
    assert champion.text == V2
    last_gate = browser.find_element(By.ID, "last-gate-decision")
    assert V3 in last_gate.text
    assert browser.find_element(By.ID, "last-gate-outcome").text == "FAILED"
    assert "0.6740" in last_gate.text  # the rule's numbers, not just the verdict
    history = browser.find_element(By.ID, "history").text
    assert "gate passed" in history and V1 in history
    browser.switch_to.default_content()

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000

    # Roll back with the page's form, as an operator would: a same-origin POST with the session.
    browser.switch_to.frame(frame)
    browser.find_element(By.NAME, "reason").send_keys("browser test: false positives")
    browser.find_element(By.CSS_SELECTOR, "#rollback-form button[type=submit]").click()
    message = wait.until(ec.visibility_of_element_located((By.ID, "message")))
    assert f"Rolled back: {V1} is the champion again" in message.text
    assert browser.find_element(By.ID, "champion-version").text == V1
    registry = ModelRegistry.for_use_case(seeded_use_case.cfg, mongo_client)
    last = registry.history()[-1]
    assert (last["action"], last["version"], last["actor"]) == ("rollback", V1, "admin")
