"""Extract JSON records from a paginated REST API named by an Airflow HTTP connection.

Pagination follows the spec's style (page number, offset, cursor, RFC 8288 Link header, or a
single request). Every extraction runs under two budgets, a request count (retries included) and
a wall-clock deadline, so a misbehaving upstream fails the task clearly instead of wedging a worker.

Transient failures (429, 5xx, connection errors, timeouts) are retried with capped exponential
backoff, honouring Retry-After (seconds or HTTP-date). The credentials only ever go to the base
URL's scheme, host and port: a next link or redirect elsewhere is refused. Error messages and log
lines name the source and the URL with its query, never a header or a secret. Fields outside the
source's columns, and columns missing from records, are reported as schema drift, not a crash.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import math
import time
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

from llmops.connections import get_connection, http_auth_headers, http_base_url
from llmops.ingest.common import UNDECODABLE, SourceError, as_text, sample_mask

if TYPE_CHECKING:
    import pyarrow as pa
    import requests

    from llmops.specs.schema import RestSource, Sampling

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_ATTEMPTS = 5  # per request: the first try and at most four retries
MAX_REDIRECTS = 5
BACKOFF_BASE_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int | None]


def _redact(url: str) -> str:
    """The URL as it may appear in messages: any user:password@ in it replaced."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def _origin(url: str) -> Origin:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: never equal to a real origin
        return scheme, "", -1
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme)


def _show_origin(origin: Origin) -> str:
    scheme, host, port = origin
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def _with_query(url: str, params: dict[str, Any]) -> str:
    """Append params to the URL's query; the result is exactly what is requested and reported."""
    if not params:
        return url
    parts = urlsplit(url)
    extra = urlencode(params)
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra, fragment=""))


def _param_text(value: Any) -> str:
    """Query values as APIs expect them: booleans lower case, not Python's True/False."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _path_parts(path: str) -> list[str]:
    return [p for p in path.split(".") if p]


def _records_at(payload: Any, path: str, url: str, source: str) -> list[dict[str, Any]]:
    """The list of records at a dotted path; '' or '.' is the body itself."""
    node = payload
    parts = _path_parts(path)
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            raise SourceError(f"source '{source}': response of {url} has no '{path}' (missing key '{part}')")
        node = node[part]
    where = f"'{path}' in {url}" if parts else f"the body of {url}"
    if not isinstance(node, list):
        raise SourceError(f"source '{source}': {where} is {type(node).__name__}, expected a list")
    for i, record in enumerate(node):
        if not isinstance(record, dict):
            raise SourceError(
                f"source '{source}': record {i} of {url} is {type(record).__name__}, expected an object"
            )
    return node


def _has_path(payload: Any, path: str) -> bool:
    node = payload
    for part in _path_parts(path):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _cursor_at(payload: Any, path: str, url: str, source: str) -> str | None:
    """The next cursor, or None when it is missing, null or empty (the last page)."""
    node = payload
    for part in _path_parts(path):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if node is None or node == "":
        return None
    if isinstance(node, bool) or not isinstance(node, str | int | float):
        raise SourceError(
            f"source '{source}': cursor '{path}' in {url} is {type(node).__name__}, expected a string or number"
        )
    return str(node)


def _next_link(response: requests.Response, request_url: str) -> str | None:
    """The absolute URL of the RFC 8288 rel="next" link, if the response has one."""
    from requests.utils import parse_header_links

    header = response.headers.get("Link")
    if not header:
        return None
    for link in parse_header_links(header):
        rels = " ".join(str(v) for k, v in link.items() if k.lower() == "rel").lower().split()
        if "next" in rels and link.get("url"):
            return urljoin(request_url, link["url"])
    return None


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as a delay: delta-seconds or an HTTP-date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _sample_rank(key: str | None, seed: int) -> int:
    """The same seeded hash as `sample_mask`, so a rows sample is the head of a fraction sample."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest(), "big")


def _sample(records: list[dict[str, Any]], key: str, sampling: Sampling) -> list[dict[str, Any]]:
    """A seeded, repeatable sample: the same records every run for the same seed and source."""
    keys = [as_text(r.get(key)) for r in records]
    if sampling.fraction is not None:
        mask = sample_mask(keys, sampling.fraction, sampling.seed)
        return [r for r, keep in zip(records, mask, strict=True) if keep]
    ranked = sorted(range(len(records)), key=lambda i: (_sample_rank(keys[i], sampling.seed), i))
    return [records[i] for i in sorted(ranked[: sampling.rows])]


