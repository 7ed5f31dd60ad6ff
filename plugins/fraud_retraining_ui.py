"""Airflow plugin: the fraud model registry inside the Airflow UI, and the task extra links.

A FastAPI app mounted by the API server at /fraud-models shows what the registry in MongoDB
holds: versions with their metrics over time, the champion and which model served when, the
gate decisions, and a rollback. It also streams each run's report from S3 for the "Run report"
extra link. A nav entry (external view) embeds the page in the UI.

Airflow does not authenticate plugin apps (a mounted app inherits none of the core API's
dependencies), so every route here resolves the caller itself with Airflow's own `get_user`: the
JWT in the `Authorization: Bearer` header or the UI's `_token` cookie, validated (signature,
expiry, revocation) by the configured auth manager. Reading needs read access to the retraining
DAG; a rollback needs edit access to its runs, a same-origin request, and names the champion the
user saw, so it can never roll back a model other than the one on screen. When the API server
knows the local scoring endpoint (FRAUD_ENDPOINT_URL / FRAUD_ENDPOINT_ADMIN_TOKEN, as `make up`
sets them), the endpoint switches back to the restored champion too.

Airflow imports every module under plugins/ in the scheduler, workers and DAG processor too,
so this module imports only FastAPI at the top; the API server internals, the Mongo and S3 hooks
are imported when a request needs them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from fraud_retraining.links import MODEL_VIEW_PREFIX, ModelVersionLink, RunReportLink

# Permissions on this DAG stand for permissions on the model it trains.
RETRAINING_DAG_ID = os.environ.get("FRAUD_RETRAINING_DAG_ID", "fraud_model_retraining")
# The local scoring endpoint's admin API, as the endpoint update task finds it (optional here).
ENDPOINT_URL_ENV = "FRAUD_ENDPOINT_URL"
ENDPOINT_TOKEN_ENV = "FRAUD_ENDPOINT_ADMIN_TOKEN"  # noqa: S105 - the variable's name, not a secret
# Reports may embed anything the report task wrote; served from the Airflow origin they must not
# run scripts that could act with the viewer's session, so they get a sandboxed, script-less origin.
REPORT_CSP = "sandbox allow-popups allow-popups-to-escape-sandbox allow-downloads; script-src 'none'"


class LoginRequired(Exception):
    """An HTML route was called without a valid session: send the browser to the login page."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


# ---------------------------------------------------------------- authentication and access


async def current_user(request: Request) -> Any:
    """The Airflow user of this request (bearer header first, then the UI's `_token` cookie)."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    credentials = await bearer_scheme(request)
    return await get_user(request, None, credentials)


def _authorize(user: Any, method: str) -> None:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    allowed = get_auth_manager().is_authorized_dag(
        method=method,  # type: ignore[arg-type]
        access_entity=DagAccessEntity.RUN,
        details=DagDetails(id=RETRAINING_DAG_ID),
        user=user,
    )
    if not allowed:
        action = "read" if method == "GET" else "change"
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"you may not {action} the runs of DAG {RETRAINING_DAG_ID}"
        )


async def api_reader(request: Request) -> Any:
    user = await current_user(request)
    _authorize(user, "GET")
    return user


async def page_reader(request: Request) -> Any:
    """Like api_reader, but a browser without a session is sent to log in and then back here."""
    try:
        return await api_reader(request)
    except HTTPException as err:
        if err.status_code == status.HTTP_401_UNAUTHORIZED:
            raise LoginRequired(str(request.url)) from err
        raise


def _require_same_origin(request: Request) -> None:
    """Refuse a cross-site POST even if a browser attached the cookie (defence beside SameSite=Lax)."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if source is None:
        return  # not a browser form or fetch (e.g. curl with a bearer token): nothing to forge
    from airflow.configuration import conf

    allowed = {request.headers.get("host", ""), urlsplit(conf.get("api", "base_url", fallback="")).netloc}
    if urlsplit(source).netloc not in allowed - {""}:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-origin request refused")


