"""REST extraction against a real HTTP server on 127.0.0.1 that misbehaves on command."""

from __future__ import annotations

import json
import logging
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

import pytest

from llmops.demo.tickets_api import serve_in_thread
from llmops.ingest import rest
from llmops.ingest.common import SourceError, sample_mask
from llmops.ingest.rest import extract_rest
from llmops.specs.schema import RestSource

if TYPE_CHECKING:
    from collections.abc import Callable

    Handler = Callable[[BaseHTTPRequestHandler], None]

TOKEN = "test-token-7f3a9c"
GOVERNANCE = {"data_owner": "o", "purposes": ["p"], "lawful_basis": "contract"}
RECORDS = [{"ticket_id": f"W-{i:03d}", "body": f"text {i}"} for i in range(1, 24)]
KEYS = sorted(r["ticket_id"] for r in RECORDS)


def _source(
    page_size: int = 10,
    columns=("ticket_id", "body"),
    records_path: str = "data",
    pagination: dict[str, Any] | None = None,
    **fields: Any,
) -> RestSource:
    return RestSource(
        kind="rest",
        name="api",
        conn_id="unused",
        endpoint="/v1/tickets",
        records_path=records_path,
        columns=list(columns),
        pagination={"page_size": page_size, **(pagination or {})},
        timeout_seconds=fields.pop("timeout_seconds", 5),
        governance=GOVERNANCE,
        **fields,
    )


def query(handler: BaseHTTPRequestHandler) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(handler.path).query).items()}


def send(
    handler: BaseHTTPRequestHandler,
    status: int,
    payload=None,
    *,
    raw: bytes | None = None,
    content_type: str = "application/json",
    headers: dict | None = None,
) -> None:
    body = raw if raw is not None else json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(body)


def serve_pages(handler: BaseHTTPRequestHandler) -> None:
    q = query(handler)
    page, size = int(q["page"]), int(q["per_page"])
    send(handler, 200, {"data": RECORDS[(page - 1) * size : page * size]})


