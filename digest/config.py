"""The whole configuration: declared once, validated once at load, secrets resolved and redacted here.

A mistake in the file is one line naming the file, the key path and what was expected::

    config.toml: email.port: expected an integer, got "abc"

Secrets are never required inline: every secret key ``x`` also accepts ``x_env`` (the name of an
environment variable) and ``x_file`` (a path; relative paths resolve against systemd's
``$CREDENTIALS_DIRECTORY`` when it is set). Resolved secrets are held in :class:`Secret`, whose
``str`` and ``repr`` are redacted, so printing or logging a setting cannot leak one (see
:mod:`digest.secrets`).

Longer than most modules on purpose: every setting is declared once, here, with its default, bounds and
help, and the same declaration drives validation, the one-line errors and `digest config`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import tomllib
import typing
import zoneinfo
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .secrets import REDACTED, ConfigError, Secret, resolve_secrets, url_tokens
from .taxonomy import CategoryExpression, CategoryExpressionError
from .text import shown_value

PROFILE_NAME = re.compile(r"[A-Za-z0-9_-]+")
DEFAULT_MODEL = "all-MiniLM-L6-v2"


class Section(BaseModel):
    # TOML already types its values, so no coercion: "abc" for a port is an error, not a surprise.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, arbitrary_types_allowed=True)


class ArxivSettings(Section):
    categories: str = "cs.AI"
    contact: str = Field("", description="your email address, sent in the User-Agent as arXiv asks")
    feed_url: str = "https://rss.arxiv.org/atom/"
    api_url: str = "https://export.arxiv.org/api/query"
    oai_url: str = "https://oaipmh.arxiv.org/oai"
    html_url: str = Field("https://arxiv.org/html/", description="arXiv's HTML papers, for llm.full_text")
    min_interval: float = Field(3.0, ge=0, description="seconds between two requests to arXiv")
    timeout: float = Field(30.0, gt=0)
    retries: int = Field(4, ge=0)
    holidays: list[dt.date] = Field([], description="weekdays arXiv announces nothing on, beyond the known lists")
    not_holidays: list[dt.date] = Field([], description="days the known lists call holidays that are not")

    @field_validator("categories")
    @classmethod
    def _valid_expression(cls, value: str) -> str:
        return _check_expression(value)

    @field_validator("holidays", "not_holidays", mode="before")
    @classmethod
    def _dates(cls, value):
        """TOML dates (2027-01-18) or strings ("2027-01-18")."""
        if not isinstance(value, list):
            return value
        days = []
        for item in value:
            if isinstance(item, dt.date) and not isinstance(item, dt.datetime):
                days.append(item)
                continue
            try:
                days.append(dt.date.fromisoformat(item))
            except (TypeError, ValueError):
                raise ValueError(f"expected dates as YYYY-MM-DD, got {_show(item)}") from None
        return days

    @property
    def expression(self) -> CategoryExpression:
        return CategoryExpression.parse(self.categories)


class StorageSettings(Section):
    path: str = Field("", description="the SQLite database; empty for the state directory")


class EmbeddingSettings(Section):
    model: str = DEFAULT_MODEL
    batch_size: int = Field(8, ge=1, description="texts embedded at once; a larger batch holds more memory")
    precision: Literal["float32", "int8"] = Field(
        "float32", description="int8: 2.5-2.7x as fast here; its vectors agree with float32's to a cosine of 0.99")

    @property
    def vectors_key(self) -> str:
        """What the ``embeddings`` table and the vector index file the vectors under: the model, and int8
        apart, since its vectors are not float32's (switching precision embeds again, as switching models)."""
        return self.model if self.precision == "float32" else f"{self.model} int8"


