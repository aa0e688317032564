"""The coverage ledger, tried as a hostile world would try it: every paper announced in a profile's categories
goes into exactly one of its digests, whatever arXiv, the calendar, SMTP or the user does.

Each test drives real `digest` processes (`run`, `daemon --once`, `resend`, `status`, `doctor`) against
loopback arXiv (recorded-format feeds and a small API), a real SMTP server with STARTTLS and AUTH, and the
real embedding model; `DIGEST_PRETEND_TODAY` moves the processes' calendar, and `digest doctor` proves
the ledger on the whole database after each.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from feeds import SUBMITTED, arxiv_section, empty_feed_xml, feed_xml, listing_papers, serve_fake_api, serve_feeds
from loopback import Reply
from smtp_server import SMTPServer
from world import SMTP_PASSWORD, SMTP_USER, digest_process

from digest.arxiv.calendar import ET, PRETEND_TODAY_ENV, announcement_day_at
from digest.arxiv.http import network_reason

pytestmark = pytest.mark.slow

CODES = ["cs.IR", "cs.MA", "cs.RO"]  # 1 to 27 papers on each listing day: real data, a quick embed
ALICE, BOB = "alice@example.org", "bob@example.org"
ABS_LINK = re.compile(r"https://arxiv\.org/abs/(\d{4}\.\d{4,5})\b")
D = dt.date


def ids_of(day: dt.date) -> set[str]:
    """The listing's papers of ``day`` in the profile's categories."""
    return {r["id"] for r in listing_papers(day) if set(r["categories"]) & set(CODES)}


def rows_of(day: dt.date) -> list[dict]:
    return [r for r in listing_papers(day) if set(r["categories"]) & set(CODES)]


def seconds_since_et_midnight() -> int:
    now = dt.datetime.now(ET)
    return now.hour * 3600 + now.minute * 60 + now.second


def due_now(today: dt.date) -> dt.date:
    """The announcement day due at this time of day on a pretended ``today`` (the next one after 20:00 ET)."""
    return announcement_day_at(dt.datetime.combine(today, dt.datetime.now(ET).time(), tzinfo=ET))


@dataclass
class Service:
    """One configured digest on loopback: ``digest(...)`` runs a real process on a pretended day."""

    tmp: Path
    config: Path
    smtp: SMTPServer
    feeds: object

    @property
    def db_path(self) -> Path:
        return self.tmp / "state" / "digest.db"

    def digest(self, *args: str, today: dt.date, timeout: float = 180):
        return digest_process(["--config", str(self.config), *args], env={PRETEND_TODAY_ENV: today.isoformat()},
                              timeout=timeout)

    def query(self, sql: str, params=()) -> list[tuple]:
        with closing(sqlite3.connect(self.db_path)) as conn, conn:
            return conn.execute(sql, params).fetchall()

    def mailed(self, recipient: str) -> list[list[str]]:
        """The paper ids of each digest the recipient got, in arrival order (failure notices are not digests)."""
        return [ABS_LINK.findall(m.part("plain")) for m in self.smtp.messages if recipient in m.rcpt_tos
                and not m.message["Subject"].startswith("digest: ")]

    def notices(self, recipient: str) -> list[str]:
        """The subjects of the failure notices the recipient got."""
        return [m.message["Subject"] for m in self.smtp.messages if recipient in m.rcpt_tos
                and m.message["Subject"].startswith("digest: ")]

    def assert_each_once(self, recipient: str, expected: set[str]) -> None:
        """Every expected paper reached the recipient, in exactly one message, and nothing else did."""
        got = [paper for message in self.mailed(recipient) for paper in message]
        assert sorted(got) == sorted(expected), f"{recipient}: missing {expected - set(got)}, " \
                                                f"twice {sorted(p for p in set(got) if got.count(p) > 1)}"

    def doctor(self, today: dt.date) -> str:
        """`digest doctor` on the whole database: every promise kept, or the test fails with its words."""
        checked = self.digest("doctor", today=today)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "each exactly once" in checked.stdout
        return checked.stdout


@pytest.fixture
def service(tmp_path, http_server, smtp, write_config):
    def make(*, extra: str = "", schedule: str = "", recipients=(ALICE,)) -> Service:
        # The daemon fires at midnight ET, so a pretended day's firing is always past and due that day;
        # it gives up polling two minutes from now.
        give_up_after = seconds_since_et_midnight() + 120
        body = (arxiv_section(http_server.url, categories="+".join(CODES), retries=1)
                + smtp.settings_toml(user=SMTP_USER, password=SMTP_PASSWORD)
                + f'[storage]\npath = "{tmp_path / "state" / "digest.db"}"\n'
                + f'[files]\ndir = "{tmp_path / "files"}"\n'
                + f'[schedule]\ntime = "00:00"\ntimezone = "America/New_York"\npoll_every = 1.0\n'
                  f'give_up_after = {give_up_after}.0\n{schedule}'
                + extra
                + '[profiles.me]\ninterests = ["robot learning", "multi-agent systems", "recommender systems"]\n'
                + f"email_to = {json.dumps(list(recipients))}\n")
        feeds = serve_feeds(http_server, {d: feed_xml(d, CODES) for d in SUBMITTED}, day=D(2026, 6, 23))
        serve_fake_api(http_server, set(CODES))
        return Service(tmp_path, write_config(body), smtp, feeds)

    return make


# -- fetching: empty means arXiv said so ------------------------------------------------------------------------

HOSTILE_API_ANSWERS = {
    "a maintenance page": Reply(200, "<html><head><title>arXiv is down for maintenance</title></head></html>",
                                content_type="text/html"),
    "plain text": Reply(200, "Service temporarily unavailable", content_type="text/plain"),
    "an Atom feed that is not an API answer": Reply(200, empty_feed_xml(CODES, D(2026, 6, 25))),
    "an entity bomb": Reply(200, '<?xml version="1.0"?><!DOCTYPE f [<!ENTITY a "aaaaaaaaaa">'
                                 '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><feed xmlns="http://www.w3.org/'
                                 '2005/Atom"><title>&b;</title></feed>'),
}


@pytest.mark.parametrize("answer", HOSTILE_API_ANSWERS, ids=list(HOSTILE_API_ANSWERS))
def test_a_backfill_answered_with_something_not_from_the_api_fails_and_is_fetched_again(service, http_server,
                                                                                        answer):
    svc = service()
    svc.feeds.day = D(2026, 6, 26)
    serve_fake_api(http_server, set(CODES))
    api = http_server.routes["/api/query"]
    http_server.routes["/api/query"] = lambda request: HOSTILE_API_ANSWERS[answer]

    failed = svc.digest("run", "--day", "2026-06-25", today=D(2026, 6, 26))
    assert failed.returncode == 1, failed.stderr
    assert "Error: fetching arXiv failed: 2026-06-25: " in failed.stderr
    assert svc.query("SELECT source, status FROM fetches WHERE announced_on = '2026-06-25'") == [("api", "failed")]
    assert svc.query("SELECT COUNT(*) FROM digests") == [(0,)]
    status = json.loads(svc.digest("status", "--json", today=D(2026, 6, 26)).stdout)
    assert status["last_run"]["status"] == "failed" and "2026-06-25" in status["last_run"]["error"]

    http_server.routes["/api/query"] = api  # arXiv answers properly again: the day is fetched and sent
    again = svc.digest("run", "--day", "2026-06-25", today=D(2026, 6, 26))
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"2026-06-25: sent to me ({len(ids_of(D(2026, 6, 25)))} paper, 0 summarized)\n"
    svc.assert_each_once(ALICE, ids_of(D(2026, 6, 25)))
    svc.doctor(D(2026, 6, 26))


def test_a_day_not_announced_yet_is_a_usage_error_that_records_nothing(service):
    svc = service()
    ahead = svc.digest("run", "--day", "2026-06-25", today=D(2026, 6, 23))
    assert ahead.returncode == 2
    assert ahead.stderr == ("Error: --day 2026-06-25: arXiv has not announced that day yet (the latest "
                            f"announcement due now is {due_now(D(2026, 6, 23))}'s)\n")
    tomorrow = svc.digest("run", "--day", "2026-06-24", today=D(2026, 6, 23))  # the feed still shows 06-23
    assert tomorrow.returncode == 2
    assert tomorrow.stderr.splitlines()[-1].startswith("Error: --day 2026-06-24: arXiv has not announced that day yet")
    assert svc.query("SELECT COUNT(*) FROM runs") == [(0,)]
    assert svc.query("SELECT announced_on, status FROM fetches WHERE status != 'announced'") == []

    svc.feeds.day = D(2026, 6, 24)  # the next day, arXiv announces it: every paper is sent
    sent = svc.digest("run", today=D(2026, 6, 24))
    assert sent.returncode == 0, sent.stderr
    svc.assert_each_once(ALICE, ids_of(D(2026, 6, 24)))
    svc.doctor(D(2026, 6, 24))


def test_a_cut_off_response_is_retried_then_a_failed_fetch_of_one_line(service, http_server):
    svc = service()
    whole = feed_xml(D(2026, 6, 23), CODES)
    svc.feeds.by_day = {D(2026, 6, 23): Reply(body=whole, cut_after=300)}
    failed = svc.digest("run", today=D(2026, 6, 23))
    assert failed.returncode == 1
    error = f"{http_server.url}/atom/{'+'.join(CODES)}: the response was cut off after 2 attempts"
    assert f"Error: fetching arXiv's feed failed: {error}\n" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert svc.query("SELECT source, status, error FROM fetches") == [("feed", "failed", error)]
    assert svc.query("SELECT stage, status, error FROM run_stages WHERE stage = 'fetch'") == [
        ("fetch", "failed", error)]

    answers = iter([Reply(body=whole, cut_after=300)])
    svc.feeds.by_day = lambda day, categories: next(answers, Reply(body=whole))  # cut once, then whole
    sent = svc.digest("run", today=D(2026, 6, 23))
    assert sent.returncode == 0, sent.stderr
    assert "the response was cut off; retrying" in sent.stderr
    svc.assert_each_once(ALICE, ids_of(D(2026, 6, 23)))

    http_server.routes["/api/query"] = lambda request: Reply(body=b"<?xml version='1.0'?><feed>" * 50, cut_after=40)
    backfill = svc.digest("run", "--day", "2026-06-22", today=D(2026, 6, 23))
    assert backfill.returncode == 1
    assert svc.query("SELECT source, status, error FROM fetches WHERE announced_on = '2026-06-22'") == [
        ("api", "failed", f"{http_server.url}/api/query: the response was cut off after 2 attempts")]
    svc.doctor(D(2026, 6, 23))


def test_a_name_that_does_not_resolve_is_said_in_words(monkeypatch):
    """No test may reach a DNS server, so the resolver's answer is played by a patched getaddrinfo; what
    is tested is how digest words the exception requests really raises for it."""
    import socket

    def no_such_name(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    with pytest.raises(requests.ConnectionError) as raised:
        requests.get("http://export.arxiv.org/api/query", timeout=1)
    assert network_reason(raised.value, "http://export.arxiv.org/api/query") == "cannot resolve export.arxiv.org"


# -- the ledger ---------------------------------------------------------------------------------------------------

def test_papers_that_arrive_after_their_days_digest_go_into_the_next_one_marked_late(service):
    svc = service()
    first_half = rows_of(D(2026, 6, 23))[:12]
    svc.feeds.by_day[D(2026, 6, 23)] = feed_xml(D(2026, 6, 23), CODES, rows=first_half)  # a partial first answer
    assert svc.digest("run", today=D(2026, 6, 23)).returncode == 0
    assert sorted(svc.mailed(ALICE)[0]) == sorted(r["id"] for r in first_half)

    svc.feeds.by_day[D(2026, 6, 23)] = feed_xml(D(2026, 6, 23), CODES)  # the feed is regenerated, complete
    again = svc.digest("run", today=D(2026, 6, 23))
    assert again.returncode == 0
    assert again.stdout == "2026-06-23: already sent to me (12 papers), nothing to do\n"
    late = ids_of(D(2026, 6, 23)) - {r["id"] for r in first_half}
    assert f"Papers:      {len(late)} papers waiting for me's next digest" in \
        svc.digest("status", today=D(2026, 6, 23)).stdout
    svc.doctor(D(2026, 6, 23))

    svc.feeds.day = D(2026, 6, 24)
    assert svc.digest("run", today=D(2026, 6, 24)).returncode == 0
    second = svc.mailed(ALICE)[1]
    assert sorted(second) == sorted(ids_of(D(2026, 6, 24)) | late)
    text = " ".join(svc.smtp.messages[1].part("plain").split())
    assert text.count("announced 2026-06-23, after that day's digest") == len(late)
    [(rendered,)] = svc.query("SELECT body FROM renders r JOIN digests d ON d.id = r.digest_id "
                              "WHERE d.announced_on = '2026-06-24' AND r.format = 'json'")
    notes = {i["id"]: i["note"] for i in json.loads(rendered)["items"]}
    assert {i for i, note in notes.items() if note} == late
    assert set(notes[i] for i in late) == {"announced 2026-06-23, after that day's digest"}
    svc.assert_each_once(ALICE, ids_of(D(2026, 6, 23)) | ids_of(D(2026, 6, 24)))
    assert "waiting for" not in svc.digest("status", today=D(2026, 6, 24)).stdout
    svc.doctor(D(2026, 6, 24))


def test_a_merged_catch_up_waiting_in_the_outbox_is_never_built_twice(service, smtp):
    svc = service(schedule='catch_up = "merged"\n', recipients=(ALICE, BOB))
    assert svc.digest("daemon", "--once", today=D(2026, 6, 23)).returncode == 0

    smtp.fail_data("451 4.3.0 try again later", times=1000)  # the mail server is down for a while
    svc.feeds.day = D(2026, 6, 26)
    down = svc.digest("daemon", "--once", today=D(2026, 6, 26))
    assert down.returncode == 1  # today's digest waits in the outbox
    assert "catch-up: 2 missed announcement days (2026-06-24, 2026-06-25), one merged digest" in down.stdout
    digests = svc.query("SELECT announced_on, days FROM digests ORDER BY id")
    assert digests == [("2026-06-23", '["2026-06-23"]'), ("2026-06-25", '["2026-06-24", "2026-06-25"]'),
                       ("2026-06-26", '["2026-06-26"]')]

    still_down = svc.digest("daemon", "--once", today=D(2026, 6, 26))
    assert still_down.returncode == 1
    assert "catch-up" not in still_down.stdout
    inside = svc.digest("run", "--day", "2026-06-24", today=D(2026, 6, 26))
    assert inside.stdout.splitlines()[0] == \
        "2026-06-24: every paper is already in me's digest of 2026-06-25, nothing to do"
    assert svc.query("SELECT announced_on, days FROM digests ORDER BY id") == digests
    svc.doctor(D(2026, 6, 26))

    smtp.data_failures.clear()  # the server is back; the retries are due
    svc.query("UPDATE deliveries SET next_attempt_at = NULL WHERE status = 'pending'")
    assert svc.digest("daemon", "--once", today=D(2026, 6, 26)).returncode == 0
    everything = ids_of(D(2026, 6, 23)) | ids_of(D(2026, 6, 24)) | ids_of(D(2026, 6, 25)) | ids_of(D(2026, 6, 26))
    for reader in (ALICE, BOB):
        assert len(svc.mailed(reader)) == 3
        svc.assert_each_once(reader, everything)
    svc.doctor(D(2026, 6, 26))


# -- the calendar is data, and corrects itself ---------------------------------------------------------------

def restamped(day: dt.date, *listing_days: dt.date) -> bytes:
    """A feed of ``day`` in 2027 made of real listing days' papers (the recorded data ends in 2026)."""
    return feed_xml(day, CODES, rows=[r for d in listing_days for r in rows_of(d)])


