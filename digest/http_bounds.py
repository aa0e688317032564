"""Answers bounded in size and time, for the two HTTP clients digest uses: requests (arXiv) and the
OpenAI client's httpx (the LLM).

Each client's ``timeout`` bounds one wait for the server; a server sending a byte now and then, each
within it, or a small compressed answer that expands without end (a gzip bomb), would otherwise hold a
run for good or fill its memory. So digest asks for gzip or deflate only and decompresses them itself
(:class:`Decoder`), at most :data:`READ_SIZE` bytes at a time, counting what comes out, and looks at the
clock after every read from the network. The libraries' own decoders expand a whole chunk at once, and
read on until a compressed stream yields output, which is why the bytes are taken raw.

For the LLM, :func:`bounded_hooks` are httpx event hooks: they leave the client's own transport (its
proxies from the environment, its connection limits) as it is and wrap only each answer's stream.
openai is built on httpx, and since openai 3 on httpx2 (the same API under another name): the wrapper is
built on whichever library the answer came from.
"""

from __future__ import annotations

import functools
import importlib
import time
import zlib

ACCEPTED_ENCODINGS = "gzip, deflate"
READ_SIZE = 64 * 1024
LARGEST_LLM_ANSWER = 8 * 2**20  # bytes, decompressed; a chat completion of max_tokens is a few KB
WHOLE_ANSWER_TIMEOUTS = 4  # a whole answer may take this many of the client's per-read timeout


class UnknownEncoding(ValueError):
    """An answer compressed in a way that was not asked for."""


class DamagedAnswer(ValueError):
    """An answer whose compression is damaged."""


class Decoder:
    """gzip or deflate (zlib-wrapped or raw, as servers send "deflate"), or no compression; out in pieces
    of at most READ_SIZE bytes, however far the input expands."""

    def __init__(self, content_encoding: str | None):
        self.encoding = (content_encoding or "").strip().lower() or "identity"
        if self.encoding not in ("identity", "gzip", "x-gzip", "deflate"):
            raise UnknownEncoding(f"the answer is compressed as {content_encoding!r}, which was not asked for")
        self._inflate = None
        self._head = b""  # the first bytes of a deflate stream, until they say which kind it is

    def feed(self, data: bytes):
        if self.encoding == "identity":
            if data:
                yield data
            return
        if self._inflate is None:
            self._head += data
            if self.encoding == "deflate" and len(self._head) < 2:
                return
            data, self._head = self._head, b""
            self._inflate = zlib.decompressobj(self._window_bits(data))
        try:
            piece = self._inflate.decompress(data, READ_SIZE)
            while piece:
                yield piece
                piece = self._inflate.decompress(self._inflate.unconsumed_tail, READ_SIZE)
        except zlib.error as exc:
            raise DamagedAnswer(f"the answer's compression is damaged ({exc})") from None

    def flush(self):
        if self._head or (self._inflate is not None and not self._inflate.eof):
            raise DamagedAnswer("the answer's compressed stream is cut off")

    def _window_bits(self, start: bytes) -> int:
        if self.encoding != "deflate":
            return 16 + zlib.MAX_WBITS  # gzip
        zlib_header = start[0] & 0x0F == 8 and (start[0] << 8 | start[1]) % 31 == 0
        return zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS


def bounded_body(raw_chunks, content_encoding: str | None, *, limit: int, deadline: float, too_slow, too_large):
    """The body decompressed, a piece at a time, from its raw chunks as they arrive. Past ``deadline`` (a
    time.monotonic()) it raises ``too_slow()``, past ``limit`` bytes ``too_large()``: each client's own
    errors, so its retries and messages stay its own. An encoding not asked for raises UnknownEncoding,
    a damaged one DamagedAnswer."""
    decoder = Decoder(content_encoding)
    size = 0
    for raw in raw_chunks:
        if time.monotonic() > deadline:
            raise too_slow()
        for piece in decoder.feed(raw):
            size += len(piece)
            if size > limit:
                raise too_large()
            yield piece
    decoder.flush()


def too_large(exc: BaseException | None) -> str | None:
    """The refusal's words when ``exc`` (or what caused it) is an LLM answer over the bound."""
    while exc is not None:
        if getattr(exc, "too_large", False):
            return str(exc)
        exc = exc.__cause__ or exc.__context__
    return None


def bounded_hooks(limit: int = LARGEST_LLM_ANSWER) -> dict:
    """``event_hooks`` for an httpx (or httpx2) client whose answers are bounded."""
    return {"request": [_ask_for_known_encodings], "response": [functools.partial(_bound, limit=limit)]}


def _ask_for_known_encodings(request) -> None:
    request.headers["Accept-Encoding"] = ACCEPTED_ENCODINGS


def _bound(response, limit: int) -> None:
    http = importlib.import_module(type(response).__module__.partition(".")[0])  # httpx or httpx2
    read_timeout = (response.request.extensions.get("timeout") or {}).get("read") or 60.0
    response.stream = _stream_class(http)(response, limit, time.monotonic() + read_timeout * WHOLE_ANSWER_TIMEOUTS)
    response.headers.pop("Content-Encoding", None)  # decoded here: the library must not decode it again


@functools.cache
def _stream_class(http):
    """The wrapper for ``http``'s streams, with errors of ``http``'s kinds (which the OpenAI client turns
    into its connection and timeout errors)."""

    class AnswerTooLarge(http.TransportError):
        too_large = True

    class BoundedStream(http.SyncByteStream):
        def __init__(self, response, limit: int, deadline: float):
            self.stream, self.request = response.stream, response.request
            self.encoding, self.limit, self.deadline = response.headers.get("Content-Encoding"), limit, deadline

        def __iter__(self):
            try:
                yield from bounded_body(
                    self.stream, self.encoding, limit=self.limit, deadline=self.deadline,
                    too_slow=lambda: http.ReadTimeout("the answer came too slowly", request=self.request),
                    too_large=lambda: AnswerTooLarge(f"the answer is over {self.limit // 2**20} MiB; refused",
                                                     request=self.request))
            except (UnknownEncoding, DamagedAnswer) as exc:
                raise http.DecodingError(str(exc), request=self.request) from None

        def close(self) -> None:
            self.stream.close()

    return BoundedStream
