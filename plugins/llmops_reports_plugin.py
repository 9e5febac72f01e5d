"""Airflow 3 UI plugin: the lake's compliance audit reports, inside the Airflow UI.

Two extension points of Airflow 3's plugin interface work together:

- ``fastapi_apps`` mounts a small FastAPI app on the API server at ``/llmops``: the reports list
  (``/llmops/``), one report (``/llmops/reports/<pipeline>/<report-id>``) and a JSON listing
  (``/llmops/api/reports``). Every one of these requires an authenticated Airflow user: the app uses
  the API server's own auth dependency (JWT from the ``Authorization: Bearer`` header or the UI's
  ``_token`` cookie, checked by the configured auth manager).
- ``external_views`` adds "Compliance reports" to the UI's navigation; with a ``url_route`` the UI
  shows the page in an iframe at ``/plugin/llmops-reports`` (same origin, so the UI's cookie
  authenticates the frame), and links followed inside the frame stay deep-linkable.

Airflow imports every plugin module in every process (scheduler, triggerer, task runners), so
this module imports nothing beyond the plugin base class and the config: the FastAPI app, llmops
and Jinja2 are imported by the API server on the first request to ``/llmops``.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]

URL_PREFIX = "/llmops"
URL_ROUTE = "llmops-reports"
_PLUGINS_DIR = str(Path(__file__).resolve().parent)


def _base_path() -> str:
    """The path of ``[api] base_url`` (empty at the root): the UI's links must carry it."""
    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


class LazyReportsApp:
    """An ASGI app that builds the real FastAPI app on its first request.

    Mounting needs an app object when the plugin class is defined, in every process; building it
    there would import FastAPI, Airflow's security module and llmops everywhere. Only the API
    server ever calls it. Lifespan events are not forwarded to mounted apps that are not FastAPI
    apps, and the reports app needs none.
    """

    def __init__(self) -> None:
        self._app: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None
        self._lock = threading.Lock()

    def _build(self) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
        with self._lock:
            if self._app is None:
                # The package sits beside this file, excluded from plugin scanning by .airflowignore;
                # Airflow puts the plugins folder on sys.path, this covers a folder set after import.
                if _PLUGINS_DIR not in sys.path:
                    sys.path.append(_PLUGINS_DIR)
                from llmops_reports_ui.app import create_app

                self._app = create_app()
            return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app or self._build()
        await app(scope, receive, send)


class LlmopsReportsPlugin(AirflowPlugin):
    """Compliance reports page: a FastAPI app on the API server and a nav entry in the UI."""

    name = "llmops_reports"
    fastapi_apps = [
        {"app": LazyReportsApp(), "url_prefix": URL_PREFIX, "name": "llmops compliance reports"},
    ]
    external_views = [
        {
            "name": "Compliance reports",
            "href": f"{_base_path()}{URL_PREFIX}/",
            "destination": "nav",
            "url_route": URL_ROUTE,
            "nav_top_level": True,
            "icon": f"{_base_path()}{URL_PREFIX}/static/icon.svg",
            "icon_dark_mode": f"{_base_path()}{URL_PREFIX}/static/icon-dark.svg",
        }
    ]
