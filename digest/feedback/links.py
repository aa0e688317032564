"""Signed "more like this" / "less like this" links: who (profile), which paper, what, until when.

A token is ``base64url(profile|paper|action|expires) . base64url(HMAC-SHA256(key, that)[:16])``. The key is
``[feedback] key`` (a secret, so ``key_file`` reads a systemd credential) or 32 random bytes that digest
writes once to ``<state dir>/feedback.key`` (mode 0600, linked into place only once written whole). Whoever
holds a link can cast that one vote for that one profile and nothing else; altering any part breaks the
signature. A key that is short, junk, not a regular file or readable by others is refused (one log line):
digests then go out without links, and the web page records nothing.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import hmac
import logging
import os
import secrets
import stat
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..atomic import create_atomically
from ..config import Settings, state_dir

log = logging.getLogger(__name__)

ACTIONS = {"like": 1, "dislike": -1}
KEY_FILE = "feedback.key"
MIN_KEY_BYTES = 16  # 128 bits, as the signatures
_MAX_KEY_FILE = 4096
_SIGNATURE_BYTES = 16  # 128 bits: forging one is out of reach, and the links stay short enough for chat


class BadLink(Exception):
    """A token that is forged, altered, malformed or expired; the web page says no more than 403."""


@dataclass(frozen=True)
class Vote:
    profile: str
    paper_id: str
    action: str  # "like" or "dislike"
    expires: int  # Unix seconds

    @property
    def value(self) -> int:
        return ACTIONS[self.action]


def signing_key(settings: Settings) -> bytes | None:
    """The configured key, else the one in the state directory, made on first use; None (logged once) when
    the key cannot be trusted, so digests go out without links and nothing is recorded with it. A key
    signed with nothing, or one that others can read, would let anyone forge a vote."""
    try:
        if settings.feedback.key:
            return _checked(settings.feedback.key.reveal().encode(), "feedback.key")
        return _key_file(state_dir() / KEY_FILE)
    except KeyRefused as exc:
        _log_once(f"feedback links and replies off: {exc}")
        return None


class KeyRefused(Exception):
    """The signing key is missing, short, junk, unreadable or readable by others; one line, never the key."""


def _key_file(path: Path) -> bytes:
    """Read the key file, making it first when there is none (racing makers agree: the first linked wins)."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        create_atomically(path, secrets.token_hex(32) + "\n")
        return _read_key(path)
    except OSError as exc:
        raise KeyRefused(f"{path}: cannot make the key: {exc.strerror}") from None


def _read_key(path: Path) -> bytes:
    """The key in ``path`` when it is a regular file of the owner's only (checked on the open file, which
    O_NONBLOCK opens without waiting should it be a FIFO), holding enough hex digits."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise KeyRefused(f"{path}: cannot read the key: {exc.strerror}") from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise KeyRefused(f"{path}: not a regular file")
        if status.st_mode & 0o077:
            raise KeyRefused(f"{path}: others may read it (mode {stat.S_IMODE(status.st_mode):04o}); "
                             f"chmod 600 it, or remove it and digest makes a new one")
        text = os.read(fd, _MAX_KEY_FILE)
    finally:
        os.close(fd)
    try:
        key = bytes.fromhex(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise KeyRefused(f"{path}: not a key (expected hex digits); remove it and digest makes a new one") from None
    return _checked(key, str(path))


def _checked(key: bytes, where: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise KeyRefused(f"{where}: the key is {len(key)} bytes, fewer than {MIN_KEY_BYTES}; "
                         f"{'remove it and digest makes a new one' if '/' in where else 'set a longer one'}")
    return key


@functools.cache
def _log_once(line: str) -> None:
    log.error("%s", line)


def message_key(settings: Settings) -> bytes | None:
    """The key the Message-IDs of digest's emails are signed with (deliver/email.py), so that a reply is
    matched to a digest only by someone who saw that email. Derived from the links' key, so one secret
    serves both and a Message-ID reveals nothing a link could be forged with. None when replies are not
    read (no key file is made for them) or the key is refused."""
    if not settings.feedback.imap.enabled:
        return None
    key = signing_key(settings)
    return hmac.new(key, b"digest reply message-id v1", hashlib.sha256).digest() if key else None


def vote_of(settings: Settings, token: str, now: dt.datetime | None = None) -> Vote:
    """The vote a link carries for one of today's profiles, or :class:`BadLink`; :class:`KeyRefused` when
    no key can be trusted. A profile no longer configured, or the '' that means "every profile" to
    `digest like`, records nothing: a link votes for the one profile its digest was made for."""
    key = signing_key(settings)
    if key is None:
        raise KeyRefused("no usable key")
    vote = read_token(key, token, now)
    if not vote.profile or vote.profile not in settings.profiles:
        raise BadLink("no such profile")
    return vote


def make_token(key: bytes, vote: Vote) -> str:
    payload = f"{vote.profile}|{vote.paper_id}|{vote.action}|{vote.expires}".encode()
    return f"{_b64(payload)}.{_b64(_sign(key, payload))}"


def read_token(key: bytes, token: str, now: dt.datetime | None = None) -> Vote:
    """The vote a token carries, or :class:`BadLink`. The signature is checked before anything is parsed."""
    try:
        payload_part, signature_part = token.split(".")
        payload, signature = _unb64(payload_part), _unb64(signature_part)
    except (ValueError, binascii.Error):
        raise BadLink("malformed") from None
    if not hmac.compare_digest(signature, _sign(key, payload)):
        raise BadLink("bad signature")
    try:
        profile, paper_id, action, expires = payload.decode().split("|")
        vote = Vote(profile, paper_id, action, int(expires))
    except ValueError:  # signed by us, so never seen; kept a 403 rather than a 500 all the same
        raise BadLink("malformed") from None
    if vote.action not in ACTIONS:
        raise BadLink("unknown action")
    if vote.expires < (now or dt.datetime.now(dt.timezone.utc)).timestamp():
        raise BadLink("expired")
    return vote


def link_maker(settings: Settings, profile: str,
               now: dt.datetime | None = None) -> Callable[[str], dict[str, str]] | None:
    """``paper_id -> {"like": url, "dislike": url}`` for one profile's digest, or None when links are off."""
    if not settings.feedback.links:
        return None
    key = signing_key(settings)
    if key is None:  # refused, logged once: the digest goes out without links
        return None
    now = now or dt.datetime.now(dt.timezone.utc)
    expires = int((now + dt.timedelta(days=settings.feedback.link_days)).timestamp())

    def links(paper_id: str) -> dict[str, str]:
        return {action: feedback_url(settings, make_token(key, Vote(profile, paper_id, action, expires)))
                for action in ACTIONS}
    return links


def feedback_url(settings: Settings, token: str) -> str:
    return f"{settings.feedback.public_url}/feedback/{urllib.parse.quote(token, safe='.')}"


def _sign(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, b"digest feedback link v1\n" + payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    # validate: the lenient default would skip stray characters, so two spellings would carry one vote.
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