class Upstream:
    """A scriptable upstream: each request is answered by the next scripted response, else by `default`."""

    def __init__(self) -> None:
        self.script: list[Handler] = []
        self.default: Handler = serve_pages
        self.requests: list[tuple[float, str]] = []
        self.headers: list[dict[str, str]] = []
        upstream = self

        class RequestHandler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                upstream.requests.append((time.monotonic(), self.path))
                upstream.headers.append(dict(self.headers.items()))
                (upstream.script.pop(0) if upstream.script else upstream.default)(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def queries(self) -> list[dict[str, str]]:
        return [{k: v[0] for k, v in parse_qs(urlparse(p).query).items()} for _, p in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream():
    up = Upstream()
    yield up
    up.close()


@pytest.fixture
def foreign():
    """A second server: another port is another origin, which must never see the credentials."""
    up = Upstream()
    yield up
    up.close()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    """Backoff without Retry-After waits 1s, 2s, ...; the tests shrink the base, not the logic."""
    monkeypatch.setattr(rest, "BACKOFF_BASE_SECONDS", 0.01)


# ----------------------------------------------------------------------------------- pagination


def test_paginates_until_short_page(upstream):
    """Expect all records across pages, sorted by key, and the pages, requests and timing recorded."""
    table, meta = extract_rest(_source(page_size=10), "ticket_id", base_url=upstream.url, headers={})
    assert table.num_rows == 23
    assert table.column("ticket_id").to_pylist() == KEYS
    assert meta["pages"] == 3 and len(upstream.requests) == 3
    assert meta["pagination"] == "page" and meta["requests"] == 3 and meta["retries"] == 0
    assert 0 <= meta["elapsed_seconds"] < 5
    assert [q["page"] for q in upstream.queries] == ["1", "2", "3"]


def test_page_style_uses_start_page_and_param_names(upstream):
    """Expect the spec's page_param, size_param and start_page in the requests, stopping on an empty page."""

    def serve(h):
        page, size = int(query(h)["p"]), int(query(h)["n"])
        send(h, 200, {"data": RECORDS[:12][page * size : (page + 1) * size]})

    upstream.default = serve
    source = _source(page_size=4, pagination={"page_param": "p", "size_param": "n", "start_page": 0})
    table, meta = extract_rest(source, "ticket_id", base_url=upstream.url, headers={})
    assert [(q["p"], q["n"]) for q in upstream.queries] == [("0", "4"), ("1", "4"), ("2", "4"), ("3", "4")]
    assert table.num_rows == 12 and meta["pages"] == 4


@pytest.mark.parametrize(("count", "pages"), [(23, 3), (20, 3)], ids=["short-last-page", "empty-last-page"])
def test_offset_pagination(upstream, count, pages):
    """Expect offsets 0, size, 2*size... with the size param, stopping on a short or empty page."""

    def serve(h):
        q = query(h)
        offset, limit = int(q["offset"]), int(q["limit"])
        send(h, 200, {"data": RECORDS[:count][offset : offset + limit]})

    upstream.default = serve
    source = _source(page_size=10, pagination={"type": "offset", "size_param": "limit"})
    table, meta = extract_rest(source, "ticket_id", base_url=upstream.url, headers={})
    assert table.num_rows == count and meta["pages"] == pages and meta["pagination"] == "offset"
    assert [(q["offset"], q["limit"]) for q in upstream.queries] == [
        (str(10 * i), "10") for i in range(pages)
    ]


def _cursor_server(last: str = "null") -> Handler:
    """Cursor pages of 10 under meta.next; the last page ends with a null, missing or empty cursor."""

    def serve(h):
        q = query(h)
        start = int(q["cursor"].removeprefix("c")) if "cursor" in q else 0
        end = start + int(q["per_page"])
        body: dict[str, Any] = {"data": RECORDS[start:end], "meta": {}}
        if end < len(RECORDS):
            body["meta"]["next"] = f"c{end}"
        elif last != "missing":
            body["meta"]["next"] = None if last == "null" else ""
        send(h, 200, body)

    return serve


@pytest.mark.parametrize("last", ["null", "missing", "empty"])
def test_cursor_pagination(upstream, last):
    """Expect no cursor on the first request, then the one at cursor_path, until it is null, missing or ''."""
    upstream.default = _cursor_server(last)
    source = _source(page_size=10, pagination={"type": "cursor", "cursor_path": "meta.next"})
    table, meta = extract_rest(source, "ticket_id", base_url=upstream.url, headers={})
    assert table.column("ticket_id").to_pylist() == KEYS
    assert meta["pages"] == 3 and meta["pagination"] == "cursor"
    assert [q.get("cursor") for q in upstream.queries] == [None, "c10", "c20"]


def test_repeated_cursor_is_an_error(upstream):
    """Expect a cursor the API already gave to fail (loop protection), naming the source and cursor."""
    upstream.default = lambda h: send(h, 200, {"data": RECORDS[:10], "next_cursor": "again"})
    source = _source(page_size=10, pagination={"type": "cursor"})
    with pytest.raises(SourceError, match=r"source 'api': cursor 'again' .* already used") as info:
        extract_rest(source, "ticket_id", base_url=upstream.url, headers={})
    assert "cursor=again" in str(info.value)
    assert len(upstream.requests) == 2


def _link_server(upstream: Upstream, form: str) -> Handler:
    """Link-header pages of 10; the next link is absolute, path-relative or query-relative."""

    def serve(h):
        q = query(h)
        start, size = int(q.get("after", 0)), int(q["per_page"])
        end = start + size
        headers = {}
        if end < len(RECORDS):
            target = {
                "absolute": f"{upstream.url}/v1/tickets?after={end}&per_page={size}",
                "path": f"/v1/tickets?after={end}&per_page={size}",
                "query": f"?after={end}&per_page={size}",
            }[form]
            headers["Link"] = (
                f'<{upstream.url}/v1/tickets?per_page={size}>; rel="first", <{target}>; rel="next"'
            )
        send(h, 200, {"data": RECORDS[start:end]}, headers=headers)

    return serve


@pytest.mark.parametrize("form", ["absolute", "path", "query"])
def test_link_pagination(upstream, form):
    """Expect rel="next" Link URLs to be followed, absolute or relative, until there is none."""
    upstream.default = _link_server(upstream, form)
    source = _source(page_size=10, pagination={"type": "link"}, params={"status": "open"})
    table, meta = extract_rest(source, "ticket_id", base_url=upstream.url, headers={})
    assert table.column("ticket_id").to_pylist() == KEYS
    assert meta["pages"] == 3 and meta["pagination"] == "link"
    assert [p for _, p in upstream.requests] == [
        "/v1/tickets?status=open&per_page=10",
        "/v1/tickets?after=10&per_page=10",
        "/v1/tickets?after=20&per_page=10",
    ]


def test_repeated_link_is_an_error(upstream):
    """Expect a next link back to a page already fetched to fail (loop protection), naming the source."""
    upstream.default = lambda h: send(
        h, 200, {"data": RECORDS[:10]}, headers={"Link": '</v1/tickets?per_page=10>; rel="next"'}
    )
    with pytest.raises(SourceError, match=r"source 'api': the next link of .* repeats .* in a loop"):
        extract_rest(_source(pagination={"type": "link"}), "ticket_id", base_url=upstream.url, headers={})
    assert len(upstream.requests) == 1


def test_link_to_another_host_is_refused(upstream, foreign):
    """Expect a next link to another origin to fail before any request reaches it with the token."""
    upstream.default = lambda h: send(
        h, 200, {"data": RECORDS[:10]}, headers={"Link": f'<{foreign.url}/v1/tickets?after=10>; rel="next"'}
    )
    source = _source(page_size=10, pagination={"type": "link"})
    with pytest.raises(SourceError, match="refusing to send the credentials to another host") as info:
        extract_rest(source, "ticket_id", base_url=upstream.url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert "source 'api'" in str(info.value) and foreign.url in str(info.value)
    assert foreign.requests == [] and len(upstream.requests) == 1


def test_redirects_stay_on_the_base_host(upstream, foreign):
    """Expect a same-host redirect to be followed and a redirect to another host to be refused."""
    upstream.script.append(lambda h: send(h, 302, {}, headers={"Location": "/v2/tickets?page=1&per_page=50"}))
    table, meta = extract_rest(_source(page_size=50), "ticket_id", base_url=upstream.url, headers={})
    assert table.num_rows == 23 and meta["requests"] == 2 and meta["pages"] == 1
    assert upstream.requests[1][1] == "/v2/tickets?page=1&per_page=50"

    upstream.script.append(lambda h: send(h, 307, {}, headers={"Location": f"{foreign.url}/v1/tickets"}))
    with pytest.raises(SourceError, match="redirects to .* refusing to send the credentials"):
        extract_rest(_source(), "ticket_id", base_url=upstream.url, headers={"X-API-Key": TOKEN})
    assert foreign.requests == []


def test_no_pagination_makes_one_request(upstream):
    """Expect type 'none' to make a single request carrying only the fixed params."""
    upstream.script.append(lambda h: send(h, 200, {"data": RECORDS}))
    source = _source(pagination={"type": "none"}, params={"page": 7})
    table, meta = extract_rest(source, "ticket_id", base_url=upstream.url, headers={})
    assert table.num_rows == 23 and meta["pages"] == 1 and meta["pagination"] == "none"
    assert upstream.queries == [{"page": "7"}]


def test_max_pages_is_enforced(upstream):
    """Expect an upstream with more pages than max_pages to fail, naming the source and the limit."""
    with pytest.raises(
        SourceError, match=r"source 'api': more than max_pages=2 pages at http://127\.0\.0\.1"
    ):
        extract_rest(
            _source(page_size=5, pagination={"max_pages": 2}), "ticket_id", base_url=upstream.url, headers={}
        )
    assert len(upstream.requests) == 2


# ------------------------------------------------------------------------------ params and paths


def test_fixed_params_are_sent_on_every_request(upstream):
    """Expect `params` on every page request, booleans written as APIs expect them."""
    source = _source(page_size=10, params={"status": "open", "include_closed": False, "min_id": 3})
    extract_rest(source, "ticket_id", base_url=upstream.url, headers={})
    assert len(upstream.queries) == 3
    for q in upstream.queries:
        assert q["status"] == "open" and q["include_closed"] == "false" and q["min_id"] == "3"


@pytest.mark.parametrize(
    ("pagination", "params", "expected"),
    [
        ({}, {"page": 2}, "fixed param 'page' conflicts with pagination.page_param 'page'"),
        ({"type": "offset"}, {"per_page": 5}, "fixed param 'per_page' conflicts with pagination.size_param"),
        ({"type": "cursor", "cursor_param": "after"}, {"after": "x"}, "pagination.cursor_param 'after'"),
        ({"type": "offset", "offset_param": "n", "size_param": "n"}, {}, "pagination parameters must differ"),
    ],
)
def test_param_conflicts_are_errors(upstream, pagination, params, expected):
    """Expect a fixed param that the pagination style also sets to fail before any request."""
    with pytest.raises(SourceError, match="source 'api'") as info:
        extract_rest(
            _source(pagination=pagination, params=params), "ticket_id", base_url=upstream.url, headers={}
        )
    assert expected in str(info.value)
    assert upstream.requests == []


@pytest.mark.parametrize("path", [".", ""])
def test_records_path_can_be_the_body(upstream, path):
    """Expect records_path '.' or '' to read a bare JSON list as the records."""
    upstream.script.append(lambda h: send(h, 200, RECORDS[:3]))
    table, _ = extract_rest(_source(records_path=path), "ticket_id", base_url=upstream.url, headers={})
    assert table.column("ticket_id").to_pylist() == ["W-001", "W-002", "W-003"]

    upstream.script.append(lambda h: send(h, 200, {"data": []}))
    with pytest.raises(SourceError, match="the body of http://127.0.0.1.* is dict, expected a list"):
        extract_rest(_source(records_path=path), "ticket_id", base_url=upstream.url, headers={})


# ------------------------------------------------------------------------------ retries, budgets


def test_retry_after_is_honoured(upstream):
    """Expect a 429 with Retry-After to be retried after the advertised delay, then succeed."""
    upstream.script.append(lambda h: send(h, 429, {"error": "slow down"}, headers={"Retry-After": "1"}))
    table, _ = extract_rest(_source(page_size=50), "ticket_id", base_url=upstream.url, headers={})
    assert table.num_rows == 23
    (t0, _), (t1, _) = upstream.requests[:2]
    assert t1 - t0 >= 0.9


def test_retry_after_http_date_is_honoured(upstream, monkeypatch):
    """Expect Retry-After as an HTTP-date to set the delay (a past date: at once; a future one: then)."""
    monkeypatch.setattr(rest, "BACKOFF_BASE_SECONDS", 100.0)  # unparsed, the backoff would pass the deadline
    past = formatdate(time.time() - 60, usegmt=True)
    soon = formatdate(time.time() + 2, usegmt=True)
    upstream.script.extend(
        [
            lambda h: send(h, 429, {}, headers={"Retry-After": past}),
            lambda h: send(h, 503, {}, headers={"Retry-After": soon}),
        ]
    )
    table, meta = extract_rest(
        _source(page_size=50, deadline_seconds=10), "ticket_id", base_url=upstream.url, headers={}
    )
    assert table.num_rows == 23 and meta["retries"] == 2 and meta["requests"] == 3
    (t0, _), (t1, _), (t2, _) = upstream.requests
    assert t1 - t0 < 0.5
    assert 0.9 <= t2 - t1 < 3.5


def test_server_errors_are_retried(upstream):
    """Expect 500 and 503 to be retried with backoff, and the retries recorded."""
    upstream.script.extend(
        [lambda h: send(h, 500, {"error": "boom"}), lambda h: send(h, 503, {"error": "busy"})]
    )
    table, meta = extract_rest(_source(page_size=50), "ticket_id", base_url=upstream.url, headers={})
    assert table.num_rows == 23 and len(upstream.requests) == 3
    assert meta["retries"] == 2 and meta["requests"] == 3 and meta["pages"] == 1


def test_retries_per_request_are_limited(upstream):
    """Expect a request that keeps failing to stop after MAX_ATTEMPTS, naming the URL and the status."""
    upstream.default = lambda h: send(h, 503, {}, headers={"Retry-After": "0"})
    with pytest.raises(
        SourceError, match=r"source 'api': http://\S+page=1&per_page=10 failed after 5 attempts"
    ):
        extract_rest(_source(), "ticket_id", base_url=upstream.url, headers={})
    assert len(upstream.requests) == rest.MAX_ATTEMPTS == 5


def test_request_budget_counts_retries(upstream):
    """Expect max_requests to count retries too and to fail clearly when it runs out."""
    upstream.script.append(lambda h: send(h, 503, {}, headers={"Retry-After": "0"}))
    with pytest.raises(
        SourceError, match="source 'api': request budget of 3 exhausted after 2 pages"
    ) as info:
        extract_rest(_source(page_size=5, max_requests=3), "ticket_id", base_url=upstream.url, headers={})
    assert "page=3&per_page=5" in str(info.value)
    assert len(upstream.requests) == 3


def test_deadline_refuses_a_long_retry_after(upstream):
    """Expect a Retry-After that would pass the deadline to fail at once instead of sleeping past it."""
    upstream.script.append(lambda h: send(h, 429, {}, headers={"Retry-After": "120"}))
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"Retry-After asks for 120\.0s, .*deadline of 5s") as info:
        extract_rest(_source(deadline_seconds=5), "ticket_id", base_url=upstream.url, headers={})
    assert time.monotonic() - started < 2
    assert "source 'api': HTTP 429 on http://127.0.0.1" in str(info.value)


def test_deadline_bounds_a_slow_upstream(upstream):
    """Expect a hanging upstream to fail once the wall-clock deadline is spent, not after its timeout."""

    def hang_on_page_2(h):
        if query(h)["page"] == "2":
            time.sleep(3)
        serve_pages(h)

    upstream.default = hang_on_page_2
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"source 'api': .*page=2&per_page=5.*deadline of 1s"):
        extract_rest(
            _source(page_size=5, deadline_seconds=1, timeout_seconds=5),
            "ticket_id",
            base_url=upstream.url,
            headers={},
        )
    assert time.monotonic() - started < 2


# ---------------------------------------------------------------------------------- bad answers


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (
            lambda h: send(h, 200, raw=b"<html>maintenance</html>", content_type="text/html"),
            "did not return valid JSON (text/html)",
        ),
        (
            lambda h: send(h, 200, raw=b'{"data": [{"ticket_id": "W-1"', content_type="application/json"),
            "did not return valid JSON",
        ),
        (lambda h: send(h, 200, {"items": []}), "has no 'data' (missing key 'data')"),
        (lambda h: send(h, 200, {"data": {"not": "a list"}}), "'data' in http://127.0.0.1"),
        (lambda h: send(h, 200, {"data": ["just a string"]}), "record 0 of"),
        (lambda h: send(h, 404, {"error": "nope"}), "HTTP 404 on http://127.0.0.1"),
    ],
)
def test_bad_responses_fail_clearly(upstream, response, expected):
    """Expect malformed or unexpected responses to fail with a message naming the source and URL."""
    upstream.script.append(response)
    with pytest.raises(SourceError) as info:
        extract_rest(_source(), "ticket_id", base_url=upstream.url, headers={})
    assert "source 'api'" in str(info.value)
    assert expected in str(info.value)
    assert "page=1&per_page=10" in str(info.value)