async def model_operator(request: Request) -> Any:
    user = await current_user(request)
    _authorize(user, "PUT")
    _require_same_origin(request)
    return user


def _user_name(user: Any) -> str:
    return str(user.get_name()) if hasattr(user, "get_name") else str(user)


def _may_roll_back(user: Any) -> bool:
    try:
        _authorize(user, "PUT")
    except HTTPException:
        return False
    return True


# ---------------------------------------------------------------- registry and report access

_clients_lock = threading.Lock()
_clients: dict[str, tuple[str, Any]] = {}


def _mongo_client(conn_id: str) -> Any:
    """One MongoClient per connection (it pools); replaced when the connection's URI changes."""
    from airflow.providers.mongo.hooks.mongo import MongoHook

    hook = MongoHook(mongo_conn_id=conn_id)
    with _clients_lock:
        cached = _clients.get(conn_id)
        if cached and cached[0] == hook.uri:
            return cached[1]
        client = hook.get_conn()
        _clients[conn_id] = (hook.uri, client)
    if cached:
        cached[1].close()
    return client


def registry_dep() -> Any:
    from fraud_retraining.config import load_use_case
    from fraud_retraining.registry import ModelRegistry

    cfg = load_use_case()
    return ModelRegistry.for_use_case(cfg, _mongo_client(cfg.mongo.conn_id))


Reader = Annotated[Any, Depends(api_reader)]
PageReader = Annotated[Any, Depends(page_reader)]
Operator = Annotated[Any, Depends(model_operator)]
Registry = Annotated[Any, Depends(registry_dep)]


def _snapshot(registry: Any, limit: int = 200) -> dict[str, Any]:
    from fraud_retraining.ui.model_view import snapshot

    return snapshot(registry, limit=limit)


class RollbackRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=500, description="why; kept in the champion history")
    expected_champion: str | None = Field(
        default=None, description="the champion the caller saw; refused if it changed since"
    )


def _roll_back(registry: Any, user: Any, reason: str, expected_champion: str | None) -> dict[str, Any]:
    """Reinstate the previous champion; 409 with the reason when that is not possible.

    The registry decides (compare-and-set); a local scoring endpoint configured for the API server
    then follows it. An endpoint that cannot follow does not undo the registry change: the answer
    says so, and the next endpoint update (or another try) brings it in line.
    """
    from fraud_retraining.registry import RegistryError
    from fraud_retraining.ui.model_view import jsonable

    reason = reason.strip()
    if not reason:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "a rollback needs a reason")
    current = registry.champion_version()
    if expected_champion is not None and expected_champion != current:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"the champion is now {current}, not {expected_champion}: reload and decide again",
        )
    try:
        # The registry's compare-and-set also refuses if the champion moves between read and write.
        pointer = registry.rollback(reason=reason, actor=_user_name(user))
    except RegistryError as err:
        raise HTTPException(status.HTTP_409_CONFLICT, str(err)) from err
    endpoint = sync_local_endpoint(registry, pointer["version"])
    return jsonable(
        {
            "model_name": registry.model_name,
            "champion": pointer["version"],
            "previous": current,
            "endpoint": endpoint,
        }
    )


