"""Error classes shared across layers."""

from __future__ import annotations


class PermanentError(Exception):
    """A failure that retrying cannot fix: bad data, a bad spec, a failed gate.

    Tasks turn it into an immediate failure instead of spending their retries on it; transient
    errors (a dropped connection, a 503) keep being retried.
    """
