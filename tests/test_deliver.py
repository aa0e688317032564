"""Delivery as the recipient sees it: real SMTP (aiosmtpd, STARTTLS with a test CA, AUTH) and a real chat
webhook on loopback, the outbox's rows in SQLite, and the files on disk."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import os
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from chat_server import ChatServer
from click.testing import CliRunner
from loopback import free_port
from smtp_server import SMTPServer
from test_render import BIG_DAY, SCRIPT_TITLE, all_papers, announced, day_view, html_ids, make_view, tagged_ids
from world import SMTP_PASSWORD, SMTP_USER

from digest import deliver, render
from digest.cli import cli
from digest.config import parse_settings
from digest.deliver import chat as chat_module
from digest.storage import db as dbm
from digest.storage import papers as paper_rows
from digest.storage import ledger
from digest.storage import outbox

ALICE, BOB = "alice@example.org", "bob@example.org"
LATER = dt.timedelta(hours=7)  # past any backoff


@pytest.fixture
def chat():
    with ChatServer() as server:
        yield server


def settings_with(*, smtp=None, chat=None, attach=True, password=SMTP_PASSWORD, email_to=(ALICE,), files=False,
                  extra="", tmp_path=None):
    body = ""
    if smtp is not None:
        body += smtp.settings_toml(SMTP_USER, password)
    if chat is not None:
        body += f'[chat.team]\nurl = "{chat.url}"\nattach = {str(attach).lower()}\n'
    if tmp_path is not None:
        body += f'[files]\ndir = "{tmp_path / "digests"}"\n'
    body += extra
    body += '[profiles.me]\ninterests = ["agents"]\n'
    if smtp is not None and email_to:
        body += f"email_to = {json.dumps(list(email_to))}\n"
    if chat is not None:
        body += 'chat = ["team"]\n'
    if files:
        body += "files = true\n"
    return parse_settings(body)


def store(db, settings, view) -> int:
    """What the pipeline does when it builds a digest: the row, its ledger rows and its rendered formats."""
    paper_rows.save_papers(db, [i.paper for i in view.items])  # stored by the fetch, before any digest
    return ledger.store_digest(db, view, render.render_digest(view, settings), [])


def queue(db, settings, view) -> int:
    digest_id = store(db, settings, view)
    outbox.enqueue(db, digest_id, settings.channels_for(settings.profiles["me"]))
    return digest_id


def rows(db) -> list[dict]:
    return list(db.query("SELECT channel, target, status, attempts, last_error, next_attempt_at, parts_sent "
                         "FROM deliveries ORDER BY id"))


def later():
    return dt.datetime.now(dt.timezone.utc) + LATER


# -- email ---------------------------------------------------------------------------------------------

def test_the_email_of_a_500_paper_day_arrives_with_every_paper_once(db, smtp):
    settings = settings_with(smtp=smtp, email_to=(ALICE, BOB))
    view = day_view(BIG_DAY)
    view.items[0].paper.title = SCRIPT_TITLE
    queue(db, settings, view)

    outcomes = deliver.deliver_due(db, settings)

    assert [o.status for o in outcomes] == ["sent", "sent"]
    assert sorted(m.rcpt_tos[0] for m in smtp.messages) == [ALICE, BOB]
    assert {m.authenticated_as for m in smtp.messages} == {SMTP_USER}
    mail = smtp.messages[0]
    ids = [p.id for p in announced(BIG_DAY)]
    # The body stays under Gmail's clipping size and shows the first papers in order; the attached
    # complete digest and the text part have every one.
    body = mail.part("html")
    assert len(body.encode()) <= 100_000
    assert html_ids(body) == [i.paper.id for i in view.items][:len(html_ids(body))]
    left_out = len(ids) - len(html_ids(body))
    assert left_out > 0 and f"{left_out} more papers, ranked, are in the attached digest-me-2026-06-22.html" in body
    assert sorted(html_ids(mail.attachments()["digest-me-2026-06-22.html"])) == sorted(ids)
    assert sorted(tagged_ids(mail.part("plain"))) == sorted(ids)
    assert mail.message.get_content_type() == "multipart/mixed"
    assert [p.get_content_type() for p in mail.message.walk()] == [
        "multipart/mixed", "multipart/alternative", "text/plain", "text/html", "text/html"]
    assert mail.message["Subject"] == f"arXiv digest 2026-06-22 (me): {len(ids)} papers, 12 summarized"
    sent_at = email.utils.parsedate_to_datetime(mail.message["Date"])
    assert abs((sent_at - dt.datetime.now(dt.timezone.utc)).total_seconds()) < 120
    assert mail.message["From"] == "digest@example.org" and mail.message["Message-ID"].endswith("@example.org>")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in mail.part("html") and "<script>" not in mail.part("html")
    assert SCRIPT_TITLE in mail.part("plain")
    assert max(len(line) for line in mail.raw.split(b"\r\n")) < 998
    assert [r["status"] for r in rows(db)] == ["sent", "sent"]


def test_a_second_run_sends_nothing_and_resend_sends_again(db, smtp):
    settings = settings_with(smtp=smtp)
    digest_id = queue(db, settings, day_view(dt.date(2026, 6, 24)))
    deliver.deliver_due(db, settings)
    assert outbox.enqueue(db, digest_id, [("email", ALICE)]) == 0  # queued once, whoever asks again
    assert deliver.deliver_due(db, settings, now=later()) == []
    assert len(smtp.messages) == 1

    [row] = outbox.chosen_for_resend(db, day=None, profile=None, failed_only=False, channel=None, target=ALICE)
    assert outbox.requeue(db, [row["id"]]) == 1
    assert [o.status for o in deliver.deliver_due(db, settings)] == ["sent"]
    assert len(smtp.messages) == 2
    first, second = smtp.messages
    assert first.message["Message-ID"] == second.message["Message-ID"]  # recognisably the same digest


def test_a_1500_paper_digest_still_sends(db, smtp):
    settings = settings_with(smtp=smtp)
    papers = all_papers()[:1500]
    queue(db, settings, make_view(papers))
    assert [o.status for o in deliver.deliver_due(db, settings)] == ["sent"]
    mail = smtp.messages[0]
    assert len(mail.part("html").encode()) <= 100_000
    assert len(html_ids(mail.attachments()["digest-me-2026-06-22.html"])) == 1500


def test_a_temporary_failure_is_retried_and_the_digest_sent_once(db, smtp):
    settings = settings_with(smtp=smtp)
    queue(db, settings, day_view(dt.date(2026, 6, 24)))
    smtp.fail_data("451 4.3.0 mailbox busy, try again later")

    first = deliver.deliver_due(db, settings)
    assert [o.status for o in first] == ["pending"]
    row = rows(db)[0]
    assert row["attempts"] == 1 and "451 4.3.0 mailbox busy" in row["last_error"]
    assert row["next_attempt_at"] > dbm.now_iso()
    assert deliver.deliver_due(db, settings) == []  # not due yet

    assert [o.status for o in deliver.deliver_due(db, settings, now=later())] == ["sent"]
    assert len(smtp.messages) == 1 and rows(db)[0]["status"] == "sent" and rows(db)[0]["attempts"] == 2


def test_a_refused_recipient_fails_for_good_and_shows_in_status(db, smtp):
    settings = settings_with(smtp=smtp, email_to=(ALICE, BOB))
    queue(db, settings, day_view(dt.date(2026, 6, 24)))
    smtp.refuse_recipient(BOB, "550 5.1.1 no such user here")

    outcomes = deliver.deliver_due(db, settings)

    assert {o.target: o.status for o in outcomes} == {ALICE: "sent", BOB: "failed"}
    [waiting] = outbox.not_sent(db)
    assert (waiting["target"], waiting["status"], waiting["day"]) == (BOB, "failed", "2026-06-24")
    assert waiting["last_error"] == f"127.0.0.1:{smtp.port}: recipient {BOB} refused: 550 5.1.1 no such user here"
    assert deliver.deliver_due(db, settings, now=later()) == []


def test_a_wrong_password_fails_for_good_without_showing_it(db, smtp):
    settings = settings_with(smtp=smtp, password="not-the-password")
    queue(db, settings, day_view(dt.date(2026, 6, 24)))
    [outcome] = deliver.deliver_due(db, settings)
    assert outcome.status == "failed" and "535" in outcome.error and f"login as {SMTP_USER} refused" in outcome.error
    assert "not-the-password" not in json.dumps(rows(db))
    assert smtp.messages == []


def test_a_server_that_is_down_means_retry_later(db, smtp):
    settings = settings_with(smtp=smtp)
    down = settings.model_copy(update={"email": settings.email.model_copy(update={"port": free_port()})})
    queue(db, settings, day_view(dt.date(2026, 6, 24)))
    [outcome] = deliver.deliver_due(db, down)
    assert outcome.status == "pending" and outcome.error.endswith("cannot connect: Connection refused")
    assert [o.status for o in deliver.deliver_due(db, settings, now=later())] == ["sent"]


def test_a_dropped_connection_during_data_is_retried(db, smtp):
    settings = settings_with(smtp=smtp)
    queue(db, settings, day_view(dt.date(2026, 6, 24)))
    smtp.disconnect_in_data()
    assert [o.status for o in deliver.deliver_due(db, settings)] == ["pending"]
    assert [o.status for o in deliver.deliver_due(db, settings, now=later())] == ["sent"]
    assert len(smtp.messages) == 1


def test_implicit_ssl_works_too(db):
    with SMTPServer(security="ssl", users={SMTP_USER: SMTP_PASSWORD}) as server:
        settings = settings_with(smtp=server)
        queue(db, settings, day_view(dt.date(2026, 6, 24)))
        assert [o.status for o in deliver.deliver_due(db, settings)] == ["sent"]
        assert [m.authenticated_as for m in server.messages] == [SMTP_USER]


def test_an_untrusted_certificate_is_refused(db, smtp):
    settings = settings_with(smtp=smtp)
    untrusted = settings.model_copy(update={"email": settings.email.model_copy(update={"ca_file": ""})})
    queue(db, untrusted, day_view(dt.date(2026, 6, 24)))
    [outcome] = deliver.deliver_due(db, untrusted)
    assert outcome.status == "failed" and "TLS certificate not trusted" in outcome.error
    assert smtp.messages == []


# -- exactly once under concurrency and crashes ----------------------------------------------------------

def test_two_workers_at_once_send_each_row_once(tmp_path, smtp):
    recipients = [f"r{n}@example.org" for n in range(8)]
    settings = settings_with(smtp=smtp, email_to=recipients)
    path = tmp_path / "digest.db"
    queue(dbm.open_db(path), settings, day_view(dt.date(2026, 6, 24)))
    results: list = []
    start = threading.Barrier(2)

    def worker(name):
        connection = dbm.open_db(path)  # each worker its own connection, as two processes would have
        start.wait()
        results.extend(deliver.deliver_due(connection, settings, worker=name))

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(m.rcpt_tos[0] for m in smtp.messages) == sorted(recipients)
    assert sorted(o.target for o in results) == sorted(recipients)
    assert {r["status"] for r in rows(dbm.open_db(path))} == {"sent"}


def test_a_row_left_sending_by_a_dead_process_is_sent_after_the_lease(db, smtp):
    settings = settings_with(smtp=smtp)
    queue(db, settings, day_view(dt.date(2026, 6, 24)))
    db.execute("UPDATE deliveries SET status = 'sending', claimed_by = 'dead:1', claimed_at = ?", [dbm.now_iso()])
    assert deliver.deliver_due(db, settings) == []  # still within its lease: someone may be sending it
    assert [o.status for o in deliver.deliver_due(db, settings, now=later())] == ["sent"]
    assert len(smtp.messages) == 1


def test_a_transient_failure_gives_up_after_max_attempts(db, smtp):
    settings = settings_with(smtp=smtp)
    queue(db, settings, day_view(dt.date(2026, 6, 24)))
    db.execute("UPDATE deliveries SET attempts = ?", [outbox.MAX_ATTEMPTS - 1])
    smtp.fail_data("421 4.7.0 too busy")
    [outcome] = deliver.deliver_due(db, settings)
    assert outcome.status == "failed"
    assert outcome.error.startswith(f"gave up after {outbox.MAX_ATTEMPTS} attempts: ")


# -- chat ------------------------------------------------------------------------------------------------

def test_chat_gets_the_top_section_and_the_complete_digest_attached(db, chat):
    settings = settings_with(chat=chat)
    queue(db, settings, day_view(BIG_DAY))
    assert [o.status for o in deliver.deliver_due(db, settings)] == ["sent"]

    [post] = chat.posts
    assert len(post.message) <= 32768 * chat_module.LENGTH_MARGIN
    assert "## Top 15" in post.message and "Every other paper" not in post.message
    assert f"All {len(announced(BIG_DAY))} papers, with every summary, are in the attached" in post.message
    [attached] = post.attachments
    assert attached.filename == "digest-me-2026-06-22.html" and attached.mimetype == "text/html"
    assert sorted(html_ids(attached.text)) == sorted(p.id for p in announced(BIG_DAY))


def test_chat_without_attachments_splits_the_digest_and_drops_nothing(db, chat):
    settings = settings_with(chat=chat, attach=False)
    queue(db, settings, day_view(BIG_DAY))
    assert [o.status for o in deliver.deliver_due(db, settings)] == ["sent"]

    assert len(chat.posts) > 1
    assert all(len(p.message) <= 32768 and not p.attachments for p in chat.posts)
    joined = "\n".join(p.message for p in chat.posts)
    assert sorted(tagged_ids(joined)) == sorted(p.id for p in announced(BIG_DAY))
    assert rows(db)[0]["parts_sent"] == len(chat.posts)


def test_chat_split_retry_resends_only_the_parts_not_yet_sent(db, chat):
    settings = settings_with(chat=chat, attach=False)
    queue(db, settings, day_view(BIG_DAY))
    chat.fail(200, times=2)
    chat.fail(503)
    assert [o.status for o in deliver.deliver_due(db, settings)] == ["pending"]
    assert len(chat.posts) == 2 and rows(db)[0]["parts_sent"] == 2
    assert "error=503" in rows(db)[0]["last_error"]

    assert [o.status for o in deliver.deliver_due(db, settings, now=later())] == ["sent"]
    joined = "\n".join(p.message for p in chat.posts)
    assert sorted(tagged_ids(joined)) == sorted(p.id for p in announced(BIG_DAY))


def test_chat_rate_limit_then_success_sends_once(db, chat):
    settings = settings_with(chat=chat)
    queue(db, settings, day_view(dt.date(2026, 6, 24)))
    chat.fail(429)
    assert [o.status for o in deliver.deliver_due(db, settings)] == ["pending"]
    assert [o.status for o in deliver.deliver_due(db, settings, now=later())] == ["sent"]
    assert len(chat.posts) == 1


def test_chat_unauthorized_fails_for_good_and_never_shows_the_url_token(db, chat):
    token = "T0KEN9x8y7z6w5"
    body = (f'[chat.team]\nurl = "{chat.url}/{token}"\n[profiles.me]\ninterests = ["agents"]\nchat = ["team"]\n')
    settings = parse_settings(body)
    queue(db, settings, day_view(dt.date(2026, 6, 24)))
    chat.fail(401)
    [outcome] = deliver.deliver_due(db, settings)
    assert outcome.status == "failed" and "error=401" in outcome.error
    assert token not in json.dumps(rows(db))
    assert deliver.deliver_due(db, settings, now=later()) == []


def test_split_messages_fit_small_limits_and_keep_every_line():
    markdown = render.render_digest(day_view(dt.date(2026, 6, 24)), parse_settings(
        '[profiles.me]\ninterests = ["x"]\n')).markdown
    parts = chat_module.split_message(markdown, 2000)
    assert all(len(p) <= 2000 for p in parts)
    assert [l for l in "\n".join(parts).splitlines() if l.strip()] == [l for l in markdown.splitlines() if l.strip()]


# -- files -----------------------------------------------------------------------------------------------

def test_files_are_written_with_an_atom_feed(db, tmp_path):
    settings = settings_with(tmp_path=tmp_path, files=True)
    for day in (dt.date(2026, 6, 23), dt.date(2026, 6, 24)):
        queue(db, settings, day_view(day))
    assert [o.status for o in deliver.deliver_due(db, settings)] == ["sent", "sent"]

    folder = tmp_path / "digests" / "me"
    assert sorted(p.name for p in folder.iterdir()) == [
        "2026-06-23.html", "2026-06-23.json", "2026-06-23.md", "2026-06-24.html", "2026-06-24.json",
        "2026-06-24.md", "feed.atom"]
    data = json.loads((folder / "2026-06-24.json").read_text())
    assert len(data["items"]) == len(announced(dt.date(2026, 6, 24)))

    ns = {"a": "http://www.w3.org/2005/Atom"}
    feed = ET.fromstring((folder / "feed.atom").read_bytes())
    for required in ("a:id", "a:title", "a:updated", "a:author/a:name"):
        assert feed.find(required, ns) is not None, required
    entries = feed.findall("a:entry", ns)
    assert [e.find("a:link", ns).get("href") for e in entries] == ["2026-06-24.html", "2026-06-23.html"]
    assert all(e.find("a:id", ns).text.startswith("urn:uuid:") and e.find("a:updated", ns).text for e in entries)
    assert entries[0].find("a:title", ns).text.startswith("arXiv digest 2026-06-24 (me)")
    assert not list(folder.glob(".*.tmp"))


def test_the_atom_feed_cleans_paper_titles_as_the_email_does(db, tmp_path):
    settings = settings_with(tmp_path=tmp_path, files=True)
    view = day_view(dt.date(2026, 6, 24))
    view.items[0].paper.title = "Win \u202egnp.exe see https://evil.example/x and https://arxiv.org/abs/2401.01234"
    queue(db, settings, view)
    deliver.deliver_due(db, settings)
    feed = (tmp_path / "digests" / "me" / "feed.atom").read_text()
    assert "evil.example" not in feed and "\u202e" not in feed
    assert "Win gnp.exe see evil[.]example/x and https://arxiv.org/abs/2401.01234" in feed


# -- digest check ----------------------------------------------------------------------------------------

def test_check_reports_each_channel(smtp, chat, tmp_path):
    settings = settings_with(smtp=smtp, chat=chat, tmp_path=tmp_path, files=True)
    results = deliver.check_channels(settings)
    assert [(c, ok) for c, ok, _ in results] == [("email", True), ("chat team", True), ("files", True)]
    assert results[0][2] == (f"connected to 127.0.0.1:{smtp.port}, STARTTLS with a verified certificate, "
                             f"logged in as {SMTP_USER} (nothing sent)")
    assert results[1][2] == f"127.0.0.1:{chat.http.port} answered HEAD / with HTTP 405 (nothing sent)"
    assert smtp.messages == [] and chat.posts == []


# arXiv on a loopback port nothing listens on (9, discard): `check` tries it first, and says so.
NO_ARXIV = '[arxiv]\nfeed_url = "http://127.0.0.1:9/atom/"\napi_url = "http://127.0.0.1:9/api/query"\nmin_interval = 0\n'
ARXIV_DOWN = ["FAIL  arxiv feed: http://127.0.0.1:9/atom/cs.AI: connection refused after 1 attempts",
              "FAIL  arxiv api: http://127.0.0.1:9/api/query: connection refused after 1 attempts",
              "ok    llm: none configured (llm.model is empty): digests show abstracts"]


def test_check_command_says_exactly_what_failed(smtp, write_config, tmp_path):
    config = write_config(NO_ARXIV + smtp.settings_toml(SMTP_USER, "wrong-password")
                          + '[chat.team]\nurl = "json://127.0.0.1:9/hook"\n'
                          + '[profiles.me]\ninterests = ["x"]\nemail_to = ["a@example.org"]\nchat = ["team"]\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "check"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [*ARXIV_DOWN,
        f"FAIL  email: 127.0.0.1:{smtp.port}: login as {SMTP_USER} refused: 535 5.7.8 (check email.user and the password)",
        "FAIL  chat team: 127.0.0.1:9: not reachable: Connection refused",
    ]
    assert "wrong-password" not in result.output


def test_an_unknown_chat_url_is_said_once_in_our_words(write_config):
    # apprise logs "Unsupported URL: ..." at ERROR on its own logger; the user must see our line only.
    config = write_config(NO_ARXIV + '[chat.team]\nurl = "nonsense://127.0.0.1/hook"\n'
                          '[profiles.me]\ninterests = ["x"]\nchat = ["team"]\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "check"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [*ARXIV_DOWN,
                                          "FAIL  chat team: chat.team.url: apprise does not recognise this URL"]


def test_a_sender_left_a_zombie_counts_as_dead_so_its_delivery_is_sent_again():
    # A sender SIGKILLed with its daemon is re-parented to PID 1; in a container PID 1 may never reap
    # it, and kill(pid, 0) still succeeds on the zombie. Its claim must be released, not held for the lease.
    import subprocess

    from digest.locks import process_alive

    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.01)
    try:
        assert not process_alive(child.pid)
        assert process_alive(os.getpid())
    finally:
        child.wait()
    assert not process_alive(child.pid)
