"""Email over SMTP with the standard library: SSL or STARTTLS with certificate verification, AUTH,
one message per recipient (one outbox row each), multipart text + HTML, and the complete digest attached
as an HTML file when the body, kept under Gmail's clipping size, leaves something out (render.py)."""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import re
import smtplib
import socket
import ssl
from contextlib import contextmanager
from email.message import EmailMessage

from .. import cutoff
from ..config import EmailSettings, Settings
from ..feedback.links import message_key
from ..records import Digest, Rendered
from ..storage.outbox import Claim
from .errors import PermanentFailure, TransientFailure


def send_email(claim: Claim, rendered: Rendered, digest: Digest, settings: Settings) -> None:
    """Send one digest to one recipient. Marks the claim sent before QUIT: once the server said 250 to
    DATA, nothing that can still fail should leave the row looking unsent."""
    config = settings.email
    if not config.enabled:
        raise PermanentFailure("email.host is not set, so no email can be sent")
    message = build_message(rendered, digest, sender=sender_address(config), recipient=claim.target,
                            key=message_key(settings))
    with smtp_session(config) as smtp:
        try:
            smtp.send_message(message, from_addr=sender_address(config), to_addrs=[claim.target])
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = next(iter(exc.recipients.values()))
            raise _by_code(code, f"{_where(config)}: recipient {claim.target} refused: {code} {_text(reply)}")
        except smtplib.SMTPResponseException as exc:
            raise _by_code(exc.smtp_code, f"{_where(config)}: message refused: {exc.smtp_code} "
                                          f"{_text(exc.smtp_error)}")
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            raise TransientFailure(f"{_where(config)}: connection lost while sending: {_reason(exc)}")
        claim.sent()


def send_text(settings: Settings, recipient: str, subject: str, body: str) -> None:
    """A short plain-text message (a failure notice), tried once: no outbox, no retry."""
    config = settings.email
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender_address(config)
    message["To"] = recipient
    message["Date"] = email.utils.formatdate(localtime=True)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body, charset="utf-8")
    with smtp_session(config) as smtp:
        smtp.send_message(message, from_addr=sender_address(config), to_addrs=[recipient])


def build_message(rendered: Rendered, digest: Digest, *, sender: str, recipient: str,
                  key: bytes | None = None) -> EmailMessage:
    """multipart/alternative, text first, inside multipart/mixed with the complete digest attached when
    the HTML body does not hold all of it. Quoted-printable keeps every line under SMTP's 998-octet limit,
    however long a digest's lines are."""
    message = EmailMessage()
    message["Subject"] = rendered.subject
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = email.utils.formatdate(localtime=True)
    message["Message-ID"] = message_id(digest, recipient, sender, key=key)
    message["Auto-Submitted"] = "auto-generated"  # auto-responders should not answer a digest
    message.set_content(rendered.text, charset="utf-8", cte="quoted-printable")
    message.add_alternative(rendered.email_body, subtype="html", charset="utf-8", cte="quoted-printable")
    if rendered.attaches:
        message.add_attachment(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable",
                               filename=rendered.attachment)
    return message


def message_id(digest: Digest, recipient: str, sender: str, *, key: bytes | None = None) -> str:
    """The same for every attempt at one digest and recipient, so a resent copy is recognisably the same.
    With ``key`` (feedback.links.message_key, when replies are read) it carries an HMAC that only digest
    can make, so a reply cannot name a digest it was never sent (feedback/replies.py)."""
    what = f"{digest.id}\0{digest.profile}\0{digest.day}\0{recipient.lower()}".encode()
    token = (hmac.new(key, what, hashlib.sha256).hexdigest()[:32] if key
             else hashlib.sha256(what).hexdigest()[:16])
    domain = sender.rpartition("@")[2] or "digest.invalid"
    profile = re.sub(r"[^A-Za-z0-9-]", "-", digest.profile)[:32]
    return f"<digest.{digest.day}.{profile}.{token}@{domain}>"


def sender_address(config: EmailSettings) -> str:
    if config.from_:
        return config.from_
    if "@" in config.user:
        return config.user
    return f"digest@{socket.gethostname()}"


@contextmanager
def smtp_session(config: EmailSettings):
    """Connected, encrypted as configured (certificate verified) and logged in; QUIT on the way out. The
    whole conversation is cut off after four times ``email.timeout`` (:mod:`digest.cutoff`; a retry later)."""
    with cutoff.Cutoff(config.timeout * cutoff.WHOLE_CONVERSATION_TIMEOUTS) as limit:
        try:
            smtp = _connect(config, limit)
            try:
                if config.user:
                    _login(smtp, config)
                yield smtp
            finally:
                try:
                    smtp.quit()
                except (smtplib.SMTPException, OSError):
                    smtp.close()
        except (TransientFailure, PermanentFailure, smtplib.SMTPException, OSError):
            if limit.passed:
                raise TransientFailure(limit.reason(_where(config))) from None
            raise


