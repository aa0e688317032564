"""How a channel says that a delivery failed: worth retrying, or not."""

from __future__ import annotations


class TransientFailure(Exception):
    """Try again later: connection refused, a timeout, SMTP 4xx, HTTP 429 or 5xx."""


class PermanentFailure(Exception):
    """Retrying will not help until someone changes something: SMTP 5xx, HTTP 401/403/404, a bad URL."""


def one_line(exc: BaseException) -> str:
    """An exception as the one line a user reads; our own failures are already phrased for that."""
    text = " ".join(str(exc).split())
    if isinstance(exc, (TransientFailure, PermanentFailure)):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