def test_schema_drift_is_reported_not_fatal(upstream):
    """Expect missing and unexpected fields to be counted in the metadata, not to crash."""
    upstream.script.append(
        lambda h: send(
            h, 200, {"data": [{"ticket_id": "W-1", "body": "a", "extra": 1}, {"ticket_id": "W-2"}]}
        )
    )
    table, meta = extract_rest(_source(page_size=10), "ticket_id", base_url=upstream.url, headers={})
    assert table.num_rows == 2
    assert meta["schema_drift"] == {"unexpected_fields": {"extra": 1}, "missing_fields": {"body": 1}}
    assert table.column("body").to_pylist() == ["a", None]


# ------------------------------------------------------------------------------------- sampling


def test_sampling_is_seeded_and_repeatable(upstream):
    """Expect a fraction sample to keep the keys sample_mask keeps, and a rows sample exactly N, every run."""
    source = _source(page_size=50, sample={"fraction": 0.5, "seed": 7})
    table, meta = extract_rest(source, "ticket_id", base_url=upstream.url, headers={})
    kept = [k for k, keep in zip(KEYS, sample_mask(KEYS, 0.5, 7), strict=True) if keep]
    assert table.column("ticket_id").to_pylist() == kept and 0 < len(kept) < 23
    assert meta["rows_extracted"] == 23 and meta["row_count"] == len(kept)
    assert meta["sample"] == {"fraction": 0.5, "rows": None, "seed": 7}

    by_rows = _source(page_size=50, sample={"rows": 5, "seed": 7})
    first, _ = extract_rest(by_rows, "ticket_id", base_url=upstream.url, headers={})
    second, _ = extract_rest(by_rows, "ticket_id", base_url=upstream.url, headers={})
    assert first.num_rows == 5 and first.equals(second)