def _connect(config: EmailSettings, limit: cutoff.Cutoff) -> smtplib.SMTP:
    where = _where(config)
    try:
        context = ssl.create_default_context(cafile=config.ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise PermanentFailure(f"email.ca_file: cannot load {config.ca_file}: {_reason(exc)}")
    smtp = None
    try:
        if config.security == "ssl":
            smtp = cutoff.SMTP_SSL(config.host, config.port, timeout=config.timeout, context=context, cutoff=limit)
        else:
            smtp = cutoff.SMTP(config.host, config.port, timeout=config.timeout, cutoff=limit)
            if config.security == "starttls":
                smtp.ehlo()
                smtp.starttls(context=context)
        smtp.ehlo()
        return smtp
    except ssl.SSLCertVerificationError as exc:
        _close(smtp)
        raise PermanentFailure(f"{where}: TLS certificate not trusted ({exc.verify_message}); "
                               f"set email.ca_file if the server uses a private CA")
    except smtplib.SMTPNotSupportedError:
        _close(smtp)
        raise PermanentFailure(f"{where}: the server does not offer STARTTLS; "
                               f"set email.security = \"ssl\" or \"none\"")
    except smtplib.SMTPResponseException as exc:
        _close(smtp)
        raise _by_code(exc.smtp_code, f"{where}: the server refused the session: {exc.smtp_code} "
                                      f"{_text(exc.smtp_error)}")
    except (smtplib.SMTPException, OSError) as exc:  # refused, timed out, TLS handshake, DNS
        _close(smtp)
        raise TransientFailure(f"{where}: cannot connect: {_reason(exc)}")


def _login(smtp: smtplib.SMTP, config: EmailSettings) -> None:
    password = config.password.reveal() if config.password else ""
    smtp.user, smtp.password = config.user, password
    try:
        if "plain" in smtp.esmtp_features.get("auth", "").lower().split():
            # One mechanism, one answer: smtplib.login would try the others after a refusal and
            # report the last one's error instead of the server's 535.
            smtp.auth("PLAIN", smtp.auth_plain)
        else:
            smtp.login(config.user, password)
    except smtplib.SMTPAuthenticationError as exc:
        # The reply is not quoted: a server may echo the AUTH line, which carries the password in base64.
        status = re.match(r"\s*([245]\.\d{1,3}\.\d{1,3})\b", _text(exc.smtp_error))
        raise _by_code(exc.smtp_code, f"{_where(config)}: login as {config.user} refused: {exc.smtp_code}"
                                      f"{' ' + status[1] if status else ''} (check email.user and the password)")
    except smtplib.SMTPNotSupportedError:
        raise PermanentFailure(f"{_where(config)}: the server offers no AUTH here (is TLS on?); "
                               f"remove email.user or enable TLS")
    except smtplib.SMTPException as exc:
        raise TransientFailure(f"{_where(config)}: login as {config.user} failed: {_reason(exc)}")


def check_email(settings: Settings) -> tuple[str, bool, str]:
    """Connect, TLS and log in, sending nothing."""
    config = settings.email
    done = [f"connected to {_where(config)}"]
    try:
        with smtp_session(config) as smtp:
            if config.security != "none":
                done.append(f"{'STARTTLS' if config.security == 'starttls' else 'SSL'} with a verified certificate")
            if config.user:
                done.append(f"logged in as {config.user}")
            smtp.noop()
    except (TransientFailure, PermanentFailure) as exc:
        return "email", False, str(exc)
    except (smtplib.SMTPException, OSError) as exc:
        return "email", False, f"{_where(config)}: {_reason(exc)}"
    return "email", True, ", ".join(done) + " (nothing sent)"


def _by_code(code: int, message: str) -> Exception:
    """SMTP's own verdict: 4xx means try again later, 5xx means it will not work as it is."""
    return TransientFailure(message) if 400 <= code < 500 else PermanentFailure(message)


def _where(config: EmailSettings) -> str:
    return f"{config.host}:{config.port}"


def _text(reply: bytes | str) -> str:
    if isinstance(reply, bytes):
        reply = reply.decode("utf-8", "replace")
    return " ".join(reply.split())


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def _close(smtp: smtplib.SMTP | None) -> None:
    if smtp is not None:
        smtp.close()
