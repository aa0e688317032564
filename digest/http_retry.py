"""What an HTTP server asks of a client that must wait: Retry-After read as seconds. arXiv and the LLM both send it."""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import time


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date. None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def seconds_to_wait(headers) -> float:
    """Seconds a 429 or 5xx answer asks the client to wait, 0.0 when it does not say: OpenAI's
    retry-after-ms, or Retry-After (seconds or a date)."""
    millis = headers.get("retry-after-ms")
    try:
        if millis:
            return float(millis) / 1000
    except ValueError:
        pass
    return retry_after_seconds(headers.get("retry-after")) or 0.0
