"""Data quality metrics of one snapshot, and their trend across runs, for the per-snapshot DQ report.

The numbers describe shape, never content: shares, counts, ages and length distributions, so a
metrics dict can go into the ledger, MLflow and reports as it is. Floats are rounded to 4 places
and there is no NaN (an undefined number, such as a share of zero rows, is None).

Definitions (so a report reader can reproduce them):

- completeness of a column: non-null share of rows (an empty string is a value, not a null);
- key uniqueness: distinct non-null keys / rows; duplicates: non-null keys repeating an earlier one;
- validity: rows that passed the contract and the expectations / rows (when the caller knows it);
- freshness: hours from `now` back to the newest and the oldest timestamp (zone-less means UTC);
- text lengths: characters of each non-null value, percentiles with linear interpolation (numpy's
  default); tokens: whitespace-separated pieces.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

PLACES = 4
LENGTH_QUANTILES = {"p5": 0.05, "p25": 0.25, "median": 0.5, "p75": 0.75, "p95": 0.95}
DEFAULT_TREND_THRESHOLD = 0.2


def _num(value: Any) -> float | int | None:
    """A JSON-safe number: ints stay ints, floats are rounded, NaN/inf become None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        return None
    if number.is_integer() and not isinstance(value, float) and abs(number) < 2**53:
        return int(number)
    return round(number, PLACES)


def _share(part: int, whole: int) -> float | None:
    return _num(part / whole) if whole else None


def _timestamps(values: pd.Series) -> pd.Series:
    """Timestamps as UTC, from a datetime column (naive means UTC) or from text (ISO 8601)."""
    import pandas as pd

    from llmops.quality.contracts import parse_timestamps

    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values.dt.tz_localize("UTC")
    return parse_timestamps(values)


def _freshness(values: pd.Series, now: datetime) -> dict[str, Any]:
    stamps = _timestamps(values)
    present = int(values.notna().sum())
    parsed = stamps.dropna()
    reference = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    out: dict[str, Any] = {
        "column": str(values.name),
        "timestamps": len(parsed),
        "unparseable": present - len(parsed),
        "newest_age_hours": None,
        "oldest_age_hours": None,
    }
    if len(parsed):
        out["newest_age_hours"] = _num((reference - parsed.max().to_pydatetime()).total_seconds() / 3600)
        out["oldest_age_hours"] = _num((reference - parsed.min().to_pydatetime()).total_seconds() / 3600)
    return out


def _distribution(values: pd.Series, quantiles: dict[str, float]) -> dict[str, Any]:
    if values.empty:
        return {"min": None, **dict.fromkeys(quantiles), "max": None, "mean": None}
    out: dict[str, Any] = {"min": _num(int(values.min()))}
    for name, q in quantiles.items():
        out[name] = _num(float(values.quantile(q)))
    out["max"] = _num(int(values.max()))
    out["mean"] = _num(float(values.mean()))
    return out


def _text_summary(values: pd.Series) -> dict[str, Any]:
    import pandas as pd

    present = pd.Series([v if isinstance(v, str) else str(v) for v in values.dropna()], dtype=object)
    if present.empty:
        return {
            "values": 0,
            "blank": 0,
            "chars": _distribution(present, LENGTH_QUANTILES),
            "tokens": {"mean": None, "p95": None},
        }
    chars = present.str.len().astype("int64")
    tokens = present.str.split().str.len().fillna(0).astype("int64")
    token_summary = _distribution(tokens, {"p95": 0.95})
    return {
        "values": len(present),
        "blank": int((present.str.strip() == "").sum()),
        "chars": _distribution(chars, LENGTH_QUANTILES),
        "tokens": {"mean": token_summary["mean"], "p95": token_summary["p95"]},
    }


