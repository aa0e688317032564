"""The one way to talk to arXiv: a polite requests session.

Every request, from the feed, the API or the full-text fetcher, goes through :class:`PoliteSession`:
one request at a time in the whole process, ``arxiv.min_interval`` seconds apart, a timeout on every
call, a User-Agent naming the project and the operator, and retries with exponential backoff that
honour Retry-After on 429/503 and retry every transport failure (refused, reset, cut off, TLS, DNS).

``arxiv.timeout`` bounds each wait for the server; a whole answer must also arrive within four of them
and be at most :data:`LARGEST_ANSWER` bytes once decompressed (:mod:`digest.http_bounds`: a server
sending a byte now and then never trips a per-read timeout, and a gzip bomb would fill the memory).
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

import requests
import urllib3

from ..config import Settings
from ..http_bounds import (ACCEPTED_ENCODINGS, READ_SIZE, WHOLE_ANSWER_TIMEOUTS, DamagedAnswer, UnknownEncoding,
                           bounded_body)
from ..http_retry import retry_after_seconds

log = logging.getLogger("digest.arxiv")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 600.0  # seconds; a longer wait is reported as a failure rather than blocking a run
LARGEST_ANSWER = 64 * 2**20  # bytes, decompressed; arXiv's largest (an API page of 2,000 papers) is ~5 MB
# What urllib3 raises while a body is read, as the requests exceptions the retry loop already handles.
READ_ERRORS = {urllib3.exceptions.ReadTimeoutError: requests.exceptions.ReadTimeout,
               urllib3.exceptions.ProtocolError: requests.exceptions.ChunkedEncodingError,
               urllib3.exceptions.DecodeError: requests.exceptions.ContentDecodingError,
               urllib3.exceptions.SSLError: requests.exceptions.SSLError,
               OSError: requests.exceptions.ConnectionError}
# A request that cannot work however often it is tried: the configured URL itself is wrong.
NOT_RETRIED = (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
               requests.exceptions.InvalidSchema, requests.exceptions.InvalidHeader, requests.exceptions.URLRequired)


class ArxivError(Exception):
    """arXiv could not be reached or refused a request; the message is one line for the user."""


class SlowAnswer(requests.exceptions.ReadTimeout):
    """The server kept sending, too slowly to finish within the whole answer's time (retried as a timeout)."""


