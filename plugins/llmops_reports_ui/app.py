"""The FastAPI app of the Compliance reports page, mounted by Airflow's API server at ``/llmops``.

Routes (all but the icons need an authenticated Airflow user allowed to view the UI):

- ``GET /llmops/``: the reports list, an HTML page meant for the Airflow UI's iframe;
- ``GET /llmops/api/reports``: the same list as JSON (``?pipeline=`` filters);
- ``GET /llmops/reports/{pipeline}/{report_id}``: one audit report's HTML, as the pipeline wrote it;
- ``GET /llmops/reports/{pipeline}/{report_id}/audit_report.json``: its JSON;
- ``GET /llmops/static/icon.svg`` (and ``icon-dark.svg``): the navigation icon, public like the UI's.

Authentication is the API server's own: ``requires_access_view(AccessView.WEBSITE)`` resolves the
user from an ``Authorization: Bearer`` JWT or the UI's ``_token`` cookie through the configured auth
manager, and answers 401 (no or expired token) or 403 (invalid token, or a user without UI access)
before any lake access. A user sees the reports of the pipelines whose DAGs (``<pipeline>__...``)
the auth manager lets them read: with the FAB auth manager and per-DAG roles, a team sees its own
pipelines' reports, the Auditor every pipeline's; another pipeline's report answers 404, as if it
did not exist. The reports are read through ``llmops.reports.index``, which validates the path
segments, so a request can only ever read a listed report's files.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_view
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmops.reports import index
from llmops.settings import get_settings

log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
_ICONS = {"icon.svg": _HERE / "static" / "icon.svg", "icon-dark.svg": _HERE / "static" / "icon-dark.svg"}
UI_ROUTE = "llmops-reports"

# Reports are governance records: never cached by browsers or proxies, framed only by the UI's origin.
# The pages need no script at all, so none may run (the report HTML is produced by our template
# with autoescaping; this is the second line of defence should a field ever carry markup).
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'self'"
)
_HTML_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "Referrer-Policy": "same-origin",
}


def _short_time(value: Any) -> str:
    """``2026-01-02T03:04:05+00:00`` as ``2026-01-02 03:04 UTC``; other values as they are."""
    if not isinstance(value, str):
        return "" if value is None else str(value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return value
    zone = parsed.tzname() or ""
    return parsed.strftime("%Y-%m-%d %H:%M") + (f" {'UTC' if zone in ('UTC', 'UTC+00:00') else zone}")


def _decision_class(decision: Any) -> str:
    """Badge colour of a run's decision or a model version's state (see docs/audit_reports.md)."""
    if not isinstance(decision, str):
        return "unknown"
    if decision in ("promoted", "promoted (champion)"):
        return "ok"
    if decision.startswith("registered"):
        return "warn"
    if decision.startswith(("rejected", "failed", "rolled back")):
        return "bad"
    return "unknown"


_templates = Environment(
    loader=FileSystemLoader(_HERE / "templates"),
    autoescape=select_autoescape(["html", "j2"]),
)
_templates.filters["short_time"] = _short_time
_templates.filters["decision_class"] = _decision_class


def _reports_root() -> str:
    """Read per request, like every llmops setting: the lake may move without a restart."""
    return get_settings().reports_root


def _prefix(request: Request) -> str:
    """The path this app is mounted at (``[api] base_url`` path + ``/llmops``).

    ``request.url_for`` cannot be used: the plugin mounts a lazy wrapper, so the root router the
    request carries does not know this app's routes. The mount puts its prefix in ``root_path``.
    """
    return str(request.scope.get("root_path", "")).rstrip("/")


def _with_links(request: Request, entry: dict[str, Any]) -> dict[str, Any]:
    """The entry plus the plugin URLs of its HTML and JSON (paths, valid behind any base_url)."""
    page = f"{_prefix(request)}/reports/{quote(entry['pipeline'])}/{quote(entry['report_id'])}"
    out = dict(entry)
    out["url"] = page if entry["html_uri"] else None
    out["json_url"] = f"{page}/{index.REPORT_JSON}"
    out["card_urls"] = (
        {card.removesuffix(".md").replace("_", " "): f"{page}/{card}" for card in index.CARDS}
        if entry.get("kind") == "model version"
        else {}
    )
    return out


#: The DAGs a pipeline can have (``<pipeline>__<kind>``): reading any one of them opens its reports.
_PIPELINE_DAG_KINDS = ("ingest", "finetune", "monitor", "batch_inference")


def _can_read_pipeline(user: Any, pipeline: str) -> bool:
    """Whether the auth manager lets ``user`` read one of the pipeline's DAGs. Asked per DAG id, not
    per DAG in the database, so the reports of a retired pipeline stay readable to whoever may read
    every DAG (the Auditor), and to no one else."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    manager = get_auth_manager()
    return any(
        manager.is_authorized_dag(method="GET", user=user, details=DagDetails(id=f"{pipeline}__{kind}"))
        for kind in _PIPELINE_DAG_KINDS
    )