def quality_metrics(
    df: pd.DataFrame,
    *,
    key: str,
    text_columns: list[str],
    timestamp_column: str | None,
    now: datetime,
    contract_valid_rows: int | None = None,
) -> dict[str, Any]:
    """Completeness, key uniqueness, validity, freshness and text length distributions of a dataset.

    Text columns or a timestamp column absent from the frame give None entries (the report shows
    them as missing) rather than an error; the key must be present, it defines the dataset.
    """
    if key not in df.columns:
        raise ValueError(
            f"key column '{key}' is not in the dataset (columns: {', '.join(map(str, df.columns))})"
        )
    rows = len(df)
    completeness = {str(c): _share(int(df[c].notna().sum()), rows) for c in df.columns}
    shares = [v for v in completeness.values() if v is not None]

    keys = df[key].dropna()
    distinct = int(keys.nunique())
    uniqueness = {
        "column": key,
        "distinct": distinct,
        "distinct_share": _share(distinct, rows),
        "duplicates": int(keys.duplicated(keep="first").sum()),
        "nulls": rows - len(keys),
    }

    validity: dict[str, Any] | None = None
    if contract_valid_rows is not None:
        if not 0 <= contract_valid_rows <= rows:
            raise ValueError(f"contract_valid_rows must be between 0 and {rows}, got {contract_valid_rows}")
        validity = {"valid_rows": int(contract_valid_rows), "share": _share(contract_valid_rows, rows)}

    freshness: dict[str, Any] | None = None
    if timestamp_column is not None:
        if timestamp_column in df.columns:
            freshness = _freshness(df[timestamp_column], now)
        else:
            log.warning("quality metrics: timestamp column '%s' is not in the dataset", timestamp_column)

    text: dict[str, Any] = {}
    for column in text_columns:
        if column in df.columns:
            text[column] = _text_summary(df[column])
        else:
            log.warning("quality metrics: text column '%s' is not in the dataset", column)
            text[column] = None

    return {
        "rows": rows,
        "columns": len(df.columns),
        "completeness": completeness,
        "completeness_mean": _num(sum(shares) / len(shares)) if shares else None,
        "uniqueness": uniqueness,
        "validity": validity,
        "freshness": freshness,
        "text": text,
    }


# ------------------------------------------------------------------------------------------ trend


def headline(metrics: dict[str, Any]) -> dict[str, float | int | None]:
    """The few numbers a trend follows, flattened: rows, completeness, key uniqueness, validity, lengths."""
    out: dict[str, float | int | None] = {
        "rows": metrics.get("rows"),
        "completeness_mean": metrics.get("completeness_mean"),
        "key_uniqueness": (metrics.get("uniqueness") or {}).get("distinct_share"),
        "validity": (metrics.get("validity") or {}).get("share"),
    }
    for column, summary in sorted((metrics.get("text") or {}).items()):
        out[f"median_chars.{column}"] = ((summary or {}).get("chars") or {}).get("median")
    return out


def metrics_trend(
    history: list[dict[str, Any]], current: dict[str, Any], *, threshold: float = DEFAULT_TREND_THRESHOLD
) -> dict[str, Any]:
    """Headline numbers against the previous run's, flagging relative changes above `threshold`.

    `history` holds earlier `quality_metrics` results, oldest first. The previous value of a number
    is its latest non-None value in history. A change from 0 to anything else is flagged (it is
    infinitely large relatively); a number without a previous value is never flagged.
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    past = [headline(h) for h in history]
    now = headline(current)
    names = list(now) + [n for h in past for n in h if n not in now]
    names = list(dict.fromkeys(names))
    trend: dict[str, Any] = {}
    flagged: list[str] = []
    for name in names:
        value = now.get(name)
        series = [h.get(name) for h in past]
        previous = next((v for v in reversed(series) if v is not None), None)
        change: float | int | None = None
        relative: float | None = None
        flag = False
        if value is not None and previous is not None:
            change = _num(value - previous)
            if previous != 0:
                relative = _num((value - previous) / abs(previous))
                flag = abs((value - previous) / abs(previous)) > threshold
            else:
                flag = value != 0
        if flag:
            flagged.append(name)
        trend[name] = {
            "current": value,
            "previous": previous,
            "change": change,
            "relative_change": relative,
            "flag": flag,
            "series": [*series, value],
        }
    return {"threshold": threshold, "runs": len(history) + 1, "metrics": trend, "flagged": flagged}
