"""A loopback HTTP server whose answers a test scripts: recorded arXiv files, errors, delays.

Each route maps a path to a handler ``fn(request) -> Reply``; the server records every request
(method, path, query, headers, body, time) so tests can check politeness and what was asked.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Reply:
    status: int = 200
    body: bytes | str = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content_type: str = "application/atom+xml; charset=utf-8"
    cut_after: int | None = None  # send only this many bytes of the body, then close: a cut-off response
    drip: float | None = None  # send the body a byte at a time, this many seconds apart: a slow-drip server

    @classmethod
    def file(cls, path: Path, status: int = 200, **kwargs) -> "Reply":
        return cls(status=status, body=Path(path).read_bytes(), **kwargs)


Handler = Callable[[Request], Reply]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on (the probe closes on return): where a server is about to start, or one
    that stands for a server that is down."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class Started:
    """A test server as a context manager: ``with Server() as server:`` starts it and stops it however the
    block ends. A subclass says how it starts (returning itself) and how it stops."""

    def start(self):
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up early (``digest check`` reads only the status line) is not a server error:
    socketserver would print its traceback to ``sys.stderr``, which a CliRunner in the same process captures
    as the command's own output."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LoopbackServer(Started):
    def __init__(self):
        self.routes: dict[str, Handler] = {}
        self.requests: list[Request] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def _serve(self):
                parsed = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(self.command, parsed.path, urllib.parse.parse_qs(parsed.query),
                                  {k.lower(): v for k, v in self.headers.items()},
                                  self.rfile.read(length) if length else b"", time.monotonic())
                with server._lock:
                    server.requests.append(request)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server.route(request)
                    if reply.delay:
                        time.sleep(reply.delay)
                    body = reply.body.encode() if isinstance(reply.body, str) else reply.body
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(body)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    if reply.drip is not None:
                        for byte in body:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(reply.drip)
                        return
                    if reply.cut_after is not None:
                        self.wfile.write(body[:reply.cut_after])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with server._lock:
                        server.in_flight -= 1

            do_GET = do_POST = do_PUT = do_HEAD = _serve

        self.httpd = _QuietServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def route(self, request: Request) -> Reply:
        for prefix in sorted(self.routes, key=len, reverse=True):
            if request.path.startswith(prefix):
                return self.routes[prefix](request)
        return Reply(404, "not found", content_type="text/plain")

    def start(self) -> "LoopbackServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class AnsweredByLoopback(Started):
    """A server that answers through a LoopbackServer of its own, ``self.http`` (the chat webhook, the LLM
    API): it runs as long as that one does."""

    http: LoopbackServer

    def start(self):
        self.http.start()
        return self

    def stop(self) -> None:
        self.http.stop()


def serve_until_interrupted(server, *lines: str) -> None:
    """For the `python tests/<server>.py` entry points: say how to use ``server``, then serve until ^C."""
    with server:
        print("\n".join(lines), flush=True)
        print("Serving until Ctrl-C.", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
