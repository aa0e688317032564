import os

import pytest
from conftest import ROOT

from digest.config import REDACTED, ConfigError, find_config, load_settings, parse_settings

PROFILE = '[profiles.me]\ninterests = ["graph neural networks"]\n'


def error_of(text: str, environ=None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_settings(text, environ=environ or {})
    return str(info.value)


def test_example_config_is_valid_and_complete():
    settings = load_settings(ROOT / "config.example.toml")
    assert settings.arxiv.categories == "cs.AI+cs.LG"
    assert list(settings.profiles) == ["me"]
    # Every section the program knows appears in the example, so users can discover it.
    text = (ROOT / "config.example.toml").read_text()
    for section in ("arxiv", "storage", "embedding", "llm", "email", "chat", "files", "digest", "schedule", "feedback",
                    "feedback.imap"):
        assert f"[{section}" in text or f"# [{section}" in text, section


@pytest.mark.parametrize("body, message", [
    ('[email]\nport = "abc"\n', 'config.toml: email.port: expected an integer, got "abc"'),
    ('[email]\nprot = 25\n', "config.toml: email.prot: unknown key; did you mean `port`?"),
    ('[emial]\n', "config.toml: emial: unknown key; did you mean `[email]`?"),
    ('[email]\nsecurity = "tls"\n', "config.toml: email.security: expected 'starttls', 'ssl' or 'none', got \"tls\""),
    ('[llm]\nsummarize = "some"\n', "config.toml: llm.summarize: expected an integer or 'all', got \"some\""),
    ('[llm]\nconcurrency = 0\n', "config.toml: llm.concurrency: expected a number >= 1, got 0"),
    ('[llm]\nmax_tokens = 50\n', "config.toml: llm.max_tokens: expected a number >= 200, got 50"),
    ('[llm]\nmax_tokens = 100000\n', "config.toml: llm.max_tokens: expected a number <= 32000, got 100000"),
    ('[llm]\ntemperature = 2.5\n', "config.toml: llm.temperature: expected a number <= 2, got 2.5"),
    ('[schedule]\ntimezone = "Mars/Olympus"\n',
     'config.toml: schedule.timezone: expected an IANA timezone such as "Europe/Berlin", got "Mars/Olympus"'),
    ('[schedule]\ntime = "7am"\n', 'config.toml: schedule.time: expected a time of day as HH:MM, got "7am"'),
    ('[arxiv]\ncategories = "cs.AI+cs.XY"\n', "config.toml: arxiv.categories: unknown arXiv category 'cs.XY'"),
    ('[digest]\ntop = true\n', "config.toml: digest.top: expected an integer, got true"),
    ('[llm]\napi_key_env = "NO_SUCH_VARIABLE"\n',
     "config.toml: llm.api_key_env: environment variable NO_SUCH_VARIABLE is not set"),
    ('[llm]\napi_key = "a"\napi_key_env = "B"\n', "config.toml: llm.api_key_env: give only one of api_key, api_key_env"),
])
def test_one_line_errors_name_file_key_and_expectation(body, message):
    assert error_of(PROFILE + body) == message


def test_profile_errors():
    assert error_of("") == 'config.toml: profiles: no profile; add one, e.g. [profiles.me] with interests = ["..."]'
    assert error_of("[profiles.me]\n") == (
        "config.toml: profiles.me: no interests: give at least one of interests, seed_papers, seed_library, keywords "
        "or authors")
    assert error_of('[profiles.me]\ninterests = [{ text = "x", weight = "heavy" }]\n') == (
        'config.toml: profiles.me.interests[0].weight: expected a number, got "heavy"')
    assert error_of(PROFILE + 'chat = ["lab"]\n') == 'config.toml: profiles.me.chat: no chat target named "lab" in [chat]'
    assert error_of(PROFILE + 'email_to = ["me@example.org"]\n') == (
        "config.toml: profiles.me.email_to: email.host is not set, so no email can be sent")
    assert error_of(PROFILE + 'email_to = ["not an address"]\n') == (
        'config.toml: profiles.me.email_to: expected an email address, got "not an address"')


def test_toml_syntax_error_gives_its_line():
    assert error_of(PROFILE + "[email]\nport = = 1\n") == (
        "config.toml: invalid TOML: Invalid value (at line 4, column 8)")


def test_secrets_from_env_and_file_are_redacted(tmp_path):
    key_file = tmp_path / "smtp-password"
    key_file.write_text("hunter2-file-secret\n")
    settings = parse_settings(
        PROFILE + '[llm]\nmodel = "m"\napi_key_env = "MY_KEY"\n'
        f'[email]\nhost = "localhost"\npassword_file = "{key_file}"\n'
        '[chat.lab]\nurl = "json://127.0.0.1/hook?token=chat-secret-123"\n',
        environ={"MY_KEY": "sk-env-secret-value"},
    )
    assert settings.llm.api_key.reveal() == "sk-env-secret-value"
    assert settings.email.password.reveal() == "hunter2-file-secret"
    shown = repr(settings) + str(settings.redacted()) + str(settings.llm)
    for secret in ("sk-env-secret-value", "hunter2-file-secret", "chat-secret-123"):
        assert secret not in shown
    # Where a secret comes from is shown (it is no secret, and it is what a reader checks); the value is not.
    assert settings.redacted()["llm"]["api_key_env"] == "MY_KEY"
    assert settings.redacted()["email"]["password_file"] == str(key_file)
    assert parse_settings(PROFILE + '[llm]\nmodel = "m"\napi_key = "sk-inline"\n').redacted()["llm"]["api_key"] \
        == REDACTED
    # The chat URL, and the part of it that is likely its credential, so a log line quoting either is redacted.
    assert sorted(settings.secrets()) == sorted(["sk-env-secret-value", "hunter2-file-secret",
                                                 "json://127.0.0.1/hook?token=chat-secret-123", "chat-secret-123"])


def test_secret_file_relative_to_systemd_credentials(tmp_path):
    (tmp_path / "openai").write_text("sk-from-credential")
    settings = parse_settings(PROFILE + '[llm]\napi_key_file = "openai"\n',
                              environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert settings.llm.api_key.reveal() == "sk-from-credential"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_secret_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0)
    message = error_of(PROFILE + f'[llm]\napi_key_file = "{secret}"\n')
    assert message == f"config.toml: llm.api_key_file: cannot read {secret}: Permission denied"


def test_missing_secret_file(tmp_path):
    missing = tmp_path / "nope"
    assert error_of(PROFILE + f'[email]\npassword_file = "{missing}"\n') == (
        f"config.toml: email.password_file: cannot read {missing}: No such file or directory")


def test_config_discovery_order(tmp_path, monkeypatch, isolated_home):
    assert find_config() == isolated_home / ".config" / "digest" / "config.toml"
    monkeypatch.setenv("DIGEST_CONFIG", str(tmp_path / "env.toml"))
    assert find_config() == tmp_path / "env.toml"
    assert find_config(tmp_path / "flag.toml") == tmp_path / "flag.toml"


def test_channels_default_to_files():
    settings = parse_settings(PROFILE + '[email]\nhost = "smtp.example.org"\n'
                              '[profiles.other]\nkeywords = ["x"]\nemail_to = ["a@example.org"]\n', environ={})
    assert settings.channels_for(settings.profiles["me"]) == [("files", "")]
    assert settings.channels_for(settings.profiles["other"]) == [("email", "a@example.org")]


def test_a_profile_the_configuration_lacks_is_one_line_naming_it_the_profiles_and_the_nearest():
    from digest.config_rules import UnknownProfile
    from digest.pipeline import run_day
    from digest.storage.db import open_db

    settings = parse_settings(PROFILE + '[profiles.theory]\nkeywords = ["x"]\n', environ={}, source="config.toml")
    settings.check_profiles(["me", "theory"])
    settings.check_profiles(["old"], also=["old"])  # a reading command's profile that once had digests
    with pytest.raises(UnknownProfile) as caught:
        run_day(open_db(":memory:"), settings, profiles=["theroy"])  # the pipeline asks the same question
    assert str(caught.value) == 'no profile named "theroy" in config.toml (profiles: me, theory); did you mean theory?'
    with pytest.raises(UnknownProfile) as caught:
        settings.check_profiles(["me", "nope"], also=["old"])
    assert str(caught.value) == 'no profile named "nope" in config.toml (profiles: me, theory, old)'


def test_feed_categories_union_of_profiles():
    settings = parse_settings('[arxiv]\ncategories = "cs.AI-cs.CY"\n' + PROFILE +
                              '[profiles.b]\nkeywords = ["x"]\ncategories = "cs.LG+cs.AI"\n', environ={})
    assert settings.feed_categories() == ["cs.AI", "cs.LG"]
