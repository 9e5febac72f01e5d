"""The Compliance reports UI plugin: the report index, the API server's plugin app, the Airflow UI.

Three layers, cheapest first:

- ``llmops.reports.index`` on a local lake and on S3 (moto on 127.0.0.1): listing, ordering, kinds,
  and that no request-supplied name can read anything but a listed report;
- a real ``airflow api-server`` on 127.0.0.1 with this project's plugins folder and the simple auth
  manager: the plugin's JSON and HTML routes answer 401/403 without a valid JWT and serve the
  reports with one, and the plugin registers its nav entry;
- headless Chromium, driven over the DevTools protocol (plain ``websockets``, no browser driver to
  install): sign in through the UI's login form, open "Compliance reports" inside the Airflow UI,
  follow a report link, and keep PNG screenshots as test artifacts (pytest's tmp path, copied to
  ``$LLMOPS_TEST_ARTIFACTS`` when set).

Chromium is a Debian package (``apt-get install chromium``); ``.ci/run`` installs it. Without it the
browser test is skipped with the reason, except in CI, where that is a failure.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from airflow_api_server import ApiServer, run_api_server, stop_process_group, tail
from servers import IN_CI
from websockets.sync.client import connect

from llmops import storage
from llmops.reports import index
from llmops.reports.audit import render_html
from llmops.settings import get_settings
from llmops.specs import load_pipeline

if TYPE_CHECKING:
    from collections.abc import Iterator

    from websockets.sync.client import ClientConnection

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
UI_PIPELINE = "ui_plugin_check"  # its own pipeline folder in the session lake: other tests write reports too
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-proxy-server",  # 127.0.0.1 only, whatever proxy the environment names
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    "--window-size=1440,900",
)


def _report(
    pipeline: str, run_id: str, generated_at: str, decision: str, model: str | None
) -> dict[str, Any]:
    """A minimal audit report in the writer's schema (enough for the template and the index)."""
    return {
        "schema_version": "1.0",
        "generated_at": generated_at,
        "pipeline": {
            "name": pipeline,
            "description": "UI plugin check",
            "owner": "ml-platform",
            "purpose": "customer_support",
            "spec_hash": "0" * 64,
        },
        "run": {"finetune_run_id": run_id, "ingest_run_id": "scheduled__2026-01-01T00:00:00+00:00"},
        "summary": {
            "decision": decision,
            "model": model,
            "champion": decision == "promoted",
            "gates_passed": decision == "promoted",
            "headline_metrics": {"token_f1": 0.61, "exact_match": 0.25},
            "ledger_verified": True,
        },
        "data": {"sources": [], "validation": None, "privacy": None, "sft": None},
        "training": None,
        "evaluation": None,
        "gates": None,
        "registry": None,
        "failures": [],
        "promotion": None,
        "ledger": {
            "verification": {"ok": True, "records": 0, "head_hash": None, "problem": None},
            "events": [],
        },
    }


def _write_report(reports_root: str, folder: str, report: dict[str, Any], *, html: bool = True) -> None:
    """Write a report the way ``write_audit_report`` lays it out."""
    base = storage.join(reports_root, report["pipeline"]["name"], folder)
    storage.write_json(storage.join(base, index.REPORT_JSON), report)
    if html:
        storage.write_bytes(storage.join(base, index.REPORT_HTML), render_html(report).encode())


def _write_model_version_report(tmp: Path) -> None:
    """A model-version report as the `compliance_audit_report` DAG writes it, from a ledger chain of
    its own (the registry left out: this test has no tracking server)."""
    from ledger_chains import finetune_run, ingest_run

    from llmops.ledger import Ledger
    from llmops.reports.model_version import write_model_version_report

    base = load_pipeline("support_bot")
    spec = base.model_copy(
        update={"name": UI_PIPELINE, "registry": base.registry.model_copy(update={"model_name": "ui_bot"})}
    )
    ledger = Ledger(f"sqlite:///{tmp / 'ledger.db'}")
    ids = ingest_run(ledger, UI_PIPELINE, "ingest-ui", label="ui")
    finetune_run(
        ledger, UI_PIPELINE, "ft-ui", curated=ids["curated"], model_name="ui_bot", version="7", label="ui7"
    )
    write_model_version_report(spec, "ui_bot", "7", ledger=ledger, registry=False)


def _safe(run_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)


# ---------------------------------------------------------------------------------------------
# The index, on a local folder and on S3
# ---------------------------------------------------------------------------------------------