def sync_local_endpoint(registry: Any, version: str) -> dict[str, Any] | None:
    """Switch the local scoring endpoint back to `version`, if the API server has one configured.

    None when FRAUD_ENDPOINT_URL / FRAUD_ENDPOINT_ADMIN_TOKEN are unset (e.g. SageMaker: the
    endpoint update task owns blue/green there). The endpoint keeps the model it replaced, so a
    rollback is an instant switch back with no load. If the endpoint no longer holds `version`
    (restarted, or deployed twice since), loading it again needs a smoke test on the run's holdout:
    that is the endpoint update task's job, and the answer says so instead of guessing.
    """
    url = os.environ.get(ENDPOINT_URL_ENV, "")
    token = os.environ.get(ENDPOINT_TOKEN_ENV, "")
    if not url or not token:
        return None
    import httpx

    from fraud_retraining.endpoint_deploy import EndpointDeployError, rollback_local

    try:
        with httpx.Client(base_url=url.rstrip("/"), timeout=30) as http:
            response = http.get("/admin/status", headers={"Authorization": f"Bearer {token}"})
        response.raise_for_status()
        before = response.json()
        if before.get("current_version") == version:
            return {"synced": True, "action": "none", "serving": version}
        if before.get("previous_version") != version:
            raise EndpointDeployError(
                f"the endpoint serves {before.get('current_version')} and holds "
                f"{before.get('previous_version')} as previous, not {version}: "
                f"deploy {version} with the endpoint update task"
            )
        serving = rollback_local(url, token).get("current_version")
        if serving != version:
            raise EndpointDeployError(f"after the switch the endpoint serves {serving}, not {version}")
    except (httpx.HTTPError, EndpointDeployError, ValueError) as err:
        return {"synced": False, "error": f"{type(err).__name__}: {err}"}
    return {"synced": True, "action": "switch_back", "serving": version}


# ---------------------------------------------------------------- the FastAPI app

app = FastAPI(
    title="Fraud model registry",
    description="Model versions, champion history, gate decisions and rollback of the fraud model.",
    # The API server mounts this app; its own docs would be public, so they are off.
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)


@app.exception_handler(LoginRequired)
async def _to_login(request: Request, exc: LoginRequired) -> Response:
    from airflow.api_fastapi.app import get_auth_manager

    return RedirectResponse(get_auth_manager().get_url_login(next_url=exc.next_url), status_code=303)


@app.get("/api/versions")
def api_versions(
    _user: Reader, registry: Registry, limit: Annotated[int, Query(ge=1, le=1000)] = 200
) -> dict[str, Any]:
    """Registered versions, newest first, with test-split metrics and gate outcome."""
    snap = _snapshot(registry, limit)
    return {"model_name": snap["model_name"], "versions": snap["versions"]}


@app.get("/api/versions/{version}")
def api_version(version: str, _user: Reader, registry: Registry) -> dict[str, Any]:
    from fraud_retraining.ui.model_view import version_detail

    detail = version_detail(registry, version)
    if detail is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"version {version} is not registered")
    return detail


@app.get("/api/champion")
def api_champion(_user: Reader, registry: Registry) -> dict[str, Any]:
    """The serving champion (None before the first promotion) and what a rollback would restore."""
    snap = _snapshot(registry, limit=1)
    return {
        "model_name": snap["model_name"],
        "champion": snap["champion"],
        "rollback_target": snap["rollback_target"],
    }


@app.get("/api/history")
def api_history(_user: Reader, registry: Registry) -> dict[str, Any]:
    """Champion changes, newest first, each with the time its version served from and until."""
    snap = _snapshot(registry, limit=1)
    return {"model_name": snap["model_name"], "history": snap["history"]}


@app.get("/api/gate-decisions")
def api_gate_decisions(_user: Reader, registry: Registry) -> dict[str, Any]:
    """Every recorded gate decision, newest first, with each rule's numbers."""
    snap = _snapshot(registry, limit=1000)
    return {"model_name": snap["model_name"], "gate_decisions": snap["gate_decisions"]}


@app.post("/api/rollback")
def api_rollback(body: RollbackRequest, user: Operator, registry: Registry) -> dict[str, Any]:
    return _roll_back(registry, user, body.reason, body.expected_champion)


@app.get("/", response_class=HTMLResponse)
def model_page(
    user: PageReader, registry: Registry, done: Annotated[str | None, Query()] = None
) -> HTMLResponse:
    from fraud_retraining.ui.model_view import render_model_page

    snap = _snapshot(registry)
    champion = (snap["champion"] or {}).get("version")
    # Fixed wording chosen by the server, so a crafted link cannot put text on the page.
    messages = {
        "rollback": f"Rolled back: {champion} is the champion again (registry only: no scoring "
        "endpoint is configured for the UI; the endpoint update task deploys it).",
        "rollback-endpoint": f"Rolled back: {champion} is the champion again and serves on the scoring endpoint.",
    }
    message = messages.get(done or "") if champion else None
    html = render_model_page(snap, user=_user_name(user), can_rollback=_may_roll_back(user), message=message)
    return HTMLResponse(html)