def test_mlk_day_2027_is_known_without_a_list_for_2027(service):
    svc = service()
    svc.feeds.by_day = {D(2027, 1, 15): restamped(D(2027, 1, 15), D(2026, 6, 23)),
                        D(2027, 1, 19): restamped(D(2027, 1, 19), D(2026, 6, 24))}
    svc.feeds.day = D(2027, 1, 15)
    assert svc.digest("daemon", "--once", today=D(2027, 1, 15)).returncode == 0

    svc.feeds.day = D(2027, 1, 18)  # Martin Luther King Jr. Day: arXiv's feed is empty
    holiday = svc.digest("daemon", "--once", today=D(2027, 1, 18))
    assert holiday.returncode == 0, holiday.stdout
    assert "2027-01-18 is an arXiv holiday by the calendar; one look at the feed" in holiday.stdout
    assert "gave up" not in holiday.stdout

    svc.feeds.day = D(2027, 1, 19)
    tuesday = svc.digest("daemon", "--once", today=D(2027, 1, 19))
    assert tuesday.returncode == 0, tuesday.stdout
    assert "catch-up" not in tuesday.stdout
    assert svc.query("SELECT announced_on FROM digests ORDER BY id") == [("2027-01-15",), ("2027-01-19",)]
    svc.assert_each_once(ALICE, ids_of(D(2026, 6, 23)) | ids_of(D(2026, 6, 24)))
    svc.doctor(D(2027, 1, 19))