def _list(request: Request, pipeline: str | None, user: Any) -> list[dict[str, Any]]:
    try:
        entries = index.list_reports(_reports_root())
    except Exception as exc:  # the lake is down or misconfigured: say so, do not leak internals
        log.exception("listing the reports failed")
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"the reports store is unavailable ({type(exc).__name__})"
        ) from exc
    entries = [e for e in entries if pipeline is None or e["pipeline"] == pipeline]
    readable = {name for name in {e["pipeline"] for e in entries} if _can_read_pipeline(user, name)}
    return [_with_links(request, e) for e in entries if e["pipeline"] in readable]


def _read(reader: Any, pipeline: str, report_id: str, user: Any) -> Any:
    if not _can_read_pipeline(user, pipeline):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such report")
    try:
        return reader(_reports_root(), pipeline, report_id)
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    except index.ReportNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such report") from exc


router = APIRouter(dependencies=[Depends(requires_access_view(AccessView.WEBSITE))])


@router.get("/", response_class=HTMLResponse, name="reports_page")
def reports_page(
    request: Request, user: GetUserDep, pipeline: str | None = Query(default=None, max_length=200)
) -> HTMLResponse:
    """The reports list, grouped by pipeline, newest first."""
    entries = _list(request, pipeline, user)
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:  # newest first inside each pipeline, as listed
        groups.setdefault(entry["pipeline"], []).append(entry)
    groups = dict(sorted(groups.items()))
    html = _templates.get_template("reports.html.j2").render(
        groups=groups,
        total=len(entries),
        pipeline=pipeline,
        reports_root=_reports_root(),
        list_url=f"{_prefix(request)}/",
        api_url=f"{_prefix(request)}/api/reports",
    )
    return HTMLResponse(html, headers=_HTML_HEADERS)


@router.get("/api/reports", name="reports_json")
def reports_json(
    request: Request, user: GetUserDep, pipeline: str | None = Query(default=None, max_length=200)
) -> JSONResponse:
    """The reports list as JSON: what the page shows, for scripts and checks."""
    entries = _list(request, pipeline, user)
    return JSONResponse(
        {"reports_root": _reports_root(), "total_entries": len(entries), "reports": entries},
        headers={"Cache-Control": "no-store"},
    )


@router.get("/reports/{pipeline}/{report_id}", response_class=HTMLResponse, name="report_html")
def report_html(pipeline: str, report_id: str, user: GetUserDep) -> HTMLResponse:
    """One audit report, exactly as the pipeline rendered it."""
    return HTMLResponse(_read(index.read_report_html, pipeline, report_id, user), headers=_HTML_HEADERS)


@router.get("/reports/{pipeline}/{report_id}/{card}.md", name="report_card")
def report_card(pipeline: str, report_id: str, card: str, user: GetUserDep) -> Response:
    """A model-version report's model card or data card, as the Markdown the pipeline wrote."""
    body = _read(
        lambda root, p, r: index.read_report_card(root, p, r, f"{card}.md"), pipeline, report_id, user
    )
    return Response(
        body,
        media_type="text/markdown; charset=utf-8",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/reports/{pipeline}/{report_id}/audit_report.json", name="report_json")
def report_json(pipeline: str, report_id: str, user: GetUserDep) -> Response:
    """One audit report's JSON, byte for byte."""
    body = _read(index.read_report_json_bytes, pipeline, report_id, user)
    return Response(
        body,
        media_type="application/json",
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


def _login_url(request: Request) -> str:
    """Where to sign in, coming back to this page inside the UI afterwards."""
    from airflow.api_fastapi.app import get_auth_manager

    base = str(request.scope.get("app_root_path", "") or "").rstrip("/")
    try:
        return get_auth_manager().get_url_login(next_url=f"{base}/plugin/{UI_ROUTE}")
    except Exception:  # an auth manager without a login page: the UI root knows what to do
        return f"{base}/"


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """JSON errors as FastAPI gives them; a readable page for a browser that is not signed in."""
    wants_html = "text/html" in request.headers.get("accept", "")
    if wants_html and exc.status_code in (status.HTTP_401_UNAUTHORIZED, status.HTTP_403_FORBIDDEN):
        html = _templates.get_template("denied.html.j2").render(
            status_code=exc.status_code, detail=exc.detail, login_url=_login_url(request)
        )
        return HTMLResponse(html, status_code=exc.status_code, headers=_HTML_HEADERS)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def create_app() -> FastAPI:
    """The app the plugin mounts; built once per API server process, on its first request."""
    app = FastAPI(
        title="llmops compliance reports",
        docs_url=None,  # the API docs would be the one unauthenticated route: not needed
        redoc_url=None,
        openapi_url=None,
    )
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]

    @app.get("/static/{name}", include_in_schema=False)
    def icon(name: str) -> FileResponse:
        """The navigation icons: public, like the UI's own assets (the nav renders before login)."""
        path = _ICONS.get(name)
        if path is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND)
        return FileResponse(path, media_type="image/svg+xml", headers={"Cache-Control": "max-age=3600"})

    app.include_router(router)
    return app
