"""Issue 19: when a day is given up, a delivery fails for good, or the LLM fails for a whole run, digest
sends one short notice through the channels that still work, never twice, and the next digest says what
was caught up. Real SMTP and chat servers on loopback; the daemon's own give-up is tested in test_daemon."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from chat_server import ChatServer
from click.testing import CliRunner
from llm_server import LLMServer, error
from world import (
    DAY,
    PROFILE,
    READER,
)

from digest.cli import cli
from digest.storage.runs import record_give_up

pytestmark = pytest.mark.slow

OTHER = "bob@example.org"
REASON = "gave up at 2026-06-26 13:00 UTC: arXiv's feed still showed 2026-06-25"




def digest(world, *args: str):
    result = CliRunner().invoke(cli, ["--config", world.settings.source, *args])
    assert result.exit_code in (0, 1), result.output
    return result


def notices_to(smtp, address: str) -> list:
    return [m for m in smtp.messages if address in m.rcpt_tos and m.message["Subject"].startswith("digest: ")]


def notice_rows(db) -> list[tuple]:
    return db.execute("SELECT problem, day, sent_to, error FROM notices ORDER BY created_at").fetchall()


def test_a_day_given_up_sends_one_notice_then_none_and_the_next_digest_says_it_caught_up(world, smtp):
    world.configure(profile=PROFILE + f'email_to = ["{READER}"]\nfiles = true\n')
    db = world.open()
    # what the daemon does when it stops polling: record why, then run `digest deliver`
    record_give_up(db, DAY, dt.datetime(2026, 6, 26, 11, 0, tzinfo=dt.timezone.utc), REASON)
    digest(world, "deliver")
    [notice] = notices_to(smtp, READER)
    assert notice.message["Subject"] == f"digest: no digest for {DAY}: {REASON}"
    body = notice.part("plain")
    assert f"no digest for {DAY}: {REASON}" in body
    assert "Since: 2026-06-26T11:00:00+00:00" in body and "Kept: every paper fetched is stored" in body
    assert "To look: digest status" in body
    [written] = (world.files_dir / "notices").iterdir()
    assert written.name == "2026-06-26-gave-up.txt" and written.read_text() == body.replace("\r\n", "\n")
    assert notice_rows(db) == [("gave up", "2026-06-26", json.dumps([f"email to {READER}", "files"]), None)]

    digest(world, "deliver")  # a minute later, and the next start: not twice
    assert len(notices_to(smtp, READER)) == 1

    db, result = world.run()  # arXiv's feed is back: the day's digest goes out, and says what it caught up
    assert result.status == "sent", result.error
    [sent] = [m for m in smtp.messages if not m.message["Subject"].startswith("digest: ")]
    assert f"Caught up since the last digest: {DAY}: no digest for {DAY}: gave up at" in " ".join(
        sent.part("plain").split())
    assert "Caught up since the last digest" in sent.part("html")
    digest(world, "deliver")  # the next day: recovered, so nothing more to say
    assert len(smtp.messages) == 2 and len(notice_rows(db)) == 1
    assert db.execute("SELECT reported_at IS NOT NULL FROM notices").fetchall() == [(1,)]


def test_a_delivery_failed_for_good_is_told_to_the_other_recipient_once_never_in_a_loop(world, smtp):
    smtp.refuse_recipient(OTHER, "550 5.1.1 no such user here")
    world.configure(profile=PROFILE + f'email_to = ["{READER}", "{OTHER}"]\n')
    db, result = world.run()
    assert result.status == "failed"
    digest(world, "deliver")
    [notice] = notices_to(smtp, READER)
    assert notice.message["Subject"].startswith(f"digest: the digest of {DAY} (me) could not be sent by email to "
                                                f"{OTHER}: ")
    assert "550 5.1.1 no such user here" in notice.part("plain")
    assert "`digest resend` sends it" in notice.part("plain")
    assert notices_to(smtp, OTHER) == []
    # the cause is not fixed: resending fails again, and no second notice follows
    assert "Sent 0 of 1" in digest(world, "resend", DAY.isoformat()).output
    digest(world, "deliver")
    assert len(notices_to(smtp, READER)) == 1
    assert notice_rows(db) == [(f"delivery email to {OTHER}", "2026-06-26", json.dumps([f"email to {READER}"]), None)]


def test_a_notice_channel_that_fails_too_is_recorded_and_not_retried(world, smtp, caplog):
    smtp.fail_data("550 5.7.1 message rejected", times=5)
    with ChatServer() as chat:
        world.configure(chat=f'[chat.lab]\nurl = "{chat.url}"\n',
                        profile=world.profile + 'chat = ["lab"]\n')
        db, result = world.run()
        assert [d["status"] for d in result.deliveries] == ["failed", "sent"]  # email refused, chat posted
        chat.fail(500, times=1)
        digest(world, "deliver")
        digest(world, "deliver")
    assert len(chat.posts) == 1 and len(chat.rejected) == 1  # the digest, then the notice once
    [(problem, day, sent_to, failure)] = notice_rows(db)
    assert (problem, sent_to) == (f"delivery email to {READER}", "[]")
    assert failure.startswith("chat to lab: ") and "500" in failure
    assert f"notice (delivery email to {READER}, 2026-06-26)" in caplog.text


def test_an_llm_that_failed_for_a_whole_run_is_noticed_once_the_digest_still_goes_out(world, smtp):
    with LLMServer() as llm:
        llm.script(*[error(401)] * 20)  # a wrong or expired key: every request of the run refused
        world.configure(llm=f'[llm]\nmodel = "gpt-test"\nbase_url = "{llm.url}"\napi_key = "sk-test"\nsummarize = 3\n')
        first = digest(world, "run")
        again = digest(world, "run")  # the same day again: already sent, no second notice
    assert first.exit_code == 0 and again.exit_code == 0
    [notice] = notices_to(smtp, READER)
    assert notice.message["Subject"] == (f"digest: the LLM summarized none of the 3 papers of {DAY}; the digest "
                                         f"showed their abstracts")
    assert len(smtp.messages) == 2  # the digest (with abstracts) and the notice


def test_a_failed_systemd_unit_is_told_once_a_day_through_the_channels(world, smtp):
    world.configure(profile=PROFILE + f'email_to = ["{READER}"]\n')
    first = digest(world, "notify-failure", "digest.service")  # what digest-notify-failure@.service runs
    assert first.exit_code == 0 and first.stdout == f"digest.service: told email to {READER}.\n"
    again = digest(world, "notify-failure", "digest.service")  # systemd may start it again: not twice
    assert again.stdout == "digest.service: already told today.\n"
    [notice] = notices_to(smtp, READER)
    assert notice.message["Subject"] == "digest: the systemd unit digest.service failed"
    assert "`journalctl -u digest.service` says why" in notice.part("plain")
