"""Alerts to a webhook (Slack, Teams, or any HTTP receiver) named by an Airflow HTTP connection.

`WebhookNotifier` is an Airflow notifier: pass it as ``on_failure_callback`` (or any callback),
or call it from a task with a custom text and fields. It POSTs one JSON document:

- ``text``: one human-readable line, which Slack and Teams incoming webhooks display as is;
- structured fields for receivers that parse them: ``event``, ``pipeline``, ``model``,
  ``version``, ``breaches``, ``metrics``, ``report``, and the Airflow ``dag_id`` / ``run_id`` /
  ``task_id`` / ``log_url`` when known, plus ``sent_at``.

The connection gives the URL: ``host`` (a full URL, or a host name with ``schema`` and ``port``)
and optionally ``extra.endpoint`` (a path). Its ``password``, when set, is the signing secret: the
body is signed with HMAC-SHA256 and sent as ``X-Llmops-Signature: sha256=<hex>`` (verify it over
the raw body bytes; ``sent_at`` in the signed body lets a receiver refuse replays).

Delivery uses short timeouts and a few retries with exponential backoff on connection errors,
timeouts, 429 and 5xx; other answers fail at once (a 4xx will not fix itself). Messages and logs
name the connection id and the URL's origin (scheme, host, port) only: a webhook's path often
*is* its secret (Slack), and the signing secret is never logged. The alert itself is always
logged, whether or not it could be delivered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk import BaseNotifier

from llmops.errors import PermanentError

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Llmops-Signature"
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class WebhookError(RuntimeError):
    """The alert could not be delivered after its retries (receiver down, timing out, 5xx)."""


class WebhookRejected(WebhookError, PermanentError):
    """The receiver refused the alert (a 4xx other than 429, or a redirect): retrying cannot help."""


def sign(body: bytes, secret: str) -> str:
    """The signature header value of a body: ``sha256=<hex HMAC-SHA256 of the raw bytes>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, header: str | None) -> bool:
    """What a receiver does: compare the header with the body's signature in constant time."""
    return bool(header) and hmac.compare_digest(sign(body, secret), str(header))


def origin(url: str) -> str:
    """scheme://host[:port] of a URL: safe to log (no credentials, path or query)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def webhook_url(conn: Any) -> str:
    """The URL to POST to: the connection's host (or scheme://host:port) plus extra.endpoint."""
    from llmops.connections import ConnectionConfigError, http_base_url

    base = http_base_url(conn)
    endpoint = str((conn.extra_dejson or {}).get("endpoint") or "")
    url = base.rstrip("/") + "/" + endpoint.lstrip("/") if endpoint else base
    if urlsplit(url).scheme not in ("http", "https"):
        raise ConnectionConfigError(f"connection '{conn.conn_id}': a webhook URL must be http(s)")
    return url


def _context_fields(context: Mapping[str, Any]) -> dict[str, Any]:
    """What an Airflow callback context tells about the run (ids and a link; never an error text)."""
    fields: dict[str, Any] = {}
    ti = context.get("ti") or context.get("task_instance")
    dag = context.get("dag")
    dag_run = context.get("dag_run")
    dag_id = getattr(ti, "dag_id", None) or getattr(dag, "dag_id", None)
    if dag_id:
        fields["dag_id"] = dag_id
    run_id = getattr(dag_run, "run_id", None) or getattr(ti, "run_id", None) or context.get("run_id")
    if run_id:
        fields["run_id"] = run_id
    if getattr(ti, "task_id", None):
        fields["task_id"] = ti.task_id
    try:
        log_url = getattr(ti, "log_url", None)
    except Exception:  # a property that needs configuration: the link is optional
        log_url = None
    if isinstance(log_url, str):
        fields["log_url"] = log_url
    error = context.get("exception")
    if isinstance(error, BaseException):
        root = error.__cause__ or error
        fields["error_type"] = type(root).__name__  # the type only: messages can quote data
    return fields