@pytest.fixture(params=["local", "s3"])
def reports_root(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "local":
        return str(tmp_path / "lake" / "reports")
    bucket, conn_id = request.getfixturevalue("s3_bucket")
    monkeypatch.setenv("LLMOPS_LAKE_CONN_ID", conn_id)
    return f"s3://{bucket}/lake/reports"


def test_index_lists_every_report_folder_newest_first(reports_root: str) -> None:
    """Expect run and model-version folders listed from their JSON summaries, newest first; the
    pipeline's LATEST.json, folders without a JSON and hidden names are not reports."""
    old = _report(
        "bot", "manual__2026-01-01T00:00:00+00:00", "2026-01-01T10:00:00+00:00", "rejected by gates", None
    )
    new = _report(
        "bot", "manual__2026-01-03T00:00:00+00:00", "2026-01-03T10:00:00+00:00", "promoted", "bot v3"
    )
    model = _report("bot", "manual__2026-01-03T00:00:00+00:00", "2026-01-02T10:00:00+00:00", "promoted", None)
    model["registry"] = {"model_name": "bot", "version": 3}
    other = _report(
        "other", "manual__2026-01-02T00:00:00+00:00", "2026-01-02T12:00:00", "failed during training", None
    )
    _write_report(reports_root, _safe(old["run"]["finetune_run_id"]), old)
    _write_report(reports_root, _safe(new["run"]["finetune_run_id"]), new)
    _write_report(reports_root, "model-bot-v3", model, html=False)
    _write_report(reports_root, "r1", other)
    storage.write_json(storage.join(reports_root, "bot", "LATEST.json"), {"run_id": "x"})
    storage.write_bytes(storage.join(reports_root, "bot", "only-html", index.REPORT_HTML), b"<p>x</p>")
    storage.write_bytes(storage.join(reports_root, "bot", ".tmp-folder", index.REPORT_JSON), b"{}")
    storage.write_bytes(storage.join(reports_root, "bot", "broken", index.REPORT_JSON), b"{not json")

    entries = index.list_reports(reports_root)

    assert [(e["pipeline"], e["report_id"]) for e in entries] == [
        ("bot", "manual__2026-01-03T00_00_00_00_00"),
        ("other", "r1"),  # a naive timestamp is read as UTC
        ("bot", "model-bot-v3"),
        ("bot", "manual__2026-01-01T00_00_00_00_00"),
        ("bot", "broken"),  # unreadable: listed last, with the error, not silently dropped
    ]
    newest, _, model_entry, oldest, broken = entries
    assert newest["kind"] == "run" and newest["decision"] == "promoted"
    assert (newest["model"], newest["model_name"], newest["model_version"]) == ("bot v3", "bot", "3")
    assert newest["run_id"] == "manual__2026-01-03T00:00:00+00:00"
    assert newest["html_uri"] == storage.join(reports_root, "bot", newest["report_id"], index.REPORT_HTML)
    assert newest["json_uri"] == storage.join(reports_root, "bot", newest["report_id"], index.REPORT_JSON)
    assert model_entry["kind"] == "model version" and model_entry["html_uri"] is None
    assert (model_entry["model"], model_entry["model_version"]) == ("bot v3", "3")
    assert oldest["decision"] == "rejected by gates" and oldest["model"] is None
    assert broken["error"] and broken["decision"] is None
    assert index.list_reports(storage.join(reports_root, "absent")) == []


def test_index_reads_only_listed_reports(reports_root: str) -> None:
    """Expect the HTML and JSON of a listed report, and nothing for any other name."""
    report = _report("bot", "run-1", "2026-01-01T10:00:00+00:00", "promoted", "bot v1")
    _write_report(reports_root, "run-1", report)
    _write_report(reports_root, "no-html", report, html=False)
    storage.write_bytes(storage.join(reports_root, "bot", "stray", index.REPORT_HTML), b"<p>not a report</p>")
    storage.write_bytes(storage.join(reports_root, "secret.html"), b"<p>secret</p>")

    html = index.read_report_html(reports_root, "bot", "run-1")
    assert "Compliance audit report: bot" in html and "bot v1" in html
    assert json.loads(index.read_report_json_bytes(reports_root, "bot", "run-1")) == report

    for pipeline, report_id in [
        ("..", "reports"),
        ("bot", ".."),
        ("bot", "."),
        ("bot/../..", "x"),
        ("bot", "run-1/../../secret.html"),
        ("bot", ".hidden"),
        ("bot", ""),
        ("bot", "run-1\n"),
        ("bot", "run 1"),
        ("bot", "x" * 201),
    ]:
        with pytest.raises(ValueError):
            index.read_report_html(reports_root, pipeline, report_id)
    for pipeline, report_id in [("bot", "stray"), ("bot", "no-html"), ("bot", "absent"), ("nobody", "run-1")]:
        with pytest.raises(index.ReportNotFoundError):
            index.read_report_html(reports_root, pipeline, report_id)
    with pytest.raises(index.ReportNotFoundError):
        index.read_report_json_bytes(reports_root, "bot", "stray")


# ---------------------------------------------------------------------------------------------
# The API server with the plugin
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_server(airflow_db: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """``airflow api-server`` on a free 127.0.0.1 port, with the session's DB and lake, this
    project's plugins folder and the simple auth manager with known users."""
    root = get_settings().reports_root
    written = [
        _report(
            UI_PIPELINE,
            "manual__2026-02-02T09:00:00+00:00",
            "2026-02-02T09:30:00+00:00",
            "promoted",
            "ui_bot v7",
        ),
        _report(
            UI_PIPELINE,
            "manual__2026-02-01T09:00:00+00:00",
            "2026-02-01T09:30:00+00:00",
            "rejected by gates",
            None,
        ),
    ]
    for report in written:
        _write_report(root, _safe(report["run"]["finetune_run_id"]), report)
    _write_model_version_report(tmp_path_factory.mktemp("ui-ledger"))
    with run_api_server(
        tmp_path_factory.mktemp("api-server"), {"admin": "admin", "viewer": "viewer"}
    ) as server:
        yield dataclasses.replace(server, reports=written)


@pytest.mark.slow
def test_plugin_api_requires_an_airflow_token(api_server: ApiServer) -> None:
    """Expect 401 without a token and 403 with a forged one on every plugin route; with a token
    from ``POST /auth/token`` the listing, the report HTML and JSON; and the nav entry registered."""
    base = f"{api_server.base_url}/llmops"
    newest, oldest = (_safe(r["run"]["finetune_run_id"]) for r in api_server.reports)
    routes = [
        "/",
        "/api/reports",
        f"/reports/{UI_PIPELINE}/{newest}",
        f"/reports/{UI_PIPELINE}/{newest}/audit_report.json",
    ]
    forged = "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl"
    with httpx.Client(timeout=30, trust_env=False) as client:
        for route in routes:
            assert client.get(base + route).status_code == 401, route
            assert client.get(base + route, headers={"Authorization": f"Bearer {forged}"}).status_code == 403
            assert client.get(base + route, cookies={"_token": forged}).status_code == 403, route
        page = client.get(base + "/", headers={"Accept": "text/html"})
        assert page.status_code == 401 and "Sign in to Airflow" in page.text  # a page, not bare JSON
        assert client.get(base + "/static/icon.svg").headers["content-type"].startswith("image/svg+xml")

        for user in ("admin", "viewer"):  # any user allowed to see the UI, least privileged role too
            auth = {"Authorization": f"Bearer {api_server.token(user)}"}
            listing = client.get(base + "/api/reports", headers=auth)
            assert listing.status_code == 200, listing.text
        ours = [e for e in listing.json()["reports"] if e["pipeline"] == UI_PIPELINE]
        version, ours = ours[0], ours[1:]  # written last: the newest
        assert (version["report_id"], version["kind"], version["model"]) == (
            "model-ui_bot-v7",
            "model version",
            "ui_bot v7",
        )
        version_page = client.get(base + version["url"].removeprefix("/llmops"), headers=auth)
        assert version_page.status_code == 200 and "Compliance report: ui_bot v7" in version_page.text
        assert "<svg" in version_page.text and "<script" not in version_page.text
        assert set(version["card_urls"]) == {"model card", "data card"} and ours[1]["card_urls"] == {}
        card = client.get(base + version["card_urls"]["model card"].removeprefix("/llmops"), headers=auth)
        assert card.status_code == 200 and card.headers["content-type"].startswith("text/markdown")
        assert "# Model card: ui_bot v7" in card.text
        data_card = client.get(base + version["card_urls"]["data card"].removeprefix("/llmops"), headers=auth)
        assert data_card.status_code == 200 and data_card.text.startswith(("---", "#"))
        assert (
            client.get(base + version["card_urls"]["model card"].removeprefix("/llmops")).status_code == 401
        )
        for name in ("audit_report", "README", "..%2fmodel_card"):  # only the two cards, nothing else
            other = client.get(base + f"/reports/{UI_PIPELINE}/model-ui_bot-v7/{name}.md", headers=auth)
            assert other.status_code in (400, 404), name
        assert [e["report_id"] for e in ours] == [newest, oldest]
        assert ours[0]["decision"] == "promoted" and ours[0]["model"] == "ui_bot v7"
        assert ours[0]["model_version"] == "7" and ours[1]["decision"] == "rejected by gates"
        assert ours[0]["url"] == f"/llmops/reports/{UI_PIPELINE}/{newest}"
        filtered = client.get(base + "/api/reports", params={"pipeline": UI_PIPELINE}, headers=auth).json()
        assert filtered["total_entries"] == 3
        assert {e["pipeline"] for e in filtered["reports"]} == {UI_PIPELINE}

        html = client.get(base + ours[0]["url"].removeprefix("/llmops"), headers=auth)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert f"Compliance audit report: {UI_PIPELINE}" in html.text and "ui_bot v7" in html.text
        assert "script-src" not in html.headers["content-security-policy"]  # default-src 'none': no script
        assert html.headers["cache-control"] == "no-store"
        report_json = client.get(base + ours[0]["json_url"].removeprefix("/llmops"), headers=auth)
        assert report_json.json()["summary"]["model"] == "ui_bot v7"
        cookie_page = client.get(base + "/", cookies={"_token": api_server.token()})  # how the UI frame asks
        assert cookie_page.status_code == 200 and newest in cookie_page.text

        for attempt in [
            f"/reports/{UI_PIPELINE}/..",
            f"/reports/{UI_PIPELINE}/%2e%2e",
            f"/reports/{UI_PIPELINE}/..%2f..%2f..%2fetc%2fpasswd",
            "/reports/..%2f..%2f/x",
            f"/reports/{UI_PIPELINE}/.hidden",
            f"/reports/{UI_PIPELINE}/absent",
            "/reports/LATEST.json/x",
        ]:
            assert client.get(base + attempt, headers=auth).status_code in (400, 404), attempt

        plugins = client.get(f"{api_server.base_url}/api/v2/plugins", headers=auth).json()["plugins"]
        plugin = next(p for p in plugins if p["name"] == "llmops_reports")
        assert plugin["fastapi_apps"][0]["url_prefix"] == "/llmops"
        (view,) = plugin["external_views"]
        assert view["name"] == "Compliance reports" and view["url_route"] == "llmops-reports"
        assert view["href"] == "/llmops/" and view["destination"] == "nav"


# ---------------------------------------------------------------------------------------------
# The Airflow UI in headless Chromium
# ---------------------------------------------------------------------------------------------


class Cdp:
    """The few Chrome DevTools Protocol calls the test needs, over one page's websocket."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:  # events arrive in between: skip them
            message = json.loads(self._ws.recv(timeout=30))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def eval(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; page: {self.eval('location.href')}")

    def type_into(self, selector: str, text: str) -> None:
        """Focus a field and type as a user would (real input events, which React listens to)."""
        self.eval(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", text=text)

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path


def _chromium_binary() -> str:
    explicit = os.environ.get("LLMOPS_CHROMIUM")
    found = explicit or next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    if found:
        return found
    message = "Chromium is not installed (apt-get install chromium): the UI test needs a headless browser"
    if IN_CI:
        pytest.fail(f"{message}; CI must provide it (.ci/run installs it)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium binary; module-scoped and asked for first, so a skip comes before the server starts."""
    return _chromium_binary()


@pytest.fixture
def browser(chromium: str) -> Iterator[Cdp]:
    """Headless Chromium with a fresh profile; yields a DevTools connection to its page."""
    binary = chromium
    profile = Path(tempfile.mkdtemp(prefix="llmops-chromium-"))
    log_file = profile.parent / f"{profile.name}.log"
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Chromium did not start ({proc.returncode}):\n{tail(log_file)}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10, trust_env=False).json()
        page = next(t for t in targets if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=15, proxy=None) as ws:
            cdp = Cdp(ws)
            cdp.call("Page.enable")
            cdp.call("Runtime.enable")
            yield cdp
    finally:
        stop_process_group(proc)
        shutil.rmtree(profile, ignore_errors=True)
        log_file.unlink(missing_ok=True)


def _keep_artifact(path: Path) -> Path:
    """Copy a screenshot to $LLMOPS_TEST_ARTIFACTS (CI collects it from there) when that is set."""
    target_dir = os.environ.get("LLMOPS_TEST_ARTIFACTS")
    if not target_dir:
        return path
    Path(target_dir).mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(path, Path(target_dir) / path.name))


