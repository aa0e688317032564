"""Bad input gets one line naming what is wrong and where, with the exact text tested.

The configuration cases are generated from the Settings model itself: every key of every section gets a
value of the wrong type and, where the key has bounds, a value out of them, and every section an unknown
key. A key added to config.py is covered here without anyone writing a new test.
"""

from __future__ import annotations

import json
import types
import typing

import annotated_types
import pytest
from click.testing import CliRunner
from pydantic import BaseModel
from test_config import PROFILE, error_of
from world import digest_process

from digest.cli import cli
from digest.config import ChatTarget, Interest, Profile, Secret, Settings, parse_settings

CHAT = '[chat.lab]\nurl = "json://127.0.0.1/hook"\n'


# -- the keys, from the model -----------------------------------------------------------------------------------

def _keys():
    """(dotted key, TOML key, field) of every configurable key, with the table it lives in."""
    for section, field in Settings.model_fields.items():
        if field.exclude:
            continue
        model = field.annotation
        if section == "chat":
            yield from ((f"chat.lab.{n}", "[chat.lab]", n, f) for n, f in ChatTarget.model_fields.items())
        elif section == "profiles":
            yield from ((f"profiles.me.{n}", "[profiles.me]", n, f) for n, f in Profile.model_fields.items()
                        if not f.exclude)
        elif isinstance(model, type) and issubclass(model, BaseModel):
            yield from _table_keys(section, model)


def _table_keys(table: str, model: type[BaseModel]):
    """The keys of one table and of the tables inside it ([feedback.imap] in [feedback])."""
    for name, inner in model.model_fields.items():
        if isinstance(inner.annotation, type) and issubclass(inner.annotation, BaseModel):
            yield from _table_keys(f"{table}.{name}", inner.annotation)
            continue
        key = inner.alias or name
        yield f"{table}.{key}", f"[{table}]", key, inner


def _toml(table: str, key: str, value) -> str:
    """A valid configuration with ``key = value`` set in ``table``."""
    literal = json.dumps(value)
    if table == "[profiles.me]":
        body = [line for line in PROFILE.splitlines() if not line.startswith(f"{key} =")]
        if key == "interests":
            body.append('keywords = ["GNN"]')  # still a profile with interests, so the key itself is what fails
        return "\n".join(body) + f"\n{key} = {literal}\n"
    if table == "[chat.lab]":
        lines = [line for line in CHAT.splitlines() if not line.startswith(f"{key} =")]
        return PROFILE + "\n".join(lines) + f"\n{key} = {literal}\n"
    return PROFILE + f"{table}\n{key} = {literal}\n"


def _members(annotation) -> list:
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in args if a is not type(None)]
    return [annotation]


def _wrong_type(annotation) -> tuple[object, str]:
    """A value of the wrong type for ``annotation``, and what the error must say was expected."""
    members = _members(annotation)
    if members == [Secret]:
        return 12, "expected a string"
    wants = []
    for member in members:
        if member is bool:
            wants.append("true or false")
        elif member is int:
            wants.append("an integer")
        elif member is float:
            wants.append("a number")
        elif member is str:
            wants.append("a string")
        elif typing.get_origin(member) is list:
            wants.append("a list")
        elif typing.get_origin(member) is typing.Literal:
            options = [repr(o) for o in typing.get_args(member)]
            wants.append(options[0] if len(options) == 1 else ", ".join(options[:-1]) + " or " + options[-1])
        else:
            raise AssertionError(f"no wrong value known for {member}: teach _wrong_type about it")
    # A string where a number, flag or list belongs; a list where text belongs.
    textual = all(m is str or typing.get_origin(m) is typing.Literal for m in members)
    return (["a", "list"] if textual else "text"), "expected " + " or ".join(wants)


KEYS = list(_keys())


