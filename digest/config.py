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
import json
import os
import re
import tomllib
import typing
import zoneinfo
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .config_rules import (ArxivRules, EmbeddingRules, EnabledByHost, EnabledByModel, FeedbackRules, ScheduleRules,
                           SettingsRules, cache_dir, config_dir, config_label, find_config, leave_note,
                           read_config_text, state_dir)
from .secrets import REDACTED, ConfigError, Secret, resolve_secrets
from .taxonomy import CategoryExpression, CategoryExpressionError
from .text import nearest, shown_value

__all__ = ["ConfigError", "Settings", "cache_dir", "config_dir", "find_config", "load_settings", "parse_settings",
           "read_config_text", "state_dir"]

PROFILE_NAME = re.compile(r"[A-Za-z0-9_-]+")
DEFAULT_MODEL = "all-MiniLM-L6-v2"


class Section(BaseModel):
    # TOML already types its values, so no coercion: "abc" for a port is an error, not a surprise.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, arbitrary_types_allowed=True)


class ArxivSettings(ArxivRules, Section):
    categories: str = Field("cs.AI", description="the categories to fetch, in Cool Papers' expression syntax: "
                                                 "\"cs.AI+cs.LG-cs.CY\" (cs.AI or cs.LG, unless also cs.CY)")
    contact: str = Field("", description="your email address, sent in the User-Agent as arXiv asks")
    feed_url: str = Field("https://rss.arxiv.org/atom/", description="arXiv's daily Atom feed")
    api_url: str = Field("https://export.arxiv.org/api/query", description="arXiv's API, for backfills and seed papers")
    oai_url: str = Field("https://oaipmh.arxiv.org/oai", description="arXiv's OAI-PMH endpoint (not used yet)")
    html_url: str = Field("https://arxiv.org/html/", description="arXiv's HTML papers, for llm.full_text")
    min_interval: float = Field(3.0, ge=0, description="seconds between two requests to arXiv")
    timeout: float = Field(30.0, gt=0, description="seconds arXiv may keep a request waiting for its next bytes; "
                           "a whole answer may take four times this")
    retries: int = Field(4, ge=0, description="retries of a failed request, with exponential backoff")
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


class StorageSettings(Section):
    path: str = Field("", description="the SQLite database; empty for the state directory")


class EmbeddingSettings(EmbeddingRules, Section):
    model: str = Field(DEFAULT_MODEL, description="any sentence-transformers model name or local path; the default "
                                                  "ships with digest and works offline")
    batch_size: int = Field(8, ge=1, description="texts embedded at once; a larger batch holds more memory")
    precision: Literal["float32", "int8"] = Field(
        "float32", description="int8: 2.5-2.7x as fast here; its vectors agree with float32's to a cosine of 0.99")


class LLMSettings(EnabledByModel, Section):
    base_url: str = Field("https://api.openai.com/v1", description="any OpenAI-compatible server: OpenAI, "
                                                                   "DeepSeek, Moonshot, Ollama, vLLM, llama.cpp")
    model: str = Field("", description="empty: no LLM, the digest shows abstracts instead")
    api_key: Secret | None = Field(None, description="the server's key; a local server needs none")
    language: str = Field("English", description="the language summaries are written in")
    summarize: int | Literal["all"] = Field(15, description="how many of the top papers get a summary")
    concurrency: int = Field(4, ge=1, le=64, description="requests in flight at once")
    daily_token_budget: int = Field(300_000, ge=0, description="tokens per UTC day; past it, papers get their "
                                                               "abstract; 0 sends no request")
    timeout: float = Field(60.0, gt=0, description="seconds one request may take")
    deadline: float = Field(900.0, gt=0, description="seconds all summaries of one run may take")
    max_tokens: int = Field(1000, ge=200, le=32_000, description="the longest answer one request may generate")
    temperature: float = Field(0.2, ge=0, le=2, description="low: summaries keep to the text")
    full_text: int = Field(0, ge=0, description="how many top papers are summarized from their full text")
    full_text_max_tokens: int = Field(12_000, ge=1000, description="the full text is cut to this many tokens")

    @field_validator("summarize")
    @classmethod
    def _non_negative(cls, value):
        if isinstance(value, int) and value < 0:
            raise ValueError("expected a number of papers (0 or more) or \"all\"")
        return value


