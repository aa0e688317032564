"""The secrets sweep: a whole digest run as a user runs it (`digest run` in its own process) with every
secret set to a recognisable value, through failures whose error messages are the likeliest leaks (an
LLM proxy that quotes our request headers back, a chat service refusing the token in its URL, an SMTP
server that is down), then every place digest writes is searched for those values: the database and its
side files, the logs, the rendered digests, the files directory, the outbox rows, the emails and chat
posts, and every line the commands printed. Nothing may be found.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path

import pytest
from chat_server import ChatServer
from feeds import serve_feeds
from llm_server import LLMServer, echo_headers, error, ok
from smtp_server import SMTPServer
from world import (
    DAY,
    READER,
    SMTP_USER,
    World,
    copy_database,
    day_feed,
    digest_process,
    feed_paper_ids,
    ids_in,
)

pytestmark = pytest.mark.slow

SMTP_PASSWORD = "smtp-SECRET-pw-31337"
LLM_KEY = "sk-SECRET-llm-42424242"
CHAT_TOKEN = "SECRETchatTOKEN98765"
SECRETS = (SMTP_PASSWORD, LLM_KEY, CHAT_TOKEN)


@contextmanager
def _stopped_at_the_end(smtp):
    """The test stops the SMTP server half-way (a server that is down); stop it here if it did not."""
    try:
        yield
    finally:
        if smtp.controller._thread is not None:
            smtp.controller.stop()
        smtp.stop = lambda: None
        smtp._dir.cleanup()


def leaks(label: str, data: bytes | str) -> list[str]:
    """Where a secret shows up in ``data``: "label: secret", for a readable failure."""
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
    return [f"{label}: {secret}" for secret in SECRETS if secret.encode() in raw]


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_no_secret_is_found_anywhere_after_a_run_with_failures(template, tmp_path, http_server, write_config):
    smtp = SMTPServer(users={SMTP_USER: SMTP_PASSWORD}).start()
    with LLMServer() as llm, ChatServer(path=f"/hook/{CHAT_TOKEN}") as chat, _stopped_at_the_end(smtp):
        serve_feeds(http_server, {DAY: day_feed()}, day=DAY)
        world = World(tmp_path, http_server.url, smtp, write_config)
        copy_database(template, world.db_path)
        password_file = tmp_path / "credentials" / "smtp-password"
        password_file.parent.mkdir()
        password_file.write_text(SMTP_PASSWORD + "\n")
        email = smtp.settings_toml(user=SMTP_USER, password="x").replace(
            'password = "x"', f'password_file = "{password_file}"')
        body = (world.toml()
                .replace(world.email or smtp.settings_toml(user=SMTP_USER, password="smtp-pass-4711"), email)
                .replace("[profiles.me]",
                         f'[llm]\nmodel = "gpt-test"\nbase_url = "{llm.url}"\napi_key_env = "DIGEST_TEST_LLM_KEY"\n'
                         'summarize = 4\nconcurrency = 1\ntimeout = 5\n'
                         f'[chat.lab]\nurl = "{chat.url}"\n'
                         '[profiles.me]'))
        body = body.replace(f'email_to = ["{READER}"]', f'email_to = ["{READER}"]\nchat = ["lab"]\nfiles = true')
        assert SMTP_PASSWORD not in body and LLM_KEY not in body  # those two come from a file and the environment
        config = write_config(body)
        env = {"DIGEST_TEST_LLM_KEY": LLM_KEY}

        # The first summary request meets a proxy quoting our headers (Authorization: Bearer <key>) in
        # its error, the next a 500; the chat service refuses the token in the URL.
        llm.script(echo_headers(400), error(500), ok(), ok(), ok())
        chat.fail(401, times=1)
        outputs = {"run": digest_process(["--config", str(config), "run"], env=env)}
        assert outputs["run"].returncode == 1, outputs["run"].stderr  # the chat delivery failed for good
        assert "chat to lab failed" in outputs["run"].stderr

        smtp.controller.stop()  # SMTP down (its CA file stays): the next attempt's error lands in the outbox and the output
        outputs["resend"] = digest_process(["--config", str(config), "resend", DAY.isoformat(), "--all"], env=env)
        outputs["check"] = digest_process(["--config", str(config), "check"], env=env)
        for command in (["config"], ["config", "--json"], ["status"], ["status", "--json"], ["digests", "--json"],
                        ["digests", "--day", DAY.isoformat()], ["stats", "--json"]):
            outputs[" ".join(command)] = digest_process(["--config", str(config), *command], env=env)

    # The secrets were really used: a sweep of a run that never used them would prove nothing.
    assert any(r.headers.get("authorization") == f"Bearer {LLM_KEY}" for r in llm.requests)
    # the digest, then the notice that the chat delivery failed for good (issue 19), swept below too
    assert (SMTP_USER, True) in smtp.auth_attempts and len(smtp.messages) == 2
    assert sorted(ids_in(smtp.messages[0].part("plain"))) == sorted(feed_paper_ids(day_feed()))
    assert smtp.messages[1].message["Subject"].startswith(f"digest: the digest of {DAY} (me) could not be sent by "
                                                          f"chat to lab: ")
    assert (world.files_dir / "notices" / f"{DAY}-delivery-chat-to-lab.txt").exists()
    assert "stage deliver" in outputs["run"].stderr and "connection refused" in outputs["resend"].stderr.lower()
    assert "FAIL  email" in outputs["check"].stdout

    found = []
    for name, process in outputs.items():
        found += leaks(f"`digest {name}` stdout", process.stdout) + leaks(f"`digest {name}` stderr", process.stderr)
    state = files_under(world.db_path.parent)
    assert world.db_path in state
    for path in state + files_under(world.files_dir):
        found += leaks(str(path), path.read_bytes())
    assert (world.files_dir / "me" / f"{DAY}.html").exists()
    for message in smtp.messages:
        found += leaks("the email", message.raw)
    for post in chat.posts + chat.rejected:
        found += leaks("a chat post", post.message + "".join(a.text for a in post.attachments))
    for request in llm.requests:
        found += leaks("an LLM prompt", json.dumps(request.body))
    assert found == []

    # The errors were recorded where the user looks, just without the secrets.
    with sqlite3.connect(world.db_path) as conn:
        errors = [r[0] for r in conn.execute("SELECT error FROM llm_calls WHERE error IS NOT NULL")]
        outbox = dict(conn.execute("SELECT channel, last_error FROM deliveries"))
    assert any("bad request with headers" in e and "********" in e for e in errors)
    assert "Connection refused" in outbox["email"]
    assert len(chat.rejected) == 1 and "error=401" in outputs["run"].stderr
