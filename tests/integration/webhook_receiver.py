"""A downstream system's webhook endpoint on 127.0.0.1, for the integration tests.

It verifies every request's signature the way a real receiver must, over the raw body bytes:
llmops' ``X-Llmops-Signature: sha256=<hex>`` and MLflow's ``X-MLflow-Signature: v1,<base64>``.
Requests with a bad or missing signature are refused with 401 and kept apart.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from llmops.deployment.webhooks import verify_mlflow_signature
from llmops.monitoring.alerts import SIGNATURE_HEADER, verify


class WebhookReceiver:
    def __init__(self, secret: str, fail_first: int = 0) -> None:
        self.secret = secret
        self.llmops: list[dict[str, Any]] = []
        self.mlflow: list[dict[str, Any]] = []
        self.refused: list[dict[str, str]] = []
        self.attempts = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k: v for k, v in self.headers.items()}
                with receiver.lock:
                    receiver.attempts += 1
                    attempt = receiver.attempts
                    if SIGNATURE_HEADER in headers and verify(
                        body, receiver.secret, headers[SIGNATURE_HEADER]
                    ):
                        code = 503 if attempt <= fail_first else 200
                        if code == 200:
                            receiver.llmops.append(json.loads(body))
                    elif "X-MLflow-Signature" in headers and verify_mlflow_signature(
                        body, receiver.secret, headers
                    ):
                        code = 200
                        receiver.mlflow.append(json.loads(body))
                    else:
                        code = 401
                        receiver.refused.append(headers)
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/llmops"

    def connection(self) -> str:
        """The Airflow HTTP connection (JSON) for this receiver: URL, and the secret as password."""
        return json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": self.port,
                "schema": "http",
                "password": self.secret,
                "extra": {"endpoint": "/hooks/llmops"},
            }
        )

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until some MLflow deliveries match (they are sent asynchronously by the server)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [m for m in self.mlflow if predicate(m)]
            if found:
                return found
            time.sleep(0.2)
        return []

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