def test_a_closure_the_calendar_does_not_know_sends_no_missed_digest(service, http_server):
    """arXiv closes on Tuesday 2027-12-28, which no list says: the feed goes from Monday's announcement to
    Wednesday's, and Wednesday's holds the submissions the calendar expected on Tuesday."""
    svc = service()
    monday, wednesday = D(2027, 12, 27), D(2027, 12, 29)
    svc.feeds.by_day = {monday: restamped(monday, D(2026, 6, 23)),
                        wednesday: restamped(wednesday, D(2026, 6, 24), D(2026, 6, 26))}
    # By the calendar, Tuesday announces what was submitted from Friday 14:00 to Monday 14:00 ET.
    submitted = [(r, dt.datetime(2027, 12, 27, 10, 0, tzinfo=ET)) for r in rows_of(D(2026, 6, 24))]
    submitted += [(r, dt.datetime(2027, 12, 27, 16, 0, tzinfo=ET)) for r in rows_of(D(2026, 6, 26))]
    serve_fake_api(http_server, set(CODES), submitted)
    svc.feeds.day = monday
    assert svc.digest("daemon", "--once", today=monday).returncode == 0

    svc.feeds.day = wednesday
    after = svc.digest("daemon", "--once", today=wednesday)
    assert after.returncode == 0, after.stdout
    assert svc.query("SELECT source, status, detail FROM fetches WHERE announced_on = '2027-12-28'") == [
        ("api", "empty", "not announced (the feed went from 2027-12-27 to 2027-12-29)")]
    assert svc.query("SELECT announced_on FROM digests ORDER BY id") == [("2027-12-27",), ("2027-12-29",)]
    svc.assert_each_once(ALICE, ids_of(D(2026, 6, 23)) | ids_of(D(2026, 6, 24)) | ids_of(D(2026, 6, 26)))
    assert svc.digest("daemon", "--once", today=wednesday).returncode == 0  # and it stays settled
    assert len(svc.mailed(ALICE)) == 2
    svc.doctor(wednesday)


