"""REST extraction against a real HTTP server on 127.0.0.1 that misbehaves on command."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlparse

import pytest

from llmops.demo.tickets_api import serve_in_thread
from llmops.ingest.rest import extract_rest
from llmops.ingest.sql import SourceError
from llmops.specs.schema import RestSource

if TYPE_CHECKING:
    from collections.abc import Callable

TOKEN = "test-token-7f3a9c"
GOVERNANCE = {"data_owner": "o", "purposes": ["p"], "lawful_basis": "contract"}
RECORDS = [{"ticket_id": f"W-{i:03d}", "body": f"text {i}"} for i in range(1, 24)]


def _source(page_size: int = 10, columns=("ticket_id", "body"), records_path: str = "data") -> RestSource:
    return RestSource(
        kind="rest",
        name="api",
        conn_id="unused",
        endpoint="/v1/tickets",
        records_path=records_path,
        columns=list(columns),
        pagination={"page_size": page_size},
        timeout_seconds=5,
        governance=GOVERNANCE,
    )


class Upstream:
    """A scriptable upstream: each request is answered by the next scripted response, if any."""

    def __init__(self) -> None:
        self.script: list[Callable[[BaseHTTPRequestHandler], None]] = []
        self.requests: list[tuple[float, str]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                upstream.requests.append((time.monotonic(), self.path))
                if upstream.script:
                    upstream.script.pop(0)(self)
                    return
                query = parse_qs(urlparse(self.path).query)
                page, size = int(query["page"][0]), int(query["per_page"][0])
                send(self, 200, {"data": RECORDS[(page - 1) * size : page * size]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


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


@pytest.fixture
def upstream():
    up = Upstream()
    yield up
    up.server.shutdown()


def test_paginates_until_short_page(upstream):
    """Expect all records across pages, sorted by key, and the page count recorded."""
    table, meta = extract_rest(_source(page_size=10), "ticket_id", base_url=upstream.url, headers={})
    assert table.num_rows == 23
    assert table.column("ticket_id").to_pylist() == sorted(r["ticket_id"] for r in RECORDS)
    assert meta["pages"] == 3 and len(upstream.requests) == 3


def test_retry_after_is_honoured(upstream):
    """Expect a 429 with Retry-After to be retried after the advertised delay, then succeed."""
    upstream.script.append(lambda h: send(h, 429, {"error": "slow down"}, headers={"Retry-After": "1"}))
    table, _ = extract_rest(_source(page_size=50), "ticket_id", base_url=upstream.url, headers={})
    assert table.num_rows == 23
    (t0, _), (t1, _) = upstream.requests[:2]
    assert t1 - t0 >= 0.9


def test_server_errors_are_retried(upstream):
    upstream.script.extend(
        [lambda h: send(h, 500, {"error": "boom"}), lambda h: send(h, 503, {"error": "busy"})]
    )
    table, _ = extract_rest(_source(page_size=50), "ticket_id", base_url=upstream.url, headers={})
    assert table.num_rows == 23 and len(upstream.requests) == 3


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
        (lambda h: send(h, 404, {"error": "nope"}), "HTTP 404"),
    ],
)
def test_bad_responses_fail_clearly(upstream, response, expected):
    """Expect malformed or unexpected responses to fail with a message naming the source and URL."""
    upstream.script.append(response)
    with pytest.raises(SourceError) as info:
        extract_rest(_source(), "ticket_id", base_url=upstream.url, headers={})
    assert "source 'api'" in str(info.value)
    assert expected in str(info.value)


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