@app.post("/rollback", response_class=HTMLResponse)
def rollback_form(
    user: Operator,
    registry: Registry,
    reason: Annotated[str, Form(max_length=500)],
    expected_champion: Annotated[str, Form()],
) -> Response:
    from fraud_retraining.ui.model_view import render_message_page

    try:
        result = _roll_back(registry, user, reason, expected_champion)
    except HTTPException as err:
        return HTMLResponse(
            render_message_page("Rollback refused", str(err.detail)), status_code=err.status_code
        )
    endpoint = result["endpoint"]
    if endpoint is not None and not endpoint["synced"]:
        message = (
            f"The registry rolled back: {result['champion']} is the champion. The scoring endpoint "
            f"did NOT switch to it ({endpoint['error']}); run the endpoint update or try again."
        )
        return HTMLResponse(render_message_page("Endpoint not switched", message), status_code=502)
    # Post/redirect/get: reloading the page afterwards does not roll back a second time.
    done = "rollback" if endpoint is None else "rollback-endpoint"
    return RedirectResponse(f"./?done={done}", status_code=status.HTTP_303_SEE_OTHER)


@app.get("/versions/{version}", response_class=HTMLResponse)
def version_page(version: str, _user: PageReader, registry: Registry) -> HTMLResponse:
    from fraud_retraining.ui.model_view import render_message_page, render_version_page, version_detail

    detail = version_detail(registry, version)
    if detail is None:
        return HTMLResponse(
            render_message_page("Unknown version", f"Version {version} is not registered.", back="../"),
            status_code=404,
        )
    return HTMLResponse(render_version_page(detail))


def report_key(run_id: str) -> tuple[str, str]:
    """(bucket, key) of a run's report: reports/<safe_run_key(run_id)>/report.html."""
    from fraud_retraining.config import load_use_case
    from fraud_retraining.layout import safe_run_key

    cfg = load_use_case()
    return cfg.s3.bucket, f"{cfg.s3.reports_prefix}/{safe_run_key(run_id)}/report.html"


@app.get("/reports/{run_id}", response_class=HTMLResponse)
def run_report(run_id: str, _user: PageReader) -> Response:
    """The run's report, streamed from S3 in chunks (reports with images can be large)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from botocore.exceptions import ClientError

    from fraud_retraining.config import load_use_case
    from fraud_retraining.ui.model_view import render_message_page

    bucket, key = report_key(run_id)
    s3 = S3Hook(aws_conn_id=load_use_case().s3.conn_id).get_conn()
    try:
        obj = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NoSuchBucket"):
            message = f"No report for run {run_id} yet (expected at s3://{bucket}/{key})."
            return HTMLResponse(render_message_page("No report", message, back="../"), status_code=404)
        raise

    body = obj["Body"]

    def chunks() -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(chunk_size=64 * 1024)
        finally:
            body.close()

    return StreamingResponse(
        chunks(),
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": REPORT_CSP, "X-Content-Type-Options": "nosniff"},
    )


class FraudModelsPlugin(AirflowPlugin):
    """Registers the app, its nav entry and the extra links of the train, gate and deploy tasks."""

    name = "fraud_models"
    fastapi_apps: ClassVar[list[Any]] = [
        {"app": app, "url_prefix": MODEL_VIEW_PREFIX, "name": "Fraud model registry"}
    ]
    # No category: a top-level nav entry. The UI embeds href (relative: no leading slash, so it
    # follows [api] base_url) in an iframe at /plugin/<url_route>.
    external_views: ClassVar[list[Any]] = [
        {
            "name": "Fraud models",
            "href": MODEL_VIEW_PREFIX.strip("/") + "/",
            "destination": "nav",
            "url_route": "fraud-models",
        }
    ]
    operator_extra_links: ClassVar[list[Any]] = [RunReportLink(), ModelVersionLink()]