_FRAME_DOC = "document.querySelector('iframe') && document.querySelector('iframe').contentDocument"


@pytest.mark.slow
def test_ui_shows_compliance_reports(
    chromium: str, api_server: ApiServer, browser: Cdp, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    """Expect a user who signs in through the UI to find "Compliance reports" in the navigation,
    see the reports list inside the UI, and open a report with its summary, deep-linked."""
    base = api_server.base_url
    newest = _safe(api_server.reports[0]["run"]["finetune_run_id"])

    browser.call("Page.navigate", url=f"{base}/plugin/llmops-reports")
    browser.wait_for("!!document.querySelector('input[name=username]')", "the login form")
    browser.type_into("input[name=username]", "viewer")
    browser.type_into("input[name=password]", api_server.users["viewer"])
    browser.eval("document.querySelector('button[type=submit]').click()")
    browser.wait_for("!location.pathname.startsWith('/auth/')", "the UI after signing in")

    if browser.eval("location.pathname") != "/plugin/llmops-reports":
        browser.call("Page.navigate", url=f"{base}/plugin/llmops-reports")
    rows = browser.wait_for(
        f"(() => {{ const d = {_FRAME_DOC}; return d && d.querySelectorAll('tr.report').length"
        " && [...d.querySelectorAll('tr.report')].map(r => r.innerText); })()",
        "the reports list inside the UI",
    )
    assert any(newest in row and "promoted" in row and "ui_bot v7" in row for row in rows), rows
    assert any("rejected by gates" in row for row in rows), rows
    assert any("model-ui_bot-v7" in row and "model version" in row for row in rows), rows
    nav = browser.eval("[...document.querySelectorAll('a, button')].map(e => e.textContent.trim())")
    assert "Compliance reports" in nav, nav
    time.sleep(0.5)  # let the icons and fonts settle before the picture
    listing_png = _keep_artifact(browser.screenshot(tmp_path / "ui_plugin_reports_list.png"))

    browser.eval(f"{_FRAME_DOC}.querySelector('tr.report[data-report-id={json.dumps(newest)}] a').click()")
    summary = browser.wait_for(
        f"(() => {{ const d = {_FRAME_DOC}; const s = d && d.querySelector('#summary');"
        " return s && s.innerText; })()",
        "the audit report inside the UI",
    )
    assert "promoted" in summary and "ui_bot v7" in summary and "verified" in summary, summary
    assert (
        browser.eval("location.pathname") == f"/plugin/llmops-reports/llmops/reports/{UI_PIPELINE}/{newest}"
    )
    time.sleep(0.3)
    report_png = _keep_artifact(browser.screenshot(tmp_path / "ui_plugin_report.png"))

    for png in (listing_png, report_png):
        assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 10_000
    record_property("screenshots", f"{listing_png} {report_png}")
    print(f"screenshots: {listing_png} {report_png}")


@pytest.mark.slow
def test_trigger_form_renders_the_typed_run_parameters(
    chromium: str, api_server: ApiServer, browser: Cdp, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    """Expect the finetune DAG's trigger form to show each run parameter with its title and
    description, as a user who triggers a run from the UI sees it."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(Path(__file__).resolve().parents[2] / "dags"))
    sync_bag_to_db(bag, "dags-folder", None)
    base = api_server.base_url
    browser.call("Page.navigate", url=f"{base}/dags/support_bot__finetune")
    browser.wait_for("!!document.querySelector('input[name=username]')", "the login form")
    browser.type_into("input[name=username]", "admin")
    browser.type_into("input[name=password]", api_server.users["admin"])
    browser.eval("document.querySelector('button[type=submit]').click()")
    browser.wait_for("!location.pathname.startsWith('/auth/')", "the UI after signing in")
    if not browser.eval("location.pathname").startswith("/dags/support_bot__finetune"):
        browser.call("Page.navigate", url=f"{base}/dags/support_bot__finetune")
    browser.wait_for(
        "[...document.querySelectorAll('button')].some(b => b.textContent.trim() === 'Trigger')",
        "the DAG page's Trigger button",
    )
    browser.eval(
        "[...document.querySelectorAll('button')].find(b => b.textContent.trim() === 'Trigger').click()"
    )
    form = browser.wait_for(
        "(() => { const d = [...document.querySelectorAll('[role=dialog]')]"
        ".find(e => e.innerText.includes('Run Parameters'));"
        " return d && d.innerText.includes('Learning rate') && d.innerText; })()",
        "the trigger form with the run parameters",
    )
    for text in ("Curated snapshot", "Learning rate", "Epochs", "Max steps", "Promote if gates pass"):
        assert text in form, form
    assert "Override the spec's learning rate." in form, form
    time.sleep(0.5)
    png = _keep_artifact(browser.screenshot(tmp_path / "ui_trigger_form.png"))
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 10_000
    record_property("screenshots", str(png))
    print(f"screenshot: {png}")
