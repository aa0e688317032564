"""A whole conversation's time limit, for the standard library's SMTP and IMAP clients.

Their ``timeout`` bounds each wait for the server: a server answering a byte at a time, each within it, would
hold the conversation for good. :class:`Cutoff` shuts the conversation's sockets down when its time is up,
which wakes the read waiting on them; the client then fails as on a lost connection, and ``passed`` tells the
caller why. :class:`SMTP`, :class:`SMTP_SSL`, :class:`IMAP4` and :class:`IMAP4_SSL` are the standard
library's clients handing their sockets over, through the hooks smtplib and imaplib have for their own TLS
variants (``_get_socket``, ``_create_socket``).
"""

from __future__ import annotations

import imaplib
import smtplib
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

    def reason(self, where: str) -> str:
        """The one line that says why the conversation with ``where`` failed, once it has ``passed``."""
        return f"{where}: the conversation took longer than {self.seconds:.0f} s; cut off"

    def __enter__(self) -> "Cutoff":
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()


class _Watched:
    """A client whose sockets its :class:`Cutoff` (the ``cutoff`` argument) knows."""

    def __init__(self, *args, cutoff: Cutoff, **kwargs):
        self.cutoff = cutoff
        super().__init__(*args, **kwargs)

    def _get_socket(self, host, port, timeout):  # smtplib's hook
        return self.cutoff.watch(super()._get_socket(host, port, timeout), client=self)

    def _create_socket(self, timeout):  # imaplib's hook
        return self.cutoff.watch(super()._create_socket(timeout), client=self)


class SMTP(_Watched, smtplib.SMTP):
    pass


class SMTP_SSL(_Watched, smtplib.SMTP_SSL):  # noqa: N801 (smtplib's name)
    pass


class IMAP4(_Watched, imaplib.IMAP4):
    pass


class IMAP4_SSL(_Watched, imaplib.IMAP4_SSL):  # noqa: N801 (imaplib's name)
    pass
