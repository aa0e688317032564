"""Secrets: read from the configuration, the environment or a credential file, held so that printing
cannot show them, and redacted wherever text leaves digest (logs, errors, the outbox), in clear and in
the base64 forms a server may quote back.

Every secret key ``x`` of the configuration also accepts ``x_env`` (the name of an environment variable)
and ``x_file`` (a path; relative paths resolve against systemd's ``$CREDENTIALS_DIRECTORY``).
"""

from __future__ import annotations

import base64
import functools
import re
from pathlib import Path

from .text import shown_value

REDACTED = "********"


class ConfigError(Exception):
    """A configuration mistake, already phrased as the one line the user sees."""


class Secret:
    """A resolved secret. Only :meth:`reveal` gives the value; everything else prints it redacted."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __str__(self) -> str:
        return REDACTED

    __repr__ = __str__

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def resolve_secrets(raw: dict, secret_keys: dict[tuple[str, ...], tuple[str, ...]], label: str, environ,
                    credentials: bool = True) -> dict:
    """Replace each secret key's spelling in the raw TOML data (``x``, ``x_env`` or ``x_file``) by its
    :class:`Secret`. ``secret_keys`` maps a table path (``("chat", "*")``: every chat table) to its secret
    keys. ``credentials=False`` leaves unread the files named relative to $CREDENTIALS_DIRECTORY: systemd
    (252 to 256 at least, systemd#35227) hides them from ExecReload=, where `digest config --check` runs."""
    for section_path, keys in secret_keys.items():
        for prefix, table in _tables(raw, section_path):
            for key in keys:
                table_key = ".".join(prefix)
                spellings = [k for k in (key, f"{key}_env", f"{key}_file") if k in table]
                if len(spellings) > 1:
                    raise ConfigError(f"{label}: {table_key}.{spellings[1]}: give only one of {', '.join(spellings)}")
                if not spellings:
                    continue
                spelled = spellings[0]
                where = f"{label}: {table_key}.{spelled}"
                value = table.pop(spelled)
                if not isinstance(value, str):
                    raise ConfigError(f"{where}: expected a string, got {shown_value(value)}")
                if spelled.endswith("_env"):
                    if value not in environ or not environ[value]:
                        raise ConfigError(f"{where}: environment variable {value} is not set")
                    table[key] = Secret(environ[value])
                elif spelled.endswith("_file"):
                    table[key] = Secret(read_secret_file(value, where, environ, credentials))
                else:
                    table[key] = Secret(value)
    return raw


def _tables(raw: dict, section_path: tuple[str, ...]):
    """Yield (key path, table) for a section path whose '*' matches every sub-table."""
    found = [((), raw)]
    for part in section_path:
        deeper = []
        for prefix, table in found:
            if not isinstance(table, dict):
                continue
            names = list(table) if part == "*" else [part]
            deeper += [(prefix + (n,), table[n]) for n in names if isinstance(table.get(n), dict)]
        found = deeper
    return found


def read_secret_file(value: str, where: str, environ, credentials: bool = True) -> str:
    path = Path(value).expanduser()
    if not path.is_absolute() and environ.get("CREDENTIALS_DIRECTORY"):
        if not credentials:
            return "(a credential, not read)"
        path = Path(environ["CREDENTIALS_DIRECTORY"]) / path
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None
    if not secret:
        raise ConfigError(f"{where}: {path} is empty")
    return secret


def url_tokens(url: str) -> list[str]:
    """The parts of an apprise URL that are likely credentials (webhook ids, bot tokens, passwords):
    everything but the scheme and dotted host names."""
    rest = url.split("://", 1)[-1]
    return [part for part in re.split(r"[/:@?&=#,]+", rest) if len(part) >= 6 and "." not in part]


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every secret replaced by ********, in the clear and in base64 (an SMTP server's
    reply to AUTH can quote the credentials it was sent, base64-encoded)."""
    for form in _forms(tuple(secrets)):
        if form in text:
            text = text.replace(form, REDACTED)
    return text


@functools.lru_cache(maxsize=32)
def _forms(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """Each secret as itself and as the part of any base64 text that encodes it, at each of the three
    alignments it can have inside a longer encoded string; longest first."""
    forms = set()
    for secret in secrets:
        if not secret:
            continue
        forms.add(secret)
        raw = secret.encode("utf-8")
        for shift, skip in ((0, 0), (1, 2), (2, 3)):  # base64 characters that also encode the bytes before
            data = b"\0" * shift + raw
            encoded = base64.b64encode(data).decode("ascii")[skip:len(data) // 3 * 4]
            if len(encoded) >= 6:
                forms.add(encoded)
        forms.add(base64.b64encode(raw).decode("ascii"))
    return tuple(sorted(forms, key=len, reverse=True))
