"""A small JSON REST API on 127.0.0.1 that serves the demo's web-form tickets, page by page.

It behaves like a real upstream: bearer-token auth, page/per_page pagination, a health endpoint.
The demo starts it as a background process; tests run it in a thread.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

log = logging.getLogger(__name__)


def make_server(
    records: list[dict[str, Any]], token: str, host: str = "127.0.0.1", port: int = 0
) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:  # keep request logs quiet and token-free
            log.debug("tickets-api: " + fmt, *args)

        def _send(self, status: int, payload: Any) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            url = urlparse(self.path)
            if url.path == "/healthz":
                self._send(200, {"status": "ok"})
                return
            if url.path != "/v1/tickets":
                self._send(404, {"error": "not found"})
                return
            supplied = self.headers.get("Authorization", "")
            if not hmac.compare_digest(supplied.encode(), f"Bearer {token}".encode()):
                self._send(401, {"error": "invalid or missing bearer token"})
                return
            query = parse_qs(url.query)
            try:
                page = int(query.get("page", ["1"])[0])
                per_page = min(int(query.get("per_page", ["50"])[0]), 500)
            except ValueError:
                self._send(400, {"error": "page and per_page must be integers"})
                return
            if page < 1 or per_page < 1:
                self._send(400, {"error": "page and per_page must be positive"})
                return
            start = (page - 1) * per_page
            chunk = records[start : start + per_page]
            self._send(200, {"data": chunk, "page": page, "per_page": per_page, "total": len(records)})

    return ThreadingHTTPServer((host, port), Handler)


def serve_in_thread(records: list[dict[str, Any]], token: str) -> tuple[ThreadingHTTPServer, str]:
    server = make_server(records, token)
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="tickets-api")
    thread.start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="JSON list of ticket records")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--token-env", default="DEMO_TICKETS_API_TOKEN", help="env var holding the bearer token"
    )
    args = parser.parse_args(argv)
    token = os.environ.get(args.token_env)
    if not token:
        raise SystemExit(f"set {args.token_env} to the bearer token the API should accept")
    records = json.loads(args.data.read_text(encoding="utf-8"))
    server = make_server(records, token, port=args.port)
    logging.basicConfig(level=logging.INFO)
    log.info("tickets API on http://127.0.0.1:%d/v1/tickets (%d records)", args.port, len(records))
    server.serve_forever()


if __name__ == "__main__":
    main()
