"""A transport for the OpenAI client whose answers are bounded in size: however large an answer a server
sends, or however far a compressed one expands, a run never holds more than :data:`LARGEST_LLM_ANSWER` of it.

A chat completion of ``llm.max_tokens`` tokens is a few KB; an answer over the bound is a broken or hostile
server, and the request fails with "the answer is over 8 MiB; refused" (the paper keeps its abstract)
instead of the run being killed for its memory. The HTTP library has no such setting, so the transport
wraps each answer's stream: it asks for gzip or deflate only, decompresses them itself with a bound on the
output (the library's own decoder expands a whole chunk at once), and hands the library the plain bytes.

openai is built on httpx, and since openai 3 on httpx2 (the same API under another name): the transport is
built on whichever the installed openai's client class derives from.
"""

from __future__ import annotations

import functools
import importlib
import zlib

LARGEST_LLM_ANSWER = 8 * 2**20  # bytes, decompressed
ENCODINGS = ("gzip", "deflate")
READ_SIZE = 64 * 1024


def bounded_transport(client_class: type, limit: int = LARGEST_LLM_ANSWER):
    """A transport for an instance of ``client_class`` (``openai.DefaultHttpxClient``)."""
    library = next(importlib.import_module(base.__module__.partition(".")[0]) for base in client_class.__mro__
                   if base.__name__ == "Client" and base.__module__.startswith("httpx"))
    return _transport_class(library)(limit)


def too_large(exc: BaseException | None) -> str | None:
    """The refusal's words when ``exc`` (or what caused it) is an answer over the bound."""
    while exc is not None:
        if getattr(exc, "too_large", False):
            return str(exc)
        exc = exc.__cause__ or exc.__context__
    return None


@functools.cache
def _transport_class(http):
    class AnswerTooLarge(http.TransportError):
        too_large = True

    class BoundedStream(http.SyncByteStream):
        def __init__(self, stream, encoding: str, limit: int):
            self.stream = stream
            self.limit = limit
            # wbits 32 + MAX_WBITS: a gzip or a zlib header, whichever the server sent
            self.decoder = zlib.decompressobj(32 + zlib.MAX_WBITS) if encoding in ENCODINGS else None

        def __iter__(self):
            size = 0
            for piece in self._decoded():
                size += len(piece)
                if size > self.limit:
                    raise AnswerTooLarge(f"the answer is over {self.limit // 2**20} MiB; refused")
                yield piece

        def _decoded(self):
            try:
                for chunk in self.stream:
                    if self.decoder is None:
                        yield chunk
                        continue
                    piece = self.decoder.decompress(chunk, READ_SIZE)
                    while piece:
                        yield piece
                        piece = self.decoder.decompress(self.decoder.unconsumed_tail, READ_SIZE)
                if self.decoder is not None:
                    yield self.decoder.flush()
            except zlib.error as exc:
                raise http.DecodingError(f"the answer's compression is damaged ({exc})") from None

        def close(self) -> None:
            self.stream.close()

    class BoundedTransport(http.HTTPTransport):
        def __init__(self, limit: int):
            super().__init__()
            self.limit = limit

        def handle_request(self, request):
            request.headers["Accept-Encoding"] = ", ".join(ENCODINGS)
            response = super().handle_request(request)
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding not in ENCODINGS + ("identity", ""):
                response.close()
                raise http.DecodingError(f"the answer is encoded as {encoding!r}, which was not asked for")
            headers = [(key, value) for key, value in response.headers.raw
                       if key.lower() not in (b"content-encoding", b"content-length")]
            return http.Response(response.status_code, headers=headers,
                                 stream=BoundedStream(response.stream, encoding, self.limit),
                                 extensions=response.extensions, request=request)

    return BoundedTransport
