"""Error classes shared across layers, and the one place error text is reduced before it is recorded."""

from __future__ import annotations

import re
from typing import Any


class PermanentError(Exception):
    """A failure that retrying cannot fix: bad data, a bad spec, a failed gate.

    Tasks turn it into an immediate failure instead of spending their retries on it; transient
    errors (a dropped connection, a 503) keep being retried.
    """


class ExternalError(RuntimeError):
    """A third-party exception reduced to its type and safe codes at a task boundary.

    Third-party messages can quote source rows (a driver's "invalid input syntax: '<value>'"), so
    only this reduction travels on; it is retried like the original.
    """

    def __init__(self, message: str, original_type: str) -> None:
        super().__init__(message)
        self.original_type = original_type

    @classmethod
    def of(cls, original: BaseException) -> ExternalError:
        return cls(safe_error_text(original), type(original).__name__)

    def __reduce__(self) -> Any:
        return (type(self), (str(self), self.original_type))


MAX_ERROR_CHARS = 500
# `scheme://user:password@`: the password part, wherever a URL is quoted in a message.
URL_CREDENTIALS = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^/\s@]+@")
REDACTED = "***"


def without_url_credentials(text: str) -> str:
    """The text with every URL's password replaced (a tracking URI, a connection URL)."""
    return URL_CREDENTIALS.sub(lambda m: f"{m.group('head')}:{REDACTED}@", text)


def is_own_error(exc: BaseException) -> bool:
    """Whether the exception is this package's (defined in it, or a PermanentError or a reduced
    ExternalError): their messages name fields, rows and counts, never values (a convention the
    raise sites keep)."""
    if isinstance(exc, PermanentError | ExternalError):
        return True
    return type(exc).__module__.split(".", 1)[0] == "llmops"


def _codes(exc: BaseException) -> list[str]:
    """Codes a driver or client attaches (SQLSTATE, errno, HTTP status): they quote no data."""
    codes = []
    for candidate in (exc, getattr(exc, "orig", None)):
        if candidate is None:
            continue
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(state, str) and state.isalnum() and len(state) == 5:
            codes.append(f"SQLSTATE {state}")
        args: Any = getattr(candidate, "args", ())
        if args and isinstance(args[0], int) and not isinstance(args[0], bool):
            codes.append(f"code {args[0]}")
        status = getattr(getattr(candidate, "response", None), "status_code", None)
        if isinstance(status, int):
            codes.append(f"HTTP {status}")
    return list(dict.fromkeys(codes))


def safe_error_text(exc: BaseException | str | None) -> str:
    """Error text fit for the ledger, lineage and logs.

    This package's errors keep their message (cut short); a third-party exception is reduced to
    its type and codes, because its message may quote the data that broke it.
    """
    if exc is None:
        return ""
    if isinstance(exc, str):  # Airflow's own failure notes ("killed externally")
        return without_url_credentials(exc)[:MAX_ERROR_CHARS]
    if is_own_error(exc):  # names files, fields, keys; a URL in it loses its password
        return without_url_credentials(str(exc))[:MAX_ERROR_CHARS]
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins.")
    codes = _codes(exc)
    detail = f" ({', '.join(codes)})" if codes else ""
    return f"{kind}{detail}: message withheld (third-party text may quote source data)"


def error_type(exc: BaseException | str | None) -> str:
    """The type name to record: a reduced third-party error keeps its original type's name."""
    if not isinstance(exc, BaseException):
        return "error"
    return getattr(exc, "original_type", None) or type(exc).__name__