class WebhookNotifier(BaseNotifier):
    """POST an alert as JSON to the webhook of an Airflow HTTP connection (signed, retried).

    :param conn_id: the HTTP connection (host or full URL; password: optional signing secret).
    :param text: the message line (templated); default: one describing the callback's event.
    :param fields: structured fields merged into the payload (pipeline, model, version, ...).
    :param timeout: seconds per request (read); connecting gets at most 5 of them.
    :param retries: further attempts after a retryable failure.
    :param backoff: first wait between attempts in seconds, doubled each time (capped at 30).
    :param deadline: give up retrying once this many seconds have passed since the first attempt.
    """

    template_fields = ("text",)

    def __init__(
        self,
        conn_id: str,
        *,
        text: str | None = None,
        fields: dict[str, Any] | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 1.0,
        deadline: float = 60.0,
        context: Any = None,
    ) -> None:
        super().__init__(context)
        self.conn_id = conn_id
        self.text = text
        self.fields = dict(fields or {})
        self.timeout = float(timeout)
        self.retries = max(int(retries), 0)
        self.backoff = max(float(backoff), 0.0)
        self.deadline = float(deadline)
        self.last_delivery: dict[str, Any] | None = None

    def build_payload(self, context: Mapping[str, Any] | None = None) -> dict[str, Any]:
        context = context or {}
        payload: dict[str, Any] = {"source": "llmops", "event": "airflow.callback"}
        payload.update(_context_fields(context))
        payload.update(self.fields)
        text = self.text
        if not text:
            where = ".".join(str(payload[k]) for k in ("dag_id", "task_id") if payload.get(k)) or "llmops"
            what = f"failed ({payload['error_type']})" if payload.get("error_type") else "needs attention"
            text = f"[llmops] {where} {what}" + (
                f" in run {payload['run_id']}" if payload.get("run_id") else ""
            )
        payload["text"] = text
        payload["sent_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        return payload

    def notify(self, context: Mapping[str, Any]) -> None:
        self.send(self.build_payload(context))

    def send(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Log the alert, then deliver it; returns {status, attempts, origin}; raises WebhookError."""
        log.warning(
            "ALERT %s | %s",
            payload.get("text"),
            json.dumps({k: v for k, v in payload.items() if k != "text"}, sort_keys=True, default=str),
        )
        from llmops.connections import get_connection

        conn = get_connection(self.conn_id)
        url = webhook_url(conn)
        shown = f"webhook '{self.conn_id}' ({origin(url)})"
        body = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "llmops-alerts"}
        if conn.password:
            headers[SIGNATURE_HEADER] = sign(body, conn.password)
        delivery = self._post(url, body, headers, shown)
        self.last_delivery = delivery
        log.info(
            "alert delivered to %s: HTTP %s after %d attempt(s)",
            shown,
            delivery["status"],
            delivery["attempts"],
        )
        return delivery

    def _post(self, url: str, body: bytes, headers: dict[str, str], shown: str) -> dict[str, Any]:
        import requests

        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = requests.post(
                    url,
                    data=body,
                    headers=headers,
                    timeout=(min(5.0, self.timeout), self.timeout),
                    allow_redirects=False,  # a redirect would send the alert somewhere unreviewed
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                # The exception's text holds the full URL (path included): report its type only.
                why, retryable = type(exc).__name__, True
            else:
                status = response.status_code
                response.close()
                if 200 <= status < 300:
                    return {"status": status, "attempts": attempt, "origin": origin(url)}
                why, retryable = f"HTTP {status}", status in RETRYABLE_STATUS
            elapsed = time.monotonic() - started
            wait = min(30.0, self.backoff * 2 ** (attempt - 1))
            if not retryable or attempt > self.retries or elapsed + wait > self.deadline:
                if not retryable:
                    raise WebhookRejected(f"alert to {shown} was refused: {why} (not retried)") from None
                raise WebhookError(
                    f"alert to {shown} failed after {attempt} attempt(s) in {elapsed:.1f}s: {why}"
                ) from None
            log.warning("alert to %s: %s (attempt %d), retrying in %.1fs", shown, why, attempt, wait)
            time.sleep(wait)