# -- the outbox: resend what failed, to whom it failed -----------------------------------------------------------

def test_resend_after_a_refused_recipient_was_fixed_sends_only_to_them(service, smtp):
    svc = service(recipients=(ALICE, BOB))
    smtp.refuse_recipient(BOB, "550 5.1.1 no such user here")
    first = svc.digest("run", today=D(2026, 6, 23))
    assert first.returncode == 1
    assert (len(svc.mailed(ALICE)), len(svc.mailed(BOB))) == (1, 0)
    refused = f"127.0.0.1:{smtp.port}: recipient {BOB} refused: 550 5.1.1 no such user here"
    assert svc.notices(ALICE) == [(f"digest: the digest of 2026-06-23 (me) could not be sent by email to {BOB}: "
                                   f"{refused}")[:150]]  # a subject is cut at 150 characters; the body has it all

    smtp.refused.clear()  # the recipient's mailbox exists now
    plan = svc.digest("resend", "--dry-run", today=D(2026, 6, 23))
    assert (plan.returncode, plan.stdout) == (0, f"Would send again:\n  2026-06-23 me: email to {BOB} (failed: "
                                                 f"{refused})\n")
    assert len(svc.smtp.messages) == 2  # the digest and the notice

    resent = svc.digest("resend", today=D(2026, 6, 23))
    assert resent.returncode == 0, resent.stderr
    assert resent.stdout == f"Sending again:\n  2026-06-23 me: email to {BOB} (failed: {refused})\nSent 1 of 1.\n"
    assert (len(svc.mailed(ALICE)), len(svc.mailed(BOB))) == (1, 1)
    svc.assert_each_once(BOB, ids_of(D(2026, 6, 23)))

    nothing = svc.digest("resend", today=D(2026, 6, 23))
    assert nothing.stdout == "Nothing to send again: no delivery failed for good.\n"
    vague = svc.digest("resend", "--all", today=D(2026, 6, 23))
    assert (vague.returncode, vague.stderr) == (
        2, "Error: --all: name the day to send again, e.g. `digest resend --day 2026-06-29 --all`\n")
    asked = svc.digest("resend", "2026-06-23", "--to", ALICE, today=D(2026, 6, 23))  # the user asks, explicitly
    assert asked.returncode == 0 and (len(svc.mailed(ALICE)), len(svc.mailed(BOB))) == (2, 1)
    rerun = svc.digest("run", today=D(2026, 6, 23))
    assert rerun.stdout == f"2026-06-23: already sent to me ({len(ids_of(D(2026, 6, 23)))} papers), nothing to do\n"
    svc.doctor(D(2026, 6, 23))


