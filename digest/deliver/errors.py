"""How a channel says that a delivery failed: worth retrying, or not."""

from __future__ import annotations


class TransientFailure(Exception):
    """Try again later: connection refused, a timeout, SMTP 4xx, HTTP 429 or 5xx."""

    phrased = True  # its message is written for the user as it is


class PermanentFailure(Exception):
    """Retrying will not help until someone changes something: SMTP 5xx, HTTP 401/403/404, a bad URL."""

    phrased = True
