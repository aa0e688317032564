"""A real SMTP server on loopback (aiosmtpd) for tests: STARTTLS or implicit SSL with a certificate from
a test CA (trustme), AUTH PLAIN/LOGIN only over TLS, and failures a test can script.

    with SMTPServer(users={"me": "secret"}) as smtp:        # STARTTLS on 127.0.0.1:<free port>
        ... point email.host/port/ca_file at smtp.host, smtp.port, smtp.ca_file ...
        smtp.messages[0].message["Subject"]                 # parsed email.message.EmailMessage

Scripting: ``refuse_recipient(address, "550 5.1.1 no such user")`` refuses RCPT for one address;
``fail_data("451 4.3.0 try later", times=1)`` answers the next DATA commands with an error;
``disconnect_in_data(times=1, after_accepting=False)`` drops the connection at DATA (after storing the
message when ``after_accepting``, which is the crash window no SMTP client can close).
"""

from __future__ import annotations

import base64
import email
import email.policy
import logging
import ssl
import tempfile
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from loopback import Started, free_port

# aiosmtpd logs a deprecation warning of its own at every AUTH; keep test and bench output readable.
logging.getLogger("mail.log").setLevel(logging.ERROR)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage
    authenticated_as: str | None

    def part(self, subtype: str) -> str:
        """The decoded text of the message's own text/<subtype> part (its body, never an attachment)."""
        for part in self.message.walk():
            if part.get_content_type() == f"text/{subtype}" and not part.is_attachment():
                return part.get_content()
        raise KeyError(f"no text/{subtype} part")

    def attachments(self) -> dict[str, str]:
        """The decoded text of each attached file, by file name."""
        return {part.get_filename(): part.get_content() for part in self.message.walk() if part.is_attachment()}


class _Handler:
    def __init__(self, server: "SMTPServer"):
        self.server = server

    async def handle_RCPT(self, smtp, session, envelope, address, rcpt_options):
        refusal = self.server.refused.get(address.lower())
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp, session, envelope):
        server = self.server
        with server.lock:
            scripted = server.data_failures.pop(0) if server.data_failures else None
        if scripted and scripted.startswith("disconnect"):
            if scripted == "disconnect-after-accepting":
                server._store(envelope, session)
            smtp.transport.close()
            return "421 closing"  # never reaches the client: the transport is closed
        if scripted:
            return scripted
        server._store(envelope, session)
        return "250 OK: queued"


class SMTPServer(Started):
    def __init__(self, *, security: str = "starttls", users: dict[str, str] | None = None, hostname="127.0.0.1"):
        self.security = security
        self.users = dict(users or {})
        self.host = hostname
        self.messages: list[Received] = []
        self.auth_attempts: list[tuple[str, bool]] = []
        self.refused: dict[str, str] = {}
        self.data_failures: list[str] = []
        self.quote_auth = False  # a refused login is answered with the AUTH line it was sent
        self.lock = threading.Lock()
        self.ca = trustme.CA()
        self._dir = tempfile.TemporaryDirectory(prefix="smtp-ca-")
        self.ca_file = str(Path(self._dir.name) / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self.port = free_port(hostname)
        self.controller = self._controller()

    # -- scripting ----------------------------------------------------------------------------

    def refuse_recipient(self, address: str, reply: str = "550 5.1.1 mailbox unavailable") -> None:
        self.refused[address.lower()] = reply

    def fail_data(self, reply: str = "451 4.3.0 temporary failure, try again later", times: int = 1) -> None:
        with self.lock:
            self.data_failures += [reply] * times

    def disconnect_in_data(self, times: int = 1, after_accepting: bool = False) -> None:
        with self.lock:
            self.data_failures += ["disconnect-after-accepting" if after_accepting else "disconnect"] * times

    def settings_toml(self, user: str | None = None, password: str | None = None, sender="digest@example.org") -> str:
        """An [email] table pointing digest at this server."""
        lines = ["[email]", f'host = "{self.host}"', f"port = {self.port}", f'security = "{self.security}"',
                 f'ca_file = "{self.ca_file}"', f'from = "{sender}"', "timeout = 10"]
        if user:
            lines += [f'user = "{user}"', f'password = "{password}"']
        return "\n".join(lines) + "\n"

    # -- running ------------------------------------------------------------------------------

    def _controller(self) -> Controller:
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(self.host, "localhost").configure_cert(server_context)
        # Over implicit SSL aiosmtpd does not know the session is encrypted; it is, so AUTH may be offered
        # (and is then not required, which aiosmtpd would warn about).
        implicit = self.security == "ssl"
        options = dict(hostname=self.host, port=self.port, authenticator=self._authenticate,
                       auth_required=bool(self.users) and not implicit, auth_require_tls=not implicit)
        if self.security == "ssl":
            return Controller(_Handler(self), ssl_context=server_context, **options)
        if self.security == "starttls":
            return Controller(_Handler(self), tls_context=server_context, require_starttls=True, **options)
        return Controller(_Handler(self), **options)

    def _authenticate(self, smtp, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode()
        ok = self.users.get(user) == auth_data.password.decode()
        self.auth_attempts.append((user, ok))
        # handled=False: aiosmtpd answers 235 or 535 itself, or with ``message``.
        message = None
        if not ok and self.quote_auth:  # as some servers do: the refused AUTH PLAIN line, quoted back
            blob = base64.b64encode(b"\0" + auth_data.login + b"\0" + auth_data.password).decode()
            message = f"535 5.7.8 Authentication failed for AUTH PLAIN {blob}"
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None, message=message)

    def _store(self, envelope, session) -> None:
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        received = Received(envelope.mail_from, list(envelope.rcpt_tos), raw, message,
                            session.auth_data if session.authenticated else None)
        with self.lock:
            self.messages.append(received)

    def start(self) -> "SMTPServer":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
        self._dir.cleanup()



if __name__ == "__main__":  # by hand: an SMTP server with STARTTLS that prints what it receives
    from loopback import serve_until_interrupted

    class Printing(SMTPServer):
        def _store(self, envelope, session) -> None:
            super()._store(envelope, session)
            last = self.messages[-1]
            print(f"received from {last.mail_from} for {', '.join(last.rcpt_tos)}: {last.message['Subject']}",
                  flush=True)

    server = Printing()
    serve_until_interrupted(server, "Put this in digest's configuration:", "", server.settings_toml())