class LLMSettings(Section):
    base_url: str = "https://api.openai.com/v1"
    model: str = Field("", description="empty: no LLM, the digest shows abstracts instead")
    api_key: Secret | None = None
    language: str = "English"
    summarize: int | Literal["all"] = 15
    concurrency: int = Field(4, ge=1, le=64)
    daily_token_budget: int = Field(300_000, ge=0)
    timeout: float = Field(60.0, gt=0)
    deadline: float = Field(900.0, gt=0, description="seconds all summaries of one run may take")
    max_tokens: int = Field(1000, ge=200, le=32_000, description="the longest answer one request may generate")
    temperature: float = Field(0.2, ge=0, le=2, description="low: summaries keep to the text")
    full_text: int = Field(0, ge=0, description="how many top papers are summarized from their full text")
    full_text_max_tokens: int = Field(12_000, ge=1000)

    @field_validator("summarize")
    @classmethod
    def _non_negative(cls, value):
        if isinstance(value, int) and value < 0:
            raise ValueError("expected a number of papers (0 or more) or \"all\"")
        return value

    @property
    def enabled(self) -> bool:
        return bool(self.model)


class EmailSettings(Section):
    host: str = Field("", description="empty: no email")
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = "starttls"
    user: str = ""
    password: Secret | None = None
    from_: str = Field("", alias="from")
    ca_file: str = ""
    timeout: float = Field(60.0, gt=0)

    @property
    def enabled(self) -> bool:
        return bool(self.host)

    @model_validator(mode="after")
    def _no_password_in_clear(self):
        if self.security == "none" and self.user and not _is_loopback(self.host):
            raise _KeyProblem("email.security", f'"none" would send the password to {self.host} in clear text; '
                                                f'use "starttls" or "ssl"')
        return self


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ChatTarget(Section):
    url: Secret
    attach: bool = Field(True, description="attach the complete digest where the service takes files")


class FilesSettings(Section):
    dir: str = Field("", description="empty for <state dir>/digests")
    always: bool = Field(False, description="write files for every profile, not only those with no other channel")
    feed_url: str = Field("", description="public URL prefix of dir, for the Atom feed's links")


class DigestSettings(Section):
    top: int = Field(15, ge=0, description="papers in the top section, with summaries")
    rest_order: Literal["score", "arxiv"] = "score"
    include_replacements: bool = False
    send_empty: bool = Field(False, description="send a short note when arXiv announced nothing")


class ScheduleSettings(Section):
    time: str = "07:00"
    timezone: str = "America/New_York"
    poll_every: float = Field(900.0, gt=0, description="seconds between feed polls while today's is late")
    give_up_after: float = Field(6 * 3600.0, gt=0, description="seconds after `time` to stop polling")
    catch_up: Literal["each", "merged"] = "each"
    catch_up_days: int = Field(7, ge=0, le=60)

    @field_validator("time")
    @classmethod
    def _valid_time(cls, value: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            raise ValueError(f"expected a time of day as HH:MM, got {json.dumps(value)}")
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"expected an IANA timezone such as \"Europe/Berlin\", got {json.dumps(value)}")
        return value

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def time_of_day(self) -> dt.time:
        return dt.time.fromisoformat(self.time)


class ImapSettings(Section):
    """The mailbox that receives replies to the digest (digest/feedback/replies.py)."""

    host: str = Field("", description="empty: replies are not read")
    port: int = Field(993, ge=1, le=65535)
    security: Literal["ssl", "starttls"] = Field("ssl", description="never plain: the password goes over it")
    user: str = ""
    password: Secret | None = None
    folder: str = "INBOX"
    ca_file: str = ""
    every: float = Field(300.0, ge=10, description="seconds between two looks at the mailbox")
    timeout: float = Field(30.0, gt=0)

    @property
    def enabled(self) -> bool:
        return bool(self.host)


