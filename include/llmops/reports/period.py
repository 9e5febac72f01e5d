"""The reporting period of a compliance report, and when a model version's data was collected.

Dates come from the `compliance_audit_report` DAG's Params: a malformed or inverted one is a
ReportRequestError whose message names the Param.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from llmops.errors import PermanentError
from llmops.reports.evidence import parse_time

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class ReportRequestError(PermanentError, ValueError):
    """A Param of a report request is wrong; the message names the Param, what was expected and found."""


@dataclass(frozen=True)
class Window:
    """The reporting period: which versions (by registration) and which later events are covered.

    Both ends are whole UTC days and inclusive; None means open. The facts that define a version
    (its data, training, evaluation) are reported whatever the window, since it cannot be
    understood without them.
    """

    date_from: date | None = None
    date_to: date | None = None

    def contains(self, timestamp: str | None) -> bool:
        moment = parse_time(timestamp)
        if moment is None:
            return True
        if self.date_from is not None and moment < datetime.combine(self.date_from, time.min, UTC):
            return False
        end = self.date_to
        return end is None or moment < datetime.combine(end + timedelta(days=1), time.min, UTC)

    def to_dict(self) -> dict[str, Any]:
        return {
            "date_from": self.date_from.isoformat() if self.date_from else None,
            "date_to": self.date_to.isoformat() if self.date_to else None,
        }


def parse_date(value: Any, param: str) -> date | None:
    """A Param holding an ISO date (YYYY-MM-DD) or nothing; anything else is a ReportRequestError."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    text = str(value).strip()
    if _ISO_DATE.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise ReportRequestError(f"Param '{param}': expected an ISO date (YYYY-MM-DD), got {str(value)[:40]!r}")


def parse_window(date_from: Any, date_to: Any) -> Window:
    window = Window(parse_date(date_from, "date_from"), parse_date(date_to, "date_to"))
    if window.date_from and window.date_to and window.date_from > window.date_to:
        raise ReportRequestError(
            f"Params 'date_from' ({window.date_from}) and 'date_to' ({window.date_to}): "
            "date_from is after date_to"
        )
    return window


def collection_period(sources: list[dict[str, Any]]) -> dict[str, Any]:
    """When the training data was collected: per source and overall.

    An incremental source's period is its watermark range (``from`` exclusive; None when the
    extraction started at the source's first record); any other source's is the time it was
    ingested. The overall period is the min/max of every bound that is a timestamp; a watermark on
    a non-time column (an id) counts with its ingest time instead. ``open_start`` says that a
    source was read from its first record, so its data may start before ``from``; ``basis`` says
    which kind of bound the overall period rests on.
    """
    per_source, lows, highs, bases = [], [], [], set()
    open_start = False
    for source in sources:
        watermark = source.get("watermark") or {}
        ingested = source.get("ingested_at")
        if watermark.get("high") is not None and not watermark.get("empty"):
            entry = {
                "source": source["name"],
                "raw_snapshot_id": source["raw_snapshot_id"],
                "basis": "watermark",
                "column": watermark.get("column"),
                "from": watermark.get("low"),
                "to": watermark.get("high"),
            }
            low, high = parse_time(watermark.get("low")), parse_time(watermark.get("high"))
            if watermark.get("low") is None:
                open_start = True
            elif low is None:
                low = parse_time(ingested)
            if high is None:
                high = parse_time(ingested)
            bases.add("watermark" if parse_time(watermark.get("high")) else "ingest time")
        else:
            entry = {
                "source": source["name"],
                "raw_snapshot_id": source["raw_snapshot_id"],
                "basis": "ingest time",
                "column": None,
                "from": ingested,
                "to": ingested,
            }
            low = high = parse_time(ingested)
            bases.add("ingest time")
        per_source.append(entry)
        low = low or high  # a first load: its data starts before its first known bound, say so
        lows += [low] if low else []
        highs += [high] if high else []
    return {
        "from": min(lows).isoformat() if lows else None,
        "to": max(highs).isoformat() if highs else None,
        "open_start": open_start,
        "basis": bases.pop() if len(bases) == 1 else ("mixed" if bases else None),
        "sources": per_source,
    }