class RequestGate:
    """One request to arXiv at a time in the whole process, and a minimum pause between two.

    arXiv's limit is per client machine, not per caller, so there is one gate per process
    (:data:`GATE`), shared by the feed, the API and anything else that talks to arXiv.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.last_finished: float | None = None

    def pause(self, min_interval: float, at_least: float = 0.0) -> None:
        """Sleep until ``min_interval`` has passed since the last request ended (and ``at_least``)."""
        wait = at_least
        if self.last_finished is not None:
            wait = max(wait, self.last_finished + min_interval - time.monotonic())
        if wait > 0:
            time.sleep(wait)


GATE = RequestGate()


def user_agent(settings: Settings) -> str:
    try:
        own_version = package_version("digest")
    except PackageNotFoundError:
        own_version = "0"
    contact = settings.arxiv.contact or "no contact configured"
    return f"digest/{own_version} (mailto:{contact})"


class PoliteSession(requests.Session):
    """A requests session that is polite to arXiv on every request, whoever makes it.

    ``last_response`` keeps the final answer so an error can quote what arXiv said.
    """

    def __init__(self, settings: Settings, gate: RequestGate = GATE):
        super().__init__()
        self.arxiv = settings.arxiv
        self.gate = gate
        self.headers["User-Agent"] = user_agent(settings)
        self.headers["Accept-Encoding"] = ACCEPTED_ENCODINGS  # what _read_whole decompresses
        self.last_response: requests.Response | None = None

    def request(self, method, url, **kwargs):
        kwargs.setdefault("timeout", self.arxiv.timeout)
        headers = {k: v for k, v in (kwargs.pop("headers", None) or {}).items() if k.lower() != "user-agent"}
        streamed = kwargs.pop("stream", False)  # the caller reads the body itself (``digest check``: none of it)
        with self.gate.lock:
            response = self._with_retries(method, url, headers, kwargs, streamed)
        self.last_response = response
        return response

    def _with_retries(self, method, url, headers, kwargs, streamed: bool) -> requests.Response:
        wait_for = 0.0
        for attempt in range(self.arxiv.retries + 1):
            self.gate.pause(self.arxiv.min_interval, wait_for)
            last_try = attempt == self.arxiv.retries
            try:
                started = time.monotonic()
                response = super().request(method, url, headers=headers, stream=True, **kwargs)
                if not streamed:
                    self._read_whole(response, url, started)
            except ArxivError:
                self.gate.last_finished = time.monotonic()
                raise
            except NOT_RETRIED as exc:
                self.gate.last_finished = time.monotonic()
                raise ArxivError(f"{where(url)}: not a usable URL ({type(exc).__name__})") from None
            except requests.RequestException as exc:  # refused, reset, timed out, cut off, TLS, DNS
                self.gate.last_finished = time.monotonic()
                if last_try:
                    raise ArxivError(f"{where(url)}: {network_reason(exc, url)} after {attempt + 1} attempts") \
                        from None
                wait_for = self._backoff(attempt)
                log.warning("%s: %s; retrying in %.1fs", where(url), network_reason(exc, url), wait_for)
                continue
            self.gate.last_finished = time.monotonic()
            if response.status_code not in RETRY_STATUSES or last_try:
                return response
            asked = retry_after_seconds(response.headers.get("Retry-After"))
            if asked is not None and asked > MAX_RETRY_AFTER:
                return response
            wait_for = max(asked or 0.0, self._backoff(attempt))
            response.close()
            log.warning("%s: HTTP %d; retrying in %.1fs", where(url), response.status_code, wait_for)
        raise AssertionError("unreachable")  # the loop returns or raises on its last try

    def _read_whole(self, response: requests.Response, url: str, started: float) -> None:
        """Read the body as requests would, within the size and time bounds (see the module's docstring):
        raw, as it arrives, decompressed here (:func:`digest.http_bounds.bounded_body`), so the clock is looked
        at after every read however slowly the bytes come, and the size counted however far they expand."""
        deadline = started + self.arxiv.timeout * WHOLE_ANSWER_TIMEOUTS
        try:
            body = b"".join(bounded_body(
                iter(lambda: _read_some(response.raw), b""), response.headers.get("Content-Encoding"),
                limit=LARGEST_ANSWER, deadline=deadline,
                too_slow=lambda: SlowAnswer(f"the answer took longer than {deadline - started:.0f} s in all"),
                too_large=lambda: ArxivError(f"{where(url)}: the answer is over {LARGEST_ANSWER // 2**20} MiB "
                                             "(decompressed); refused")))
        except BaseException as exc:
            response.close()  # the connection is not reused with the rest of an answer in it
            if isinstance(exc, UnknownEncoding):
                raise ArxivError(f"{where(url)}: {exc}") from None
            if isinstance(exc, DamagedAnswer):
                raise requests.exceptions.ContentDecodingError(str(exc)) from None
            raise
        # as requests keeps a body it read itself; the connection went back to the pool at the body's end
        response._content, response._content_consumed = body, True

    def _backoff(self, attempt: int) -> float:
        """Exponential, starting at the configured spacing (3 s against arXiv: 3, 6, 12, 24 ...)."""
        return max(self.arxiv.min_interval, 0.05) * 2 ** attempt


def _read_some(raw: urllib3.HTTPResponse) -> bytes:
    """What has arrived of the body, as it came (at most READ_SIZE bytes; b"" at its end)."""
    try:
        return raw.read1(READ_SIZE, decode_content=False) or b""  # urllib3 says None when there is no body
    except tuple(READ_ERRORS) as exc:
        raise next(requests_error for kind, requests_error in READ_ERRORS.items()
                   if isinstance(exc, kind))(str(exc)) from exc


def where(url: str) -> str:
    return url.split("?")[0]


def network_reason(exc: Exception, url: str = "") -> str:
    """What went wrong on the way, in words: "timed out", "cannot resolve export.arxiv.org", ..."""
    text = str(exc)
    if isinstance(exc, SlowAnswer):
        return text
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if any(s in text for s in ("NameResolutionError", "Name or service not known", "nodename nor servname",
                               "Temporary failure in name resolution", "getaddrinfo failed")):
        return f"cannot resolve {urllib.parse.urlsplit(url).hostname or 'the host'}"
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS connection failed (certificate or handshake)"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)) \
            or "IncompleteRead" in text or "Response ended prematurely" in text:
        return "the response was cut off"
    if "Connection refused" in text:
        return "connection refused"
    if "Connection reset" in text or "RemoteDisconnected" in text:
        return "the connection was closed by the server"
    return f"connection failed ({type(exc).__name__})"


@contextmanager
def session_for(settings: Settings, session: requests.Session | None):
    """The caller's session, or a new polite one closed on the way out."""
    own = session is None
    session = session or PoliteSession(settings)
    try:
        yield session
    finally:
        if own:
            session.close()
