"""The half of the configuration that needs no pydantic: where digest's files live, the rules the settings
answer (``settings.database_path()``, ``settings.channels_for(profile)``, ``schedule.tz`` ...), and the
reading commands' view of a configuration already validated.

Importing pydantic and building the model costs a command 0.07 s of CPU, a third of a cold `digest
status`. So every full validation by a command other than the reading ones (run, the daemon, check,
`config`; not `config --check`, which ExecReload= runs as root) leaves a note in the cache directory:
the validated settings as plain data, under a hash of the file's text and of the code that validates
it, with no secret in it. A reading command (status, search, show, digests, stats, feedback) whose file
hashes to a note reads the note (:func:`validated_view`); any other file, edited since or never
validated, is validated in full first, its mistakes the usual one-line errors. The view's secrets are
read from the file as the model's are (:func:`digest.secrets.resolve_secrets`), never from the note.
The model (config.py) and the view share the rules below by inheriting them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tomllib
import zoneinfo
from pathlib import Path
from typing import Any

from .secrets import ConfigError, Secret, resolve_secrets, url_tokens
from .taxonomy import CategoryExpression
from .text import nearest

NOTES = "validated"  # the folder of notes in the cache directory
# The code that decides whether a file is valid and what it means: a note made by other code is not used.
VALIDATING_CODE = ("config.py", "config_rules.py", "secrets.py", "taxonomy.py", "text.py")


# -- where files live -------------------------------------------------------------------------------------

def config_dir() -> Path:
    if os.environ.get("CONFIGURATION_DIRECTORY"):  # systemd's ConfigurationDirectory=
        return Path(os.environ["CONFIGURATION_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "digest"


def state_dir() -> Path:
    if os.environ.get("STATE_DIRECTORY"):  # systemd's StateDirectory=
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "digest"


def cache_dir() -> Path:
    """What digest can rebuild (the embedding model exported to ONNX): losing it costs time, never data."""
    if os.environ.get("CACHE_DIRECTORY"):  # systemd's CacheDirectory=
        return Path(os.environ["CACHE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "digest"


def find_config(explicit: str | os.PathLike | None = None) -> Path:
    """--config, then $DIGEST_CONFIG, then the config directory."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("DIGEST_CONFIG"):
        return Path(os.environ["DIGEST_CONFIG"]).expanduser()
    return config_dir() / "config.toml"


def config_label(explicit: str | os.PathLike | None, file: Path) -> str:
    """The file as errors name it: as the user gave it (--config, $DIGEST_CONFIG), or its whole path."""
    return str(explicit or os.environ.get("DIGEST_CONFIG") or file)


def read_config_text(file: Path) -> str:
    """The file's text, or a one-line :class:`ConfigError` saying why it cannot be had."""
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: no configuration file here; create one with `digest init`") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the configuration: {exc.strerror}") from None


# -- the rules, shared by the model and the view -------------------------------------------------------------

class ArxivRules:
    @property
    def expression(self) -> CategoryExpression:
        return CategoryExpression.parse(self.categories)


class EmbeddingRules:
    @property
    def vectors_key(self) -> str:
        """What the ``embeddings`` table and the vector index file the vectors under: the model, and int8
        apart, since its vectors are not float32's (switching precision embeds again, as switching models)."""
        return self.model if self.precision == "float32" else f"{self.model} int8"


class EnabledByModel:
    @property
    def enabled(self) -> bool:
        return bool(self.model)


class EnabledByHost:
    @property
    def enabled(self) -> bool:
        return bool(self.host)


class ScheduleRules:
    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def time_of_day(self) -> dt.time:
        return dt.time.fromisoformat(self.time)


class FeedbackRules:
    @property
    def links(self) -> bool:
        """Links go into digests only when something serves them and readers can reach it."""
        return bool(self.listen and self.public_url)


class UnknownProfile(ConfigError):
    """A profile named (``--profile``, or a run's profiles) that the configuration does not have."""


class SettingsRules:
    """What the stages ask of the whole configuration."""

    def check_profiles(self, names, *, also=()) -> None:
        """Every one of ``names`` a profile of the configuration, or of ``also`` (a reading command's
        profiles that once had digests). The first that is not is :class:`UnknownProfile`, one line
        naming it, the file, the profiles there are and the nearest: the one check of a profile's name
        that the CLI and the pipeline make."""
        known = list(dict.fromkeys([*self.profiles, *also]))
        for name in names:
            if name not in known:
                near = nearest(name, known)
                raise UnknownProfile(f"no profile named {json.dumps(name)} in {self.source} (profiles: "
                                     f"{', '.join(known)})" + (f"; did you mean {near}?" if near else ""))

    def expression_for(self, profile) -> CategoryExpression:
        return CategoryExpression.parse(profile.categories or self.arxiv.categories)

    def top_for(self, profile) -> int:
        return self.digest.top if profile.top is None else profile.top

    def channels_for(self, profile) -> list[tuple[str, str]]:
        """(channel, target) pairs: ("email", address), ("chat", name), ("files", "")."""
        channels = [("email", address) for address in profile.email_to]
        channels += [("chat", name) for name in profile.chat]
        if profile.files or self.files.always or not channels:
            channels.append(("files", ""))
        return channels

    def feed_categories(self) -> list[str]:
        """Every category any profile includes: one feed request covers them all."""
        codes: dict[str, None] = {}
        for profile in self.profiles.values():
            codes.update(dict.fromkeys(self.expression_for(profile).include))
        return list(codes)

    def database_path(self) -> Path:
        return Path(self.storage.path).expanduser() if self.storage.path else state_dir() / "digest.db"

    def files_dir(self) -> Path:
        return Path(self.files.dir).expanduser() if self.files.dir else state_dir() / "digests"

    def secret_values(self) -> list[Secret]:
        raise NotImplementedError

    def secrets(self) -> list[str]:
        """Every resolved secret value, for log and error redaction; the parts of chat URLs that are likely
        credentials (a webhook's path often *is* its token); and SMTP's AUTH PLAIN blob (NUL, user, NUL,
        password), which a server's error reply may quote in base64."""
        found = [s.reveal() for s in self.secret_values() if s and not s.problem()]  # unread: nothing to leak
        found += [token for target in self.chat.values() if target.url and not target.url.problem()
                  for token in url_tokens(target.url.reveal())]
        if self.email.password and self.email.user and not self.email.password.problem():
            found.append(f"\0{self.email.user}\0{self.email.password.reveal()}")
        return sorted(set(found), key=len, reverse=True)