# -------------------------------------------------------------------------------------- secrets


def _link_elsewhere(foreign_url: str) -> Handler:
    return lambda h: send(h, 200, {"data": RECORDS[:10]}, headers={"Link": f'<{foreign_url}/x>; rel="next"'})


@pytest.mark.parametrize(
    "failure",
    ["unauthorised", "retries-exhausted", "budget", "html", "foreign-link", "foreign-redirect"],
)
def test_token_never_in_errors_or_logs(upstream, foreign, caplog, failure):
    """Expect neither the token nor credentials in the URL to reach an error message or any log line."""
    caplog.set_level(logging.DEBUG)
    pagination: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    if failure == "unauthorised":
        upstream.script.append(lambda h: send(h, 401, {"error": f"bad token {h.headers.get('X-API-Key')}"}))
    elif failure == "retries-exhausted":
        upstream.default = lambda h: send(h, 503, {}, headers={"Retry-After": "0"})
    elif failure == "budget":
        fields["max_requests"] = 1
    elif failure == "html":
        upstream.script.append(lambda h: send(h, 200, raw=TOKEN.encode(), content_type="text/html"))
    elif failure == "foreign-link":
        upstream.default = _link_elsewhere(foreign.url)
        pagination["type"] = "link"
    else:
        upstream.script.append(lambda h: send(h, 302, {}, headers={"Location": f"{foreign.url}/v1/tickets"}))
    base_url = upstream.url.replace("http://", f"http://svc:{TOKEN}@")
    headers = {"X-API-Key": TOKEN}
    with pytest.raises(SourceError) as info:
        extract_rest(
            _source(pagination=pagination, **fields), "ticket_id", base_url=base_url, headers=headers
        )
    message = str(info.value)
    assert "source 'api'" in message and "http://***@127.0.0.1" in message
    assert TOKEN not in message and TOKEN not in caplog.text
    assert upstream.headers and all(h.get("X-API-Key") == TOKEN for h in upstream.headers)
    assert foreign.requests == []


