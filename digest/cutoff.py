"""A whole conversation's time limit, for the standard library's SMTP and IMAP clients.

Their ``timeout`` bounds each wait for the server: a server answering a byte at a time, each within it, would
hold the conversation for good. :class:`Cutoff` shuts the conversation's sockets down when its time is up,
which wakes the read waiting on them; the client then fails as on a lost connection, and ``passed`` tells the
caller why. The clients hand their sockets over through the hooks smtplib and imaplib have for their own
TLS variants (``_get_socket``, ``_create_socket``).
"""

from __future__ import annotations

import socket
import threading

WHOLE_CONVERSATION_TIMEOUTS = 4  # a conversation may take this many of the client's per-read timeout


class Cutoff:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.passed = False
        self.sockets: list[socket.socket] = []  # the connection as it was made
        self.client = None  # and the client's socket at the time of the cut: its TLS wrapper after STARTTLS
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket, client=None) -> socket.socket:
        self.sockets.append(sock)
        self.client = client or self.client
        return sock

    def _cut(self) -> None:
        self.passed = True
        for sock in self.sockets + [getattr(self.client, "sock", None)]:
            if sock is None:
                continue
            try:  # the plain socket's shutdown: an SSLSocket's own would drop its TLS state under the reader
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:  # closed already, or handed over to its TLS wrapper
                pass

    def cancel(self) -> None:
        self._timer.cancel()

    def __enter__(self) -> "Cutoff":
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()