# -- the note a validation leaves, and the view a reading command makes of it ---------------------------------

def note_path(text: str) -> Path:
    """Where the note for this text, validated by this code, lives."""
    digest = hashlib.sha256(text.encode("utf-8"))
    here = Path(__file__).parent
    for name in VALIDATING_CODE:
        digest.update((here / name).read_bytes())
    return cache_dir() / NOTES / f"{digest.hexdigest()}.json"


def leave_note(text: str, data: dict, secret_keys: dict) -> None:
    """Remember that ``text`` is valid and what it means (``data``: the settings as plain data, every
    secret left out). Best effort: a cache that cannot be written only costs the next reading command
    its validation."""
    note = {"settings": data, "secret_keys": [[list(path), list(keys)] for path, keys in secret_keys.items()]}
    path = note_path(text)
    if path.exists():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps(note, default=_encode), encoding="utf-8")
        os.replace(partial, path)
    except OSError:
        pass


def validated_view(text: str, source: str, label: str, environ=None) -> SettingsView | None:
    """The settings of ``text`` as its note has them, or None when this text was never validated (by this
    code): then it must be."""
    try:
        note = json.loads(note_path(text).read_text(encoding="utf-8"), object_hook=_decode)
        secret_keys = {tuple(path): tuple(keys) for path, keys in note["secret_keys"]}
        raw = resolve_secrets(tomllib.loads(text), secret_keys, label, os.environ if environ is None else environ,
                              resolve=False)
        return SettingsView.of(note["settings"], raw, secret_keys, source)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ConfigError):
        return None  # no note, or one that is not whole: validate the file, which says what is wrong


def _encode(value):
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    raise TypeError(f"not in a note: {type(value).__name__}")


def _decode(value: dict):
    return dt.date.fromisoformat(value["$date"]) if list(value) == ["$date"] else value


class Table:
    """A table of the view: its keys as attributes."""

    def __init__(self, data: dict[str, Any]):
        self.__dict__.update(data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__dict__!r})"


class ArxivView(ArxivRules, Table): pass  # noqa: E701
class EmbeddingView(EmbeddingRules, Table): pass  # noqa: E701
class LLMView(EnabledByModel, Table): pass  # noqa: E701
class HostView(EnabledByHost, Table): pass  # noqa: E701
class ScheduleView(ScheduleRules, Table): pass  # noqa: E701
class FeedbackView(FeedbackRules, Table): pass  # noqa: E701


SECTIONS = {"arxiv": ArxivView, "embedding": EmbeddingView, "llm": LLMView, "email": HostView,
            "schedule": ScheduleView, "feedback": FeedbackView}


class SettingsView(SettingsRules, Table):
    """The settings a reading command reads: the same values and rules as the model's, without it."""

    @classmethod
    def of(cls, data: dict, raw: dict, secret_keys: dict, source: str) -> SettingsView:
        tables = {name: SECTIONS.get(name, Table)(dict(value)) if isinstance(value, dict) else value
                  for name, value in data.items() if name not in ("chat", "profiles")}
        tables["feedback"].imap = HostView(tables["feedback"].imap)
        tables["chat"] = {name: Table(dict(value)) for name, value in data["chat"].items()}
        tables["profiles"] = {name: Table({**value, "name": name,
                                           "interests": [Table(i) for i in value["interests"]]})
                              for name, value in data["profiles"].items()}
        view = cls({**tables, "source": source})
        view._secrets = []
        for path, keys in secret_keys.items():  # each secret where the model has it, as the file gives it
            for table_path, raw_table in _raw_tables(raw, path):
                target = view._table(table_path)
                for key in keys:
                    secret = raw_table.get(key)
                    setattr(target, key, secret)
                    if isinstance(secret, Secret):
                        view._secrets.append(secret)
        return view

    def _table(self, path: tuple[str, ...]):
        found: Any = self
        for part in path:
            found = found[part] if isinstance(found, dict) else getattr(found, part)
        return found

    def secret_values(self) -> list[Secret]:
        return self._secrets


def _raw_tables(raw: dict, path: tuple[str, ...]):
    """(key path, table) of the raw TOML for a section path whose '*' matches every sub-table."""
    found = [((), raw)]
    for part in path:
        found = [(prefix + (name,), table[name]) for prefix, table in found if isinstance(table, dict)
                 for name in (list(table) if part == "*" else [part]) if isinstance(table.get(name), dict)]
    return found