class _Client:
    """One extraction's HTTP session and its budgets: requests made, retries, wall clock."""

    def __init__(self, session: requests.Session, source: RestSource, base_url: str) -> None:
        self.session = session
        self.source = source
        self.name = source.name
        self.origin = _origin(base_url)
        self.started = time.monotonic()
        self.requests = 0
        self.retries = 0
        self.pages = 0
        self.undecodable_pages = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def check_origin(self, url: str, what: str) -> None:
        """Refuse a URL on another scheme/host/port: the session would send it the credentials."""
        target = _origin(url)
        if target != self.origin:
            raise SourceError(
                f"source '{self.name}': {what} to {_show_origin(target)}, not {_show_origin(self.origin)}; "
                f"refusing to send the credentials to another host"
            )

    def _spend_request(self, shown: str) -> float:
        """Count one request against both budgets; returns the timeout it may use."""
        if self.requests >= self.source.max_requests:
            raise SourceError(
                f"source '{self.name}': request budget of {self.source.max_requests} exhausted after "
                f"{self.pages} pages ({self.retries} retries; next request was {shown})"
            )
        remaining = self.source.deadline_seconds - self.elapsed()
        if remaining <= 0:
            raise SourceError(
                f"source '{self.name}': deadline of {self.source.deadline_seconds:g}s exceeded after "
                f"{self.pages} pages and {self.requests} requests (next request was {shown})"
            )
        self.requests += 1
        return min(self.source.timeout_seconds, remaining)

    def _retry_or_fail(self, attempt: int, why: str, response: requests.Response | None, shown: str) -> None:
        """Sleep before the next attempt, or fail when attempts or the deadline would run out."""
        if attempt >= MAX_ATTEMPTS:
            raise SourceError(f"source '{self.name}': {shown} failed after {attempt} attempts ({why})")
        delay = _retry_after_seconds(response.headers.get("Retry-After")) if response is not None else None
        advertised = delay is not None
        if delay is None:
            delay = min(BACKOFF_BASE_SECONDS * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
        elapsed = self.elapsed()
        if elapsed + delay > self.source.deadline_seconds:
            asked = "Retry-After asks for" if advertised else "backoff would wait"
            raise SourceError(
                f"source '{self.name}': {why} on {shown}; {asked} {delay:.1f}s, which would pass the "
                f"deadline of {self.source.deadline_seconds:g}s ({elapsed:.1f}s used, {self.pages} pages)"
            )
        log.warning(
            "source %s: %s on %s; retry %d of %d in %.1fs",
            self.name,
            why,
            shown,
            attempt,
            MAX_ATTEMPTS - 1,
            delay,
        )
        self.retries += 1
        time.sleep(delay)

    def json_body(self, response: requests.Response) -> Any:
        """The body as JSON. UTF-8 (JSON's encoding, RFC 8259) is decoded here: bytes that are not
        UTF-8 become U+FFFD and the page is counted, so its records are quarantined, where requests
        would silently guess another charset or replace them."""
        import json

        if response.encoding and response.encoding.lower().replace("-", "") != "utf8":
            return response.json()  # a charset the server declared
        try:
            text = response.content.decode("utf-8-sig")
        except UnicodeDecodeError:
            self.undecodable_pages += 1
            text = response.content.decode("utf-8-sig", errors="replace")
        return json.loads(text)

    def get_json(self, url: str) -> tuple[Any, requests.Response, str]:
        """GET one page with retries; returns the JSON body, the response and the URL that answered."""
        import requests

        attempt = 1
        redirects = 0
        while True:
            shown = _redact(url)
            timeout = self._spend_request(shown)
            try:
                response = self.session.get(url, timeout=timeout, allow_redirects=False)
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                self._retry_or_fail(attempt, type(exc).__name__, None, shown)
                attempt += 1
                continue
            status = response.status_code
            if status in REDIRECT_STATUSES and response.headers.get("Location"):
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise SourceError(f"source '{self.name}': more than {MAX_REDIRECTS} redirects at {shown}")
                target = urljoin(url, response.headers["Location"])
                self.check_origin(target, f"{shown} redirects")
                url = target
                continue
            if status in RETRY_STATUSES:
                self._retry_or_fail(attempt, f"HTTP {status}", response, shown)
                attempt += 1
                continue
            if status in (401, 403):
                raise SourceError(
                    f"source '{self.name}': HTTP {status} on {shown}: check the connection's credentials"
                )
            if status >= 300:
                raise SourceError(f"source '{self.name}': HTTP {status} on {shown}")
            try:
                return self.json_body(response), response, url
            except ValueError:
                kind = response.headers.get("Content-Type", "unknown content type")
                raise SourceError(
                    f"source '{self.name}': {shown} did not return valid JSON ({kind})"
                ) from None


def _check_param_names(source: RestSource) -> None:
    """Fail before any request when fixed params and the pagination style want the same name."""
    pag = source.pagination
    owned = {
        "page": {"page_param": pag.page_param, "size_param": pag.size_param},
        "offset": {"offset_param": pag.offset_param, "size_param": pag.size_param},
        "cursor": {"cursor_param": pag.cursor_param, "size_param": pag.size_param},
        "link": {"size_param": pag.size_param},
        "none": {},
    }[pag.type]
    names = list(owned.values())
    if len(set(names)) != len(names):
        raise SourceError(
            f"source '{source.name}': pagination parameters must differ: "
            + ", ".join(f"{field}='{name}'" for field, name in owned.items())
        )
    for field, name in owned.items():
        if name in source.params:
            raise SourceError(
                f"source '{source.name}': fixed param '{name}' conflicts with pagination.{field} '{name}'; "
                f"remove it from params or rename the pagination parameter"
            )


class _Pager:
    """Where the next page of a source is, in its pagination style, and whether the last one came."""

    def __init__(self, client: _Client, url: str) -> None:
        self.client, self.url = client, url
        self.source = client.source
        self.pag = self.source.pagination
        self.fixed = {k: _param_text(v) for k, v in self.source.params.items()}
        self.cursor: str | None = None
        self.next_url: str | None = None
        self.seen_urls: set[str] = set()
        self.seen_cursors: set[str] = set()

    def request_url(self, index: int) -> str:
        pag, fixed = self.pag, self.fixed
        size = {pag.size_param: pag.page_size}
        if pag.type == "page":
            request_url = _with_query(self.url, {**fixed, pag.page_param: pag.start_page + index, **size})
        elif pag.type == "offset":
            request_url = _with_query(self.url, {**fixed, pag.offset_param: index * pag.page_size, **size})
        elif pag.type == "cursor":
            at = {pag.cursor_param: self.cursor} if self.cursor is not None else {}
            request_url = _with_query(self.url, {**fixed, **size, **at})
        elif pag.type == "link":
            request_url = self.next_url or _with_query(self.url, {**fixed, **size})
        else:
            request_url = _with_query(self.url, fixed)
        self.seen_urls.add(request_url)
        return request_url

    def last_page(self, payload: Any, response: Any, answered: str, batch: list[dict[str, Any]]) -> bool:
        """Whether this page was the last; otherwise remember where the next one is."""
        pag = self.pag
        if pag.type in ("page", "offset"):
            return len(batch) < pag.page_size  # a short or empty page is the last one
        if pag.type == "cursor":
            return self._follow_cursor(payload, _redact(answered), batch)
        if pag.type == "link":
            return self._follow_link(response, answered)
        return True

    def _follow_cursor(self, payload: Any, shown: str, batch: list[dict[str, Any]]) -> bool:
        pag, name = self.pag, self.source.name
        following = _cursor_at(payload, pag.cursor_path, shown, name)
        if following is None:
            if len(batch) >= pag.page_size and not _has_path(payload, pag.cursor_path):
                log.warning(
                    "source %s: a full page from %s has no '%s'; taking it as the last page "
                    "(check pagination.cursor_path)",
                    name,
                    shown,
                    pag.cursor_path,
                )
            return True
        if following in self.seen_cursors:
            raise SourceError(
                f"source '{name}': cursor {following[:80]!r} from '{pag.cursor_path}' of {shown} "
                f"was already used; the API is paginating in a loop"
            )
        self.seen_cursors.add(following)
        self.cursor = following
        return False

    def _follow_link(self, response: Any, answered: str) -> bool:
        shown = _redact(answered)
        following = _next_link(response, answered)
        if following is None:
            return True
        self.client.check_origin(following, f"the next link of {shown} points")
        if following in self.seen_urls:
            raise SourceError(
                f"source '{self.source.name}': the next link of {shown} repeats {_redact(following)}; "
                f"the API is paginating in a loop"
            )
        self.next_url = following
        return False


def _fetch_all(client: _Client, url: str) -> list[dict[str, Any]]:
    """Request pages in the source's pagination style until it signals the last one."""
    source = client.source
    pager = _Pager(client, url)
    records: list[dict[str, Any]] = []
    while True:
        if client.pages >= source.pagination.max_pages:
            raise SourceError(
                f"source '{source.name}': more than max_pages={source.pagination.max_pages} pages at "
                f"{_redact(url)} (raise pagination.max_pages or narrow the query)"
            )
        payload, response, answered = client.get_json(pager.request_url(client.pages))
        shown = _redact(answered)
        batch = _records_at(payload, source.records_path, shown, source.name)
        client.pages += 1
        records.extend(batch)
        log.debug("source %s: %d records from %s", source.name, len(batch), shown)
        if pager.last_page(payload, response, answered, batch):
            return records


def _undecodable(records: list[dict[str, Any]], wanted: list[str], key: str) -> list[dict[str, Any]]:
    """Records (of a response that was not all UTF-8) holding U+FFFD, by key, with the columns."""
    out = []
    for n, record in enumerate(records):
        columns = [c for c in wanted if "\ufffd" in (as_text(record.get(c)) or "")]
        if columns:
            out.append({"key": as_text(record.get(key)) or f"#{n}", "columns": columns})
    return out


def extract_rest(
    source: RestSource, order_by: str, base_url: str | None = None, headers: dict[str, str] | None = None
) -> tuple[pa.Table, dict[str, Any]]:
    """All of a REST source's records as text columns sorted by `order_by`, and what was done."""
    import pyarrow as pa
    import requests

    if base_url is None:
        conn = get_connection(source.conn_id)
        base_url = http_base_url(conn)
        headers = http_auth_headers(conn)
    url = f"{base_url.rstrip('/')}{source.endpoint}"
    _check_param_names(source)
    with requests.Session() as session:
        session.headers.update({"Accept": "application/json", **(headers or {})})
        client = _Client(session, source, url)
        records = _fetch_all(client, url)
    elapsed = client.elapsed()

    wanted = list(source.columns)
    unexpected: Counter[str] = Counter()
    missing: Counter[str] = Counter()
    for record in records:
        unexpected.update(k for k in record if k not in wanted)
        missing.update(c for c in wanted if c not in record)
    extracted = len(records)
    if source.sample is not None:
        records = _sample(records, order_by, source.sample)
    records.sort(key=lambda r: as_text(r.get(order_by)) or "")
    undecodable = _undecodable(records, wanted, order_by) if client.undecodable_pages else []
    arrays = [pa.array([as_text(r.get(c)) for r in records], type=pa.string()) for c in wanted]
    table = pa.Table.from_arrays(arrays, names=wanted)
    drift = {"unexpected_fields": dict(unexpected), "missing_fields": dict(missing)}
    if unexpected or missing:
        log.warning("source %s: schema drift %s", source.name, drift)
    shown = _redact(url)
    meta: dict[str, Any] = {
        "kind": "rest",
        "url": shown,
        "pagination": source.pagination.type,
        "pages": client.pages,
        "requests": client.requests,
        "retries": client.retries,
        "elapsed_seconds": round(elapsed, 3),
        "columns": wanted,
        "row_count": table.num_rows,
        "schema_drift": drift,
        UNDECODABLE: undecodable,
    }
    if source.sample is not None:
        meta["sample"] = source.sample.model_dump()
        meta["rows_extracted"] = extracted
    log.info(
        "source %s: %d records from %d pages of %s (%d requests, %d retries, %.1fs)",
        source.name,
        table.num_rows,
        client.pages,
        shown,
        client.requests,
        client.retries,
        elapsed,
    )
    return table, meta