def test_token_never_in_metadata_or_logs_on_success(upstream, caplog):
    """Expect a successful, retried extraction to keep the token out of the metadata and the logs."""
    caplog.set_level(logging.DEBUG)
    upstream.script.append(lambda h: send(h, 429, {}, headers={"Retry-After": "0"}))
    base_url = upstream.url.replace("http://", f"http://svc:{TOKEN}@")
    _, meta = extract_rest(
        _source(), "ticket_id", base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert meta["retries"] == 1 and "retry 1 of 4" in caplog.text
    assert TOKEN not in json.dumps(meta) and TOKEN not in caplog.text


def test_demo_api_auth_and_token_never_in_errors():
    """Expect the demo API to serve with the right token and a 401 error that hides the token."""
    records = [{"ticket_id": f"A-{i}", "body": "x"} for i in range(7)]
    server, url = serve_in_thread(records, TOKEN)
    try:
        table, _ = extract_rest(
            _source(page_size=5), "ticket_id", base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert table.num_rows == 7
        with pytest.raises(SourceError, match="HTTP 401 .* check the connection's credentials") as info:
            extract_rest(
                _source(), "ticket_id", base_url=url, headers={"Authorization": "Bearer wrong-secret-123"}
            )
        assert "wrong-secret-123" not in str(info.value)
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    ("extra", "header", "expected"),
    [
        ({}, "Authorization", "Bearer s3cr3t-token"),
        ({"auth": "api_key", "header": "X-Api-Key"}, "X-Api-Key", "s3cr3t-token"),
        (
            {"auth": "basic"},
            "Authorization",
            "Basic " + __import__("base64").b64encode(b"svc:s3cr3t-token").decode(),
        ),
    ],
)
def test_auth_from_the_airflow_connection(upstream, monkeypatch, extra, header, expected):
    """Expect the connection's secret to be sent as bearer, API-key header or basic auth, per its extra."""
    port = upstream.url.rsplit(":", 1)[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_IT_REST_AUTH",
        json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": int(port),
                "schema": "http",
                "login": "svc",
                "password": "s3cr3t-token",
                "extra": extra,
            }
        ),
    )
    source = _source(page_size=50).model_copy(update={"conn_id": "it_rest_auth"})
    table, _ = extract_rest(source, "ticket_id")
    assert table.num_rows == 23
    assert upstream.headers[0][header] == expected


def test_a_record_that_is_not_utf8_is_noted_for_quarantine(upstream):
    """Expect a page whose bytes are not all UTF-8 to be read, with U+FFFD in place of the bad bytes
    and that record listed by key and column for validation to quarantine; the others as sent.
    Before, requests guessed a charset for the whole page and nothing was noted."""
    from llmops.ingest.common import UNDECODABLE

    page = b'{"data": [{"ticket_id": "W-1", "body": "Gr\xc3\xbc\xc3\x9fe"}, {"ticket_id": "W-2", "body": "x \xff y"}]}'
    upstream.default = lambda h: send(h, 200, raw=page)
    table, meta = extract_rest(_source(page_size=10), order_by="ticket_id", base_url=upstream.url)
    assert table.to_pylist() == [
        {"ticket_id": "W-1", "body": "Grüße"},
        {"ticket_id": "W-2", "body": "x \ufffd y"},
    ]
    assert meta[UNDECODABLE] == [{"key": "W-2", "columns": ["body"]}]
