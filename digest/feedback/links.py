"""Signed "more like this" / "less like this" links: who (profile), which paper, what, until when.

A token is ``base64url(profile|paper|action|expires) . base64url(HMAC-SHA256(key, that)[:16])``. The key is
``[feedback] key`` (a secret, so ``key_file`` reads a systemd credential) or 32 random bytes that digest
writes once to ``<state dir>/feedback.key`` (mode 0600). Whoever holds a link can cast that one vote for
that one profile and nothing else; altering any part breaks the signature.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import os
import secrets
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import Settings, state_dir

ACTIONS = {"like": 1, "dislike": -1}
KEY_FILE = "feedback.key"
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


def signing_key(settings: Settings) -> bytes:
    """The configured key, else the one in the state directory, made on first use (racing makers agree:
    O_EXCL lets one write it, the others read what it wrote)."""
    if settings.feedback.key:
        return settings.feedback.key.reveal().encode()
    path = state_dir() / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32) + "\n")
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    return bytes.fromhex(path.read_text().strip())


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
    profile, paper_id, action, expires = payload.decode().split("|")
    vote = Vote(profile, paper_id, action, int(expires))
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