@pytest.mark.parametrize("dotted, table, key, field", KEYS, ids=[k[0] for k in KEYS])
def test_every_key_with_a_wrong_type_is_one_line_naming_it(dotted, table, key, field):
    value, expected = _wrong_type(field.annotation)
    assert error_of(_toml(table, key, value)) == f"config.toml: {dotted}: {expected}, got {json.dumps(value)}"


BOUNDED = [(dotted, table, key, field, bound) for dotted, table, key, field in KEYS for bound in field.metadata
           if isinstance(bound, (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt))]


@pytest.mark.parametrize("dotted, table, key, field, bound", BOUNDED,
                         ids=[f"{b[0]} {type(b[4]).__name__}" for b in BOUNDED])
def test_every_bounded_key_out_of_bounds_is_one_line_naming_it(dotted, table, key, field, bound):
    number = float in _members(field.annotation)
    kind = type(bound).__name__.lower()
    limit = getattr(bound, kind)
    step = 0.5 if number else 1
    value = {"ge": limit - step, "gt": limit, "le": limit + step, "lt": limit}[kind]
    value = float(value) if number else int(value)
    sign = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}[kind]
    assert error_of(_toml(table, key, value)) == (
        f"config.toml: {dotted}: expected a number {sign} {limit}, got {json.dumps(value)}")


SECTIONS = ["(top level)"] + [n for n, f in Settings.model_fields.items() if not f.exclude]


@pytest.mark.parametrize("section", SECTIONS)
def test_an_unknown_key_in_any_section_is_named(section):
    table = {"(top level)": "", "chat": "[chat.lab]\nurl = \"json://127.0.0.1/x\"\n",
             "profiles": ""}.get(section, f"[{section}]\n")
    key = {"(top level)": "colour", "chat": "chat.lab.colour", "profiles": "profiles.me.colour"}.get(
        section, f"{section}.colour")
    body = table + "colour = 1\n" + PROFILE if section != "profiles" else PROFILE + "colour = 1\n"
    if section == "(top level)":
        body = "colour = 1\n" + PROFILE
    assert error_of(body) == f"config.toml: {key}: unknown key"


def test_an_interest_with_a_wrong_weight_or_empty_text():
    assert error_of('[profiles.me]\ninterests = [{ text = "x", weight = 0 }]\n') == (
        "config.toml: profiles.me.interests[0].weight: expected a number > 0, got 0")
    assert error_of('[profiles.me]\ninterests = [{ text = "" }]\n') == (
        "config.toml: profiles.me.interests[0].text: must not be empty")
    assert error_of('[profiles.me]\ninterests = [{ text = "x", colour = 1 }]\n') == (
        "config.toml: profiles.me.interests[0].colour: unknown key")
    assert set(Interest.model_fields) == {"text", "weight"}  # a new field needs a case above


@pytest.mark.parametrize("body, message", [
    ('[schedule]\ntimezone = "Europe/Nowhere"\n',
     'config.toml: schedule.timezone: expected an IANA timezone such as "Europe/Berlin", got "Europe/Nowhere"'),
    ('[arxiv]\ncategories = "cs.AI+cs.XX"\n', "config.toml: arxiv.categories: unknown arXiv category 'cs.XX'"),
    (PROFILE.replace("[profiles.me]", "[profiles.me]\ncategories = \"physics.nope\""),
     "config.toml: profiles.me.categories: unknown arXiv category 'physics.nope'"),
    ('[llm]\napi_key_env = "DIGEST_NO_SUCH_KEY"\n',
     "config.toml: llm.api_key_env: environment variable DIGEST_NO_SUCH_KEY is not set"),
    ('[email]\npassword_env = "DIGEST_EMPTY"\n',
     "config.toml: email.password_env: environment variable DIGEST_EMPTY is not set"),
    ('[chat.lab]\nattach = true\n', "config.toml: chat.lab.url: required key is missing"),
    ('[chat.lab]\nurl_file = "/nonexistent/chat-url"\n',
     "config.toml: chat.lab.url_file: cannot read /nonexistent/chat-url: No such file or directory"),
    ('[email]\nhost = "smtp.example.org"\nsecurity = "none"\nuser = "me"\npassword = "x"\n',
     'config.toml: email.security: "none" would send the password to smtp.example.org in clear text; use '
     '"starttls" or "ssl"'),
    ('[arxiv]\nholidays = ["2027-1-18"]\n', 'config.toml: arxiv.holidays: expected dates as YYYY-MM-DD, got "2027-1-18"'),
] + [(f'[profiles.{name}]\ninterests = ["x"]\n', f"config.toml: profiles.{shown}: a profile's name may hold only "
      f"letters, digits, _ and - (it names files and folders)")
     for name, shown in (('".me"', '".me"'), ('"../../x"', '"../../x"'), ('"sub/dir"', '"sub/dir"'),
                         ('"a\\nb"', '"a\\nb"'))])