class FeedbackSettings(Section):
    """Feedback links in the digest, served by `digest daemon` (see digest/feedback/)."""

    listen: str = Field("", description="host:port the daemon serves feedback links on; empty: no links")
    public_url: str = Field("", description="the URL that reaches `listen` from a reader's phone, e.g. behind a proxy")
    key: Secret | None = Field(None, description="the links' signing key; unset: <state dir>/feedback.key")
    link_days: int = Field(60, ge=1, description="days a feedback link stays valid")
    imap: ImapSettings = ImapSettings()

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if value and not (host and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"expected host:port such as \"127.0.0.1:8425\", got {json.dumps(value)}")
        return value

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError(f"expected an http(s) URL such as \"https://digest.example.org\", got {json.dumps(value)}")
        return value.rstrip("/")

    @property
    def links(self) -> bool:
        """Links go into digests only when something serves them and readers can reach it."""
        return bool(self.listen and self.public_url)


class Interest(Section):
    text: str = Field(min_length=1)
    weight: float = Field(1.0, gt=0)


class Profile(Section):
    name: str = Field("", exclude=True)
    interests: list[Interest] = []
    seed_papers: list[str] = []
    seed_library: str = Field("", description="a BibTeX, RIS or CSL JSON export of your library; its arXiv "
                                              "papers are seeds")
    keywords: list[str] = []
    negative_keywords: list[str] = []
    authors: list[str] = []
    categories: str = Field("", description="empty: arxiv.categories")
    top: int | None = Field(None, ge=0)
    email_to: list[str] = []
    chat: list[str] = []
    files: bool = False

    @field_validator("interests", mode="before")
    @classmethod
    def _plain_strings(cls, value):
        if isinstance(value, list):
            return [{"text": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("categories")
    @classmethod
    def _valid_expression(cls, value: str) -> str:
        return _check_expression(value) if value else value

    @field_validator("email_to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if not re.fullmatch(r"[^@\s]+@[^@\s]+", address):
                raise ValueError(f"expected an email address, got {json.dumps(address)}")
        return value

    @model_validator(mode="after")
    def _has_interests(self):
        if not (self.interests or self.seed_papers or self.seed_library or self.keywords or self.authors):
            raise ValueError("no interests: give at least one of interests, seed_papers, seed_library, keywords "
                             "or authors")
        return self


class Settings(Section):
    arxiv: ArxivSettings = ArxivSettings()
    storage: StorageSettings = StorageSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    llm: LLMSettings = LLMSettings()
    email: EmailSettings = EmailSettings()
    chat: dict[str, ChatTarget] = {}
    files: FilesSettings = FilesSettings()
    digest: DigestSettings = DigestSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    profiles: dict[str, Profile] = Field(min_length=1)
    source: str = Field("", exclude=True, description="the file this was loaded from")

    @model_validator(mode="after")
    def _profiles_point_at_configured_channels(self):
        for name, profile in self.profiles.items():
            if not PROFILE_NAME.fullmatch(name):
                raise _KeyProblem(f"profiles.{json.dumps(name) if not name.isidentifier() else name}",
                                  "a profile's name may hold only letters, digits, _ and - (it names files and "
                                  "folders)")
            for target in profile.chat:
                if target not in self.chat:
                    raise _KeyProblem(f"profiles.{name}.chat", f"no chat target named {json.dumps(target)} in [chat]")
            if profile.email_to and not self.email.enabled:
                raise _KeyProblem(f"profiles.{name}.email_to", "email.host is not set, so no email can be sent")
        return self

    # -- what the stages ask for -----------------------------------------------------------------

    def expression_for(self, profile: Profile) -> CategoryExpression:
        return CategoryExpression.parse(profile.categories or self.arxiv.categories)

    def top_for(self, profile: Profile) -> int:
        return self.digest.top if profile.top is None else profile.top

    def channels_for(self, profile: Profile) -> list[tuple[str, str]]:
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

    def check_secrets(self, credentials: bool = True) -> None:
        """Read every secret now; the first that cannot be had is its one-line :class:`ConfigError`. For
        the commands that use them (run, daemon, check, resend), so a missing key fails at the start.
        ``credentials=False`` skips files relative to $CREDENTIALS_DIRECTORY (see resolve_secrets)."""
        for secret in _walk_secrets(self):
            relative = secret.spelled.endswith("_file") and not Path(secret.reference).expanduser().is_absolute()
            if credentials or not relative:
                secret.reveal()

    def secret_problems(self) -> list[str]:
        """Why each secret that cannot be read here cannot (for `digest config`)."""
        return [problem for problem in (s.problem() for s in _walk_secrets(self)) if problem]

    def secrets(self) -> list[str]:
        """Every resolved secret value, for log and error redaction; the parts of chat URLs that are likely
        credentials (a webhook's path often *is* its token); and SMTP's AUTH PLAIN blob (NUL, user, NUL,
        password), which a server's error reply may quote in base64."""
        found = [s.reveal() for s in _walk_secrets(self) if s and not s.problem()]  # unread: nothing to leak
        found += [token for target in self.chat.values() if not target.url.problem()
                  for token in url_tokens(target.url.reveal())]
        if self.email.password and self.email.user and not self.email.password.problem():
            found.append(f"\0{self.email.user}\0{self.email.password.reveal()}")
        return sorted(set(found), key=len, reverse=True)

    def redacted(self) -> dict[str, Any]:
        """The effective configuration as plain data, every secret replaced by ********."""
        return _plain(self)


class _KeyProblem(ValueError):
    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


def _check_expression(value: str) -> str:
    try:
        CategoryExpression.parse(value)
    except CategoryExpressionError as exc:
        raise ValueError(str(exc)) from None
    return value


def _walk_secrets(model: BaseModel):
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, Secret):
            yield value
        elif isinstance(value, BaseModel):
            yield from _walk_secrets(value)
        elif isinstance(value, dict):
            for item in value.values():
                if isinstance(item, BaseModel):
                    yield from _walk_secrets(item)


def _plain(value):
    if isinstance(value, Secret):
        return value.reference or REDACTED
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, BaseModel):
        out = {}
        for name, field in type(value).model_fields.items():
            if field.exclude:
                continue
            item = getattr(value, name)
            # A secret read from the environment or a file shows where it comes from: that is no secret.
            key = item.spelled if isinstance(item, Secret) and item.reference else (field.alias or name)
            out[key] = _plain(item)
        return out
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# -- finding and loading the file ------------------------------------------------------------------

def _secret_keys(model: type[BaseModel] = None, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], tuple[str, ...]]:
    """Which keys of which tables hold a :class:`Secret`, read off the Settings model's annotations:
    ``{("llm",): ("api_key",), ("email",): ("password",), ("chat", "*"): ("url",)}``."""
    found: dict[tuple[str, ...], tuple[str, ...]] = {}
    for name, field in (model or Settings).model_fields.items():
        annotation = field.annotation
        if Secret in (typing.get_args(annotation) or (annotation,)):
            found[path] = found.get(path, ()) + (name,)
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.update(_secret_keys(annotation, path + (name,)))
        elif typing.get_origin(annotation) is dict and issubclass(typing.get_args(annotation)[1], BaseModel):
            found.update(_secret_keys(typing.get_args(annotation)[1], path + (name, "*")))
    return found


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


