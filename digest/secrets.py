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
    """A secret of the configuration: written inline, or a reference to an environment variable
    (``x_env``) or a file (``x_file``), read when it is first revealed, so a command that needs no secret
    (`digest status`, `digest config`) works where a credential cannot be read. Only :meth:`reveal` gives
    the value, and raises the one-line :class:`ConfigError` when it cannot be had; printing shows ********."""

    __slots__ = ("_value", "spelled", "reference", "_read")

    def __init__(self, value: str | None = None, *, spelled: str = "", reference: str = "", read=None):
        self._value = value
        self.spelled = spelled  # the key as written: "api_key", "api_key_env" or "api_key_file"
        self.reference = reference  # the variable's name or the file's path, for x_env and x_file
        self._read = read

    def reveal(self) -> str:
        if self._value is None:
            self._value = self._read()
        return self._value

    def problem(self) -> str | None:
        """Why the secret cannot be read here, or None when it can."""
        try:
            self.reveal()
        except ConfigError as exc:
            return str(exc)
        return None

    def __bool__(self) -> bool:
        return bool(self.reference) or bool(self._value)

    def __str__(self) -> str:
        return REDACTED

    __repr__ = __str__

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and (other.spelled, other.reference, other._value if not other.reference
                                              else None) == (self.spelled, self.reference,
                                                             self._value if not self.reference else None)

    def __hash__(self) -> int:
        return hash((self.spelled, self.reference))


def resolve_secrets(raw: dict, secret_keys: dict[tuple[str, ...], tuple[str, ...]], label: str, environ,
                    resolve: bool = True, credentials: bool = True) -> dict:
    """Replace each secret key's spelling in the raw TOML data (``x``, ``x_env`` or ``x_file``) by its
    :class:`Secret`. ``secret_keys`` maps a table path (``("chat", "*")``: every chat table) to its secret
    keys. With ``resolve``, every secret is read now, so a missing one is the load's one-line error;
    ``credentials=False`` still leaves unread the files named relative to $CREDENTIALS_DIRECTORY: systemd
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
                secret = _secret(spelled, value, where, environ)
                credential = spelled.endswith("_file") and not Path(value).expanduser().is_absolute() \
                    and environ.get("CREDENTIALS_DIRECTORY")
                if resolve and (credentials or not credential):
                    secret.reveal()
                table[key] = secret
    return raw


def _secret(spelled: str, value: str, where: str, environ) -> Secret:
    if spelled.endswith("_env"):
        def read_variable() -> str:
            if not environ.get(value):
                raise ConfigError(f"{where}: environment variable {value} is not set")
            return environ[value]

        return Secret(spelled=spelled, reference=value, read=read_variable)
    if spelled.endswith("_file"):
        return Secret(spelled=spelled, reference=value, read=lambda: read_secret_file(value, where, environ))
    return Secret(value, spelled=spelled)


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


def read_secret_file(value: str, where: str, environ) -> str:
    path = Path(value).expanduser()
    if not path.is_absolute() and environ.get("CREDENTIALS_DIRECTORY"):
        path = Path(environ["CREDENTIALS_DIRECTORY"]) / path
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        hint = "" if path.is_absolute() or environ.get("CREDENTIALS_DIRECTORY") else \
            " (a relative path is a systemd credential: run under systemd, or set CREDENTIALS_DIRECTORY)"
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}{hint}") from None
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
