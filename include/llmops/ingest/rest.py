"""Extract JSON records from a paginated REST API named by an Airflow HTTP connection.

Transient failures (429, 5xx, timeouts) are retried with backoff, honouring Retry-After; a
response that is not the JSON we expect fails with the page URL (never the token) in the message.
Fields outside the source's columns, and columns missing from records, are reported as schema
drift instead of crashing the run.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from llmops.connections import get_connection, http_auth_headers, http_base_url
from llmops.ingest.sql import SourceError, _as_text

if TYPE_CHECKING:
    import pyarrow as pa

    from llmops.specs.schema import RestSource

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_ATTEMPTS = 5
MAX_BACKOFF_SECONDS = 30.0


def _records_at(payload: Any, path: str, url: str, source: str) -> list[dict[str, Any]]:
    node = payload
    for part in [p for p in path.split(".") if p]:
        if not isinstance(node, dict) or part not in node:
            raise SourceError(f"source '{source}': response of {url} has no '{path}' (missing key '{part}')")
        node = node[part]
    if not isinstance(node, list):
        raise SourceError(f"source '{source}': '{path}' in {url} is {type(node).__name__}, expected a list")
    for i, record in enumerate(node):
        if not isinstance(record, dict):
            raise SourceError(
                f"source '{source}': record {i} of {url} is {type(record).__name__}, expected an object"
            )
    return node


def _get_json(session: Any, url: str, params: dict[str, Any], timeout: float, source: str) -> Any:
    import requests

    shown = f"{url}?{'&'.join(f'{k}={v}' for k, v in params.items())}"
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            response = session.get(url, params=params, timeout=timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            if attempt == MAX_ATTEMPTS:
                raise SourceError(
                    f"source '{source}': {shown} failed after {attempt} attempts: {type(exc).__name__}"
                ) from None
            delay = min(2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
            log.warning("source %s: %s on %s; retrying in %.1fs", source, type(exc).__name__, shown, delay)
            time.sleep(delay)
            continue
        if response.status_code in RETRY_STATUSES and attempt < MAX_ATTEMPTS:
            retry_after = response.headers.get("Retry-After")
            try:
                delay = min(float(retry_after), MAX_BACKOFF_SECONDS) if retry_after else 2 ** (attempt - 1)
            except ValueError:
                delay = 2 ** (attempt - 1)
            log.warning(
                "source %s: HTTP %s on %s; retrying in %.1fs", source, response.status_code, shown, delay
            )
            time.sleep(delay)
            continue
        if response.status_code in (401, 403):
            raise SourceError(
                f"source '{source}': HTTP {response.status_code} on {shown}: check the connection's credentials"
            )
        if response.status_code >= 400:
            raise SourceError(f"source '{source}': HTTP {response.status_code} on {shown}")
        try:
            return response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "unknown content type")
            raise SourceError(f"source '{source}': {shown} did not return valid JSON ({kind})") from None
    raise SourceError(f"source '{source}': {shown} failed after {MAX_ATTEMPTS} attempts")


def extract_rest(
    source: RestSource, order_by: str, base_url: str | None = None, headers: dict[str, str] | None = None
) -> tuple[pa.Table, dict[str, Any]]:
    import pyarrow as pa
    import requests

    if base_url is None:
        conn = get_connection(source.conn_id)
        base_url = http_base_url(conn)
        headers = http_auth_headers(conn)
    url = f"{base_url.rstrip('/')}{source.endpoint}"
    pag = source.pagination
    records: list[dict[str, Any]] = []
    pages = 0
    with requests.Session() as session:
        session.headers.update({"Accept": "application/json", **(headers or {})})
        for page in range(1, pag.max_pages + 1):
            payload = _get_json(
                session,
                url,
                {pag.page_param: page, pag.size_param: pag.page_size},
                source.timeout_seconds,
                source.name,
            )
            batch = _records_at(payload, source.records_path, url, source.name)
            pages += 1
            records.extend(batch)
            if len(batch) < pag.page_size:
                break
        else:
            raise SourceError(f"source '{source.name}': more than max_pages={pag.max_pages} pages at {url}")

    wanted = list(source.columns)
    unexpected: Counter[str] = Counter()
    missing: Counter[str] = Counter()
    for record in records:
        unexpected.update(k for k in record if k not in wanted)
        missing.update(c for c in wanted if c not in record)
    records.sort(key=lambda r: _as_text(r.get(order_by)) or "")
    arrays = [pa.array([_as_text(r.get(c)) for r in records], type=pa.string()) for c in wanted]
    table = pa.Table.from_arrays(arrays, names=wanted)
    drift = {"unexpected_fields": dict(unexpected), "missing_fields": dict(missing)}
    if unexpected or missing:
        log.warning("source %s: schema drift %s", source.name, drift)
    meta = {
        "kind": "rest",
        "url": url,
        "pages": pages,
        "columns": wanted,
        "row_count": table.num_rows,
        "schema_drift": drift,
    }
    log.info("source %s: %d records from %d pages of %s", source.name, table.num_rows, pages, url)
    return table, meta