def load_settings(path: str | os.PathLike | None = None, environ=None, credentials: bool = True,
                  resolve: bool = True) -> Settings:
    """Read, resolve secrets and validate. Every failure is a :class:`ConfigError` of one line."""
    environ = os.environ if environ is None else environ
    file = find_config(path)
    return parse_settings(read_config_text(file), label=file.name, environ=environ, source=str(file),
                          credentials=credentials, resolve=resolve)


def read_config_text(file: Path) -> str:
    """The file's text, or a one-line :class:`ConfigError` saying why it cannot be had."""
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: no configuration file here; create one with `digest init`") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the configuration: {exc.strerror}") from None


def parse_settings(text: str, label: str = "config.toml", environ=None, source: str = "",
                   credentials: bool = True, resolve: bool = True) -> Settings:
    """Read, resolve secrets and validate. Every failure is a :class:`ConfigError` of one line.

    ``resolve=False`` leaves every secret to be read when first used (see :class:`Secret`);
    ``credentials=False`` resolves all but the files relative to $CREDENTIALS_DIRECTORY."""
    environ = os.environ if environ is None else environ
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label}: invalid TOML: {exc}") from None
    raw = resolve_secrets(raw, _secret_keys(), label, environ, resolve, credentials)
    for name, profile in (raw.get("profiles") or {}).items() if isinstance(raw.get("profiles"), dict) else ():
        if isinstance(profile, dict):
            if "name" in profile:
                raise ConfigError(f"{label}: profiles.{name}.name: unknown key (the table name is the profile's name)")
            profile["name"] = name
    try:
        settings = Settings.model_validate({**raw, "source": source})
    except ValidationError as exc:
        raise ConfigError(_one_line(label, exc)) from None
    return settings