class EmailSettings(EnabledByHost, Section):
    host: str = Field("", description="the SMTP server; empty: no email")
    port: int = Field(587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = Field(
        "starttls", description="\"none\" with a user is refused unless the host is this machine")
    user: str = Field("", description="the login; empty: no login")
    password: Secret | None = Field(None, description="the login's password")
    from_: str = Field("", alias="from", description="the sender; empty: user when it is an address, else "
                                                     "digest@<hostname>, which many servers refuse")
    ca_file: str = Field("", description="a CA bundle for a server whose certificate is not in the system store")
    timeout: float = Field(60.0, gt=0, description="seconds the SMTP server may keep digest waiting for its "
                           "next bytes; a whole conversation may take four times this")


    @model_validator(mode="after")
    def _no_password_in_clear(self):
        if self.security == "none" and self.user and not _is_loopback(self.host):
            raise _KeyProblem("email.security", f'"none" would send the password to {self.host} in clear text; '
                                                f'use "starttls" or "ssl"')
        return self


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    import ipaddress  # here: 5 ms of every command's start, for a check only email with security = "none" needs

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ChatTarget(Section):
    url: Secret = Field(description="an apprise URL (slack://, discord://, tgram://, matrixs://, ntfys://, ...)")
    attach: bool = Field(True, description="attach the complete digest where the service takes files")


class FilesSettings(Section):
    dir: str = Field("", description="empty for <state dir>/digests")
    always: bool = Field(False, description="write files for every profile, not only those with no other channel")
    feed_url: str = Field("", description="public URL prefix of dir, for the Atom feed's links")


class DigestSettings(Section):
    top: int = Field(15, ge=0, description="papers in the top section, with summaries")
    faq_in_email: int = Field(5, ge=0, description="top papers whose FAQ answers the email's body shows "
                                                   "(collapsed where the mail client can); all are in the "
                                                   "attached complete digest")
    rest_order: Literal["score", "arxiv"] = Field("score", description="the order of the papers after the top "
                                                                     "section")
    include_replacements: bool = Field(False, description="list replaced papers, in a section of their own")
    send_empty: bool = Field(False, description="send a short note when arXiv announced nothing")


class ScheduleSettings(ScheduleRules, Section):
    time: str = Field("07:00", description="when the daemon runs each day, HH:MM")
    timezone: str = Field("America/New_York", description="an IANA time zone, for time")
    poll_every: float = Field(900.0, gt=0, description="seconds between feed polls while today's is late")
    give_up_after: float = Field(6 * 3600.0, gt=0, description="seconds after `time` to stop polling")
    catch_up: Literal["each", "merged"] = Field("each", description="missed days: one digest each, or one merged "
                                                                   "digest")
    catch_up_days: int = Field(7, ge=0, le=60, description="how many days back missed days are caught up")
    run_timeout: float = Field(3 * 3600.0, gt=0, description="seconds one run may take before the daemon stops "
                               "it (what it finished is kept; the next poll tries again)")

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


class ImapSettings(EnabledByHost, Section):
    """The mailbox that receives replies to the digest (digest/feedback/replies.py)."""

    host: str = Field("", description="empty: replies are not read")
    port: int = Field(993, ge=1, le=65535)
    security: Literal["ssl", "starttls"] = Field("ssl", description="never plain: the password goes over it")
    user: str = Field("", description="the login")
    password: Secret | None = Field(None, description="the login's password")
    folder: str = Field("INBOX", description="the folder replies arrive in")
    ca_file: str = Field("", description="a CA bundle for a server whose certificate is not in the system store")
    every: float = Field(300.0, ge=10, description="seconds between two looks at the mailbox")
    timeout: float = Field(30.0, gt=0, description="seconds the IMAP server may keep digest waiting for its next "
                           "bytes; a whole conversation may take four times this")


class FeedbackSettings(FeedbackRules, Section):
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


class Interest(Section):
    text: str = Field(min_length=1, description="a topic, in your words")
    weight: float = Field(1.0, gt=0, description="how much it counts against the other interests")


class Profile(Section):
    name: str = Field("", exclude=True)
    interests: list[Interest] = Field([], description="free-text topics, each a string or {text, weight}")
    seed_papers: list[str] = Field([], description="arXiv ids of papers that show what you like")
    seed_library: str = Field("", description="a BibTeX, RIS or CSL JSON export of your library; its arXiv "
                                              "papers are seeds")
    keywords: list[str] = Field([], description="whole words in title or abstract that push a paper up")
    negative_keywords: list[str] = Field([], description="words that push a paper down (never out)")
    authors: list[str] = Field([], description="followed authors: their papers are always in the top section")
    categories: str = Field("", description="empty: arxiv.categories")
    top: int | None = Field(None, ge=0, description="papers in the top section; unset: digest.top")
    email_to: list[str] = Field([], description="addresses the digest is emailed to")
    chat: list[str] = Field([], description="names of [chat.NAME] targets")
    files: bool = Field(False, description="also write files (a profile with no email or chat target always does)")

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

    @field_validator("seed_papers")
    @classmethod
    def _arxiv_ids(cls, value: list[str]) -> list[str]:
        """Caught by `config --check`, not only warned about by the run that uses the profile."""
        from .arxiv.ids import InvalidArxivId, normalize_id  # pure: no lxml or requests

        for text in value:
            try:
                normalize_id(text)
            except InvalidArxivId as exc:
                raise ValueError(str(exc)) from None
        return value

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


class Settings(SettingsRules, Section):
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

    # -- what the stages ask for: SettingsRules (config_rules.py), and the secrets ---------------------

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

    def secret_values(self) -> list[Secret]:
        return list(_walk_secrets(self))

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


def load_settings(path: str | os.PathLike | None = None, environ=None, credentials: bool = True,
                  resolve: bool = True, note: bool = False) -> Settings:
    """Read, resolve secrets and validate. Every failure is a :class:`ConfigError` of one line, naming the
    file as the user gave it (--config, $DIGEST_CONFIG) or by its whole default path. ``note``: leave the
    note a reading command reads instead of validating again (see :mod:`digest.config_rules`)."""
    environ = os.environ if environ is None else environ
    file = find_config(path)
    text = read_config_text(file)
    settings = parse_settings(text, label=config_label(path, file), environ=environ, source=str(file),
                              credentials=credentials, resolve=resolve)
    if note:
        remember_valid(text, settings)
    return settings


def remember_valid(text: str, settings: Settings) -> None:
    """Leave the note that ``text`` is valid, for the reading commands (see :mod:`digest.config_rules`)."""
    leave_note(text, _note_data(settings), _secret_keys())


def _note_data(model: BaseModel):
    """The settings as plain data by field name, every secret and excluded field (name, source) left out."""
    if isinstance(model, BaseModel):
        return {name: None if isinstance(getattr(model, name), Secret) else _note_data(getattr(model, name))
                for name, field in type(model).model_fields.items() if not field.exclude}
    if isinstance(model, dict):
        return {key: _note_data(value) for key, value in model.items()}
    if isinstance(model, list):
        return [_note_data(value) for value in model]
    return model


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
        return f"{label}: {key}: unknown key{_nearest_key(loc, value)}"
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


def _nearest_key(loc: list[str], value) -> str:
    """``; did you mean `[profiles.theory]`?`` for ``[profile.theory]``, ``; did you mean `port`?`` for
    ``prot``: the nearest key the table at ``loc`` knows, spelled as the user would write it."""
    model = _model_at(loc[:-1])
    if model is None:
        return ""
    known = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        known.append(field.alias or name)
        if Secret in (typing.get_args(field.annotation) or (field.annotation,)):
            known += [f"{name}_env", f"{name}_file"]
    near = nearest(loc[-1], known)
    if not near or _key_path([near]) == _key_path([loc[-1]]):  # from_ is shown as from: no help
        return ""
    if not isinstance(value, dict):
        return f"; did you mean `{near}`?"
    table = [*loc[:-1], near]
    if value and all(isinstance(v, dict) for v in value.values()):  # [profile.theory]: a table of tables
        table.append(next(iter(value)))
    return f"; did you mean `[{_key_path(table)}]`?"


def _model_at(loc: list[str]) -> type[BaseModel] | None:
    """The model of the table at ``loc`` (``["profiles", "me"]`` -> Profile), or None."""
    model: type[BaseModel] = Settings
    expect_key = False  # after a dict or list field, the next part is a key or an index, not a field
    for part in loc:
        if expect_key:
            expect_key = False
            continue
        field = model.model_fields.get("from_" if part == "from" else part)
        if field is None:
            return None
        annotation = field.annotation
        origin = typing.get_origin(annotation)
        if origin in (dict, list):
            annotation, expect_key = typing.get_args(annotation)[-1], True
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return None if expect_key else model


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