# -- other holes ----------------------------------------------------------------------------------------------------

def test_an_smtp_reply_quoting_the_auth_line_leaves_no_trace_of_the_password(service, smtp):
    svc = service()
    smtp.quote_auth = True
    svc.config.write_text(svc.config.read_text().replace(f'password = "{SMTP_PASSWORD}"',
                                                         'password = "not-the-password"'))
    outputs = [svc.digest("run", today=D(2026, 6, 23))]
    outputs += [svc.digest(*command, today=D(2026, 6, 23)) for command in (["status"], ["status", "--json"],
                                                                          ["digests", "--json"])]
    assert outputs[0].returncode == 1 and "login as digest refused: 535 5.7.8" in outputs[0].stderr
    blob = base64.b64encode(f"\0{SMTP_USER}\0not-the-password".encode()).decode()
    stored = b"".join(p.read_bytes() for p in svc.db_path.parent.glob("digest.db*"))
    for secret in ("not-the-password", blob, base64.b64encode(b"not-the-password").decode()):
        assert secret.encode() not in stored
        assert not any(secret in o.stdout + o.stderr for o in outputs)


def test_a_database_from_a_newer_digest_is_refused_before_anything_is_written(service):
    svc = service()
    assert svc.digest("run", today=D(2026, 6, 23)).returncode == 0
    svc.query("INSERT INTO _migrations VALUES ('m042_from_the_future', 'x')")
    before = svc.db_path.read_bytes()
    for command in (["status"], ["run"], ["search", "robot"]):
        refused = svc.digest(*command, today=D(2026, 6, 23))
        assert refused.returncode == 1
        assert refused.stderr == ("Error: digest.db was written by a newer digest (migration m042_from_the_future); "
                                  "upgrade digest\n")
    assert svc.db_path.read_bytes() == before