_EXPECTED = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a table",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
}


def _one_line(label: str, exc: ValidationError) -> str:
    """The first problem pydantic found, in our words: file, key path, what was expected."""
    errors = exc.errors()
    # A union (e.g. summarize = 15 | "all") reports one error per member; the key is what matters.
    error = errors[0]
    loc = [str(part) for part in error["loc"] if not _is_union_member(part)]
    key = _key_path(loc)
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        return f"{label}: {key}: unknown key"
    if kind in ("missing", "too_short") and key == "profiles":
        return f"{label}: profiles: no profile; add one, e.g. [profiles.me] with interests = [\"...\"]"
    if kind == "missing":
        return f"{label}: {key}: required key is missing"
    if kind == "literal_error":
        expected = error["ctx"]["expected"]
        return f"{label}: {key}: expected {expected}, got {_show(value)}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        limit = next(iter(error["ctx"].values()))
        if isinstance(limit, float) and limit.is_integer():  # "> 0" as the user reads it, not "> 0.0"
            limit = int(limit)
        return f"{label}: {key}: expected a number {bound} {limit}, got {_show(value)}"
    if kind == "string_too_short":
        return f"{label}: {key}: must not be empty"
    if kind == "value_error":
        problem = error["ctx"]["error"]
        if isinstance(problem, _KeyProblem):
            return f"{label}: {problem.key}: {problem.message}"
        message = str(problem)
        return f"{label}: {key}: {message}"
    if kind in _EXPECTED:
        members = [e for e in errors if [str(p) for p in e["loc"] if not _is_union_member(p)] == loc]
        wants = list(dict.fromkeys(_expected(e) for e in members))
        return f"{label}: {key}: expected {' or '.join(wants)}, got {_show(value)}"
    return f"{label}: {key}: {error['msg']}, got {_show(value)}"


def _expected(error) -> str:
    if error["type"] == "literal_error":
        return error["ctx"]["expected"]
    return _EXPECTED.get(error["type"], error["msg"]).removeprefix("expected ")


def _is_union_member(part) -> bool:
    return isinstance(part, str) and (part in {"int", "str", "float", "bool", "none", "list[str]"}
                                      or part.startswith(("literal[", "is-instance[", "function-")))


def _key_path(loc: list[str]) -> str:
    out = ""
    for part in loc:
        if part == "from_":
            part = "from"
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "(top level)"


def _show(value) -> str:
    return REDACTED if isinstance(value, Secret) else shown_value(value)


# -- showing it ------------------------------------------------------------------------------------

def as_toml(data: dict, prefix: str = "") -> str:
    """Plain data as TOML for `digest config`: keys first, then one [table] per nested dict."""
    keys = [f"{k} = {_toml_value(v)}" if v is not None else f"# {k} is not set"
            for k, v in data.items() if not isinstance(v, dict)]
    out = ("\n".join(keys) + "\n") if keys else ""
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{prefix}{key}"
            inner = as_toml(value, name + ".")
            has_keys = any(not isinstance(v, dict) for v in value.values())
            out += (f"\n[{name}]\n" if has_keys or not value else "") + inner
    return out


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value, ensure_ascii=False)