def test_named_mistakes(body, message):
    text = body if body.startswith("[profiles") else PROFILE + body
    assert error_of(text, environ={"DIGEST_EMPTY": ""}) == message


def test_security_none_with_a_password_is_allowed_to_this_machine_only():
    body = PROFILE + '[email]\nhost = "127.0.0.1"\nsecurity = "none"\nuser = "me"\npassword = "x"\n'
    assert parse_settings(body, environ={}).email.security == "none"


def test_an_unreadable_credential_file_is_one_line_even_for_root(tmp_path, write_config):
    """Run as the user would, in a process without root's power to read any file (see world.digest_process)."""
    secret = tmp_path / "smtp-password"
    secret.write_text("hunter2")
    secret.chmod(0)
    config = write_config(PROFILE + f'[email]\nhost = "127.0.0.1"\npassword_file = "{secret}"\n')
    for command in (["config", "--check"], ["check"], ["run"]):  # the commands that need the password
        process = digest_process(["--config", str(config), *command], without_root_override=True)
        assert process.returncode == 2, command
        assert process.stderr == \
            f"Error: {config}: email.password_file: cannot read {secret}: Permission denied\n", command
        assert "hunter2" not in process.stdout + process.stderr
    # Showing the configuration needs no password: it says where it comes from, and why it cannot be read.
    process = digest_process(["--config", str(config), "config"], without_root_override=True)
    assert process.returncode == 0, process.stderr
    assert f'password_file = "{secret}"' in process.stdout
    assert f"# not readable here: {config}: email.password_file: cannot read {secret}: Permission denied" \
        in process.stdout


@pytest.mark.parametrize("args, message", [
    (["show", "12345"], 'Error: "12345" is not an arXiv id (expected e.g. 2401.01234 or hep-th/9901001)'),
    (["like", "2401.1"], 'Error: "2401.1" is not an arXiv id (expected e.g. 2401.01234 or hep-th/9901001)'),
    (["related", "arXiv:nonsense"],
     'Error: "arXiv:nonsense" is not an arXiv id (expected e.g. 2401.01234 or hep-th/9901001)'),
    (["run", "--day", "2026-13-01"], 'Error: --day: expected a date as YYYY-MM-DD, got "2026-13-01"'),
    (["run", "--profile", "nobody"], 'Error: --profile: no profile named "nobody" in {config} (profiles: me)'),
    (["run", "--profile", "mee"],
     'Error: --profile: no profile named "mee" in {config} (profiles: me); did you mean me?'),
    (["digests", "--profile", "nobody"], 'Error: --profile: no profile named "nobody" in {config} (profiles: me)'),
    (["export", "--liked", "--profile", "mee"],
     'Error: --profile: no profile named "mee" in {config} (profiles: me); did you mean me?'),
])
def test_bad_command_line_input_is_one_line_and_exit_2(write_config, args, message):
    config = write_config(PROFILE)
    outcome = CliRunner().invoke(cli, args)
    assert outcome.exit_code == 2, outcome.output
    assert outcome.stderr == message.format(config=config) + "\n"
