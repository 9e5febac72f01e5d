"""Tell downstream systems about model events: signed webhooks, and MLflow registry webhooks.

**Airflow side (the record of truth).** On ``promoted``, ``rolled_back``, ``gate_failed`` and
``deployment_failed`` the pipeline posts one JSON document to the HTTP connection named by
``integrations.webhook_conn_id`` with `llmops.monitoring.alerts.WebhookNotifier` (HMAC-SHA256 of
the raw body with the connection's password in ``X-Llmops-Signature: sha256=<hex>``; retries with
backoff on connection errors, 429 and 5xx). The payload: ``event`` (``llmops.model.<event>``),
``event_id`` (stable per event and run: a receiver dedupes retried deliveries with it),
``pipeline``, ``model``, ``version``, ``alias``, ``previous_version``, ``metrics``, ``gates``,
``deployments``, ``report``, ``run_id``, ``text`` and ``sent_at``. Each delivery is recorded as
``integration.notified`` in the ledger; an event already delivered for a run is not sent again.

**MLflow side (optional, ``integrations.mlflow_registry_webhook``).** MLflow 3.17's registry
webhooks fire from the tracking *server* on ``model_version.created`` and
``model_version_alias.created`` / ``.deleted`` (so promotions and rollbacks, which move aliases),
signed their own way (``X-MLflow-Signature: v1,<base64 HMAC-SHA256 of
"<delivery id>.<timestamp>.<body>">``). They do not cover gate failures or deployments, carry
no metrics or report link, are not sent when clients write to the registry database directly (the
embedded SQLite default), and are delivered fire-and-forget (no delivery record). So they
complement the Airflow webhook; `ensure_mlflow_webhook` registers one at the same URL and secret.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmops.specs import PipelineSpec

log = logging.getLogger(__name__)

EVENT_PREFIX = "llmops.model."
MLFLOW_EVENTS = ("model_version.created", "model_version_alias.created", "model_version_alias.deleted")


def event_id(pipeline: str, event: str, subject: str, run_id: str) -> str:
    """The same id for the same event of the same run, whichever attempt delivers it."""
    return hashlib.sha256(f"{pipeline}\x1f{event}\x1f{subject}\x1f{run_id}".encode()).hexdigest()[:32]


def event_text(event: str, fields: dict[str, Any]) -> str:
    model = f"{fields.get('model')} v{fields.get('version')}"
    if event == "promoted":
        was = fields.get("previous_version")
        return f"[llmops] {model} is now champion" + (f" (was v{was})" if was else " (first champion)")
    if event == "rolled_back":
        return f"[llmops] {fields.get('model')} rolled back to v{fields.get('version')}" + (
            f" (v{fields['rolled_back_version']} withdrawn)" if fields.get("rolled_back_version") else ""
        )
    if event == "gate_failed":
        failed = ", ".join(g["metric"] for g in fields.get("gates") or [] if not g.get("passed"))
        return (
            f"[llmops] {fields.get('pipeline')}: a new model failed its gates ({failed}); champion unchanged"
        )
    if event == "deployment_failed":
        return f"[llmops] {model}: deployment failed ({', '.join(fields.get('failed_targets') or [])})"
    return f"[llmops] {model}: {event}"


def send(spec: PipelineSpec, event: str, subject: str, run_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Deliver one event to the spec's webhook (when configured and the event is wanted), once per run.

    Returns what happened: ``{"event", "sent": bool, ...}``; raises `WebhookError` when the
    receiver cannot be reached after the notifier's retries (the task's retries try again; the
    ``event_id`` lets the receiver drop duplicates).
    """
    from llmops.ledger import get_ledger, record
    from llmops.ledger.events import IntegrationNotified
    from llmops.monitoring.alerts import WebhookNotifier

    integrations = spec.integrations
    if not integrations.webhook_conn_id:
        return {"event": event, "sent": False, "reason": "no integrations.webhook_conn_id"}
    if event not in integrations.events:
        return {"event": event, "sent": False, "reason": "event not in integrations.events"}
    eid = event_id(spec.name, event, subject, run_id)
    for previous in get_ledger().records(
        pipeline=spec.name, event_type=IntegrationNotified.name, run_id=run_id
    ):
        if previous.payload.get("event_id") == eid:
            return {"event": event, "sent": False, "reason": "already delivered", "event_id": eid}
    payload_fields = {"event": EVENT_PREFIX + event, "event_id": eid, "pipeline": spec.name, **fields}
    notifier = WebhookNotifier(
        integrations.webhook_conn_id, text=event_text(event, payload_fields), fields=payload_fields
    )
    delivery = notifier.send(notifier.build_payload())
    record(
        spec,
        IntegrationNotified(
            event=event,
            event_id=eid,
            conn_id=integrations.webhook_conn_id,
            origin=delivery.get("origin"),
            http_status=delivery.get("status"),
            attempts=delivery.get("attempts"),
            model=fields.get("model"),
            version=fields.get("version"),
        ),
        f"{subject}/{event}",
        run_id,
    )
    return {"event": event, "sent": True, "event_id": eid, **delivery}


# -- MLflow registry webhooks ---------------------------------------------------------------------


def mlflow_webhook_name(conn_id: str) -> str:
    return f"llmops-{conn_id}"


def ensure_mlflow_webhook(spec: PipelineSpec) -> dict[str, Any]:
    """Register (or update) an MLflow registry webhook at the integration connection's URL.

    One webhook per connection (registry webhooks are not per model: receivers filter on
    ``data.name``). Skipped, with the reason, when it is off or MLflow is not a tracking server.
    The tracking server must allow the URL: https and a public address, unless it runs with
    ``MLFLOW_WEBHOOK_ALLOWED_SCHEMES`` / ``MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS``; and it needs a fixed
    ``MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY``, or stored secrets cannot be read after a restart.
    """
    from llmops.connections import get_connection
    from llmops.monitoring.alerts import webhook_url
    from llmops.registry import mlflow_registry

    integrations = spec.integrations
    if not integrations.mlflow_registry_webhook or not integrations.webhook_conn_id:
        return {"registered": False, "reason": "integrations.mlflow_registry_webhook is off"}
    uri = mlflow_registry.configure()
    if not uri.startswith(("http://", "https://")):
        return {
            "registered": False,
            "reason": "MLflow registry webhooks are delivered by a tracking server; this deployment "
            "writes to the registry database directly",
        }
    from mlflow import MlflowClient

    conn = get_connection(integrations.webhook_conn_id)
    url = webhook_url(conn)
    name = mlflow_webhook_name(integrations.webhook_conn_id)
    client = MlflowClient()
    existing = None
    page_token = None
    while True:
        page = client.list_webhooks(max_results=100, page_token=page_token)
        existing = next((w for w in page if w.name == name), existing)
        page_token = page.token
        if existing is not None or not page_token:
            break
    events = list(MLFLOW_EVENTS)
    secret = conn.password or None
    if existing is None:
        hook = client.create_webhook(
            name=name,
            url=url,
            events=events,  # type: ignore[arg-type]
            description=f"llmops: registry events for the receiver of connection {integrations.webhook_conn_id}",
            secret=secret,
        )
        action = "created"
    else:
        hook = client.update_webhook(existing.webhook_id, url=url, events=events, secret=secret)  # type: ignore[arg-type]
        action = "updated"
    log.info("MLflow registry webhook %s %s (%s)", name, action, ", ".join(events))
    return {
        "registered": True,
        "action": action,
        "webhook_id": hook.webhook_id,
        "name": name,
        "events": events,
    }


def verify_mlflow_signature(body: bytes, secret: str, headers: dict[str, str]) -> bool:
    """What a receiver of MLflow registry webhooks checks (MLflow's v1 scheme, Standard Webhooks)."""
    import base64
    import hmac

    delivery = headers.get("X-MLflow-Delivery-Id") or ""
    timestamp = headers.get("X-MLflow-Timestamp") or ""
    signature = headers.get("X-MLflow-Signature") or ""
    signed = f"{delivery}.{timestamp}.{body.decode('utf-8')}".encode()
    expected = "v1," + base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()
    return bool(delivery and timestamp) and hmac.compare_digest(expected, signature)
