"""Issue 9's fault matrix, each fault tried through a whole run (fetch, embed, rank, summarize, render,
deliver) against real servers on loopback, and after each one the two promises checked
(:func:`world.assert_invariants`): no announced paper missing from the digest that went out or waits in the
outbox, nothing sent twice. Where the fault is one that clears (a server back up, a disk emptied), the
next run is tried too and must send the complete digest exactly once.

The single faults, one function each, are tested beside their module (test_arxiv, test_summarize,
test_deliver, test_daemon); here the question is what the *user* gets from a run that meets them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from chat_server import ChatServer
from click.testing import CliRunner
from feeds import empty_feed_xml
from llm_server import LLMServer, answer, error, huge, malformed, ok, rate_limited, refusal, slow
from loopback import Reply, free_port
from world import (
    DAY,
    READER,
    SMTP_PASSWORD,
    SMTP_USER,
    assert_invariants,
    copy_database,
    day_feed,
    digest_process,
    feed_paper_ids,
    integrity,
    make_due,
    stored_digest_ids,
    stored_render,
)

from digest import answers, summarize
from digest.cli import cli
from digest.history.status import status as status_of
from digest.storage import db as dbm
from digest.storage.ledger import day_settled

pytestmark = pytest.mark.slow

EXPECTED = set(feed_paper_ids(day_feed()))




def first_answers(*replies: Reply):
    """A feed route that gives these answers first, then the day's real feed."""
    queue = list(replies)

    def answer(day, categories):
        return queue.pop(0) if queue else day_feed()

    return answer


def last_error(db, world) -> str:
    return (status_of(db, world.settings)["last_error"] or {}).get("error") or ""


# -- arXiv ---------------------------------------------------------------------------------------------------

HTML_PAGE = "<!DOCTYPE html><html><head><title>arXiv is down for maintenance</title></head><body></body></html>"

ARXIV_FAILURES = {
    "timeout": ([Reply(body=day_feed(), delay=1.5)] * 2, "timed out after 2 attempts"),
    "500": ([Reply(500, "Internal Server Error", content_type="text/plain")] * 2, "HTTP 500 from arXiv"),
    "malformed XML": ([Reply(body=b"<?xml version='1.0'?>\n<feed><entry><title>x</feed>")],
                      "the feed is not valid XML (cut off or damaged)"),
    "truncated XML": ([Reply(body=day_feed()[:30_000])], "the feed is not valid XML (cut off or damaged)"),
    "HTML error page": ([Reply(200, HTML_PAGE, content_type="text/html")],
                        "arXiv answered with an HTML page instead of a feed (arXiv is down for maintenance)"),
}


@pytest.mark.parametrize("fault", list(ARXIV_FAILURES))
def test_arxiv_failure_fails_the_run_with_its_reason_then_the_next_run_sends_everything_once(world, smtp, fault):
    replies, reason = ARXIV_FAILURES[fault]
    world.feeds.by_day = first_answers(*replies)
    world.configure(arxiv_timeout=0.5)
    db, result = world.run()
    assert result.status == "failed"
    assert reason in result.error
    assert db.execute("SELECT status, error FROM runs").fetchall() == [("failed", result.error)]
    assert db.execute("SELECT status FROM fetches").fetchall() == [("failed",)]
    assert reason in last_error(db, world)  # what `digest status` shows
    assert db["announcements"].count == 0 and db["digests"].count == 0
    assert_invariants(db, smtp, EXPECTED, sent=0)

    db, again = world.run()  # arXiv answers again: the day arrives, complete, once
    assert again.status == "sent", again.error
    assert_invariants(db, smtp, EXPECTED, sent=1)
    db, third = world.run()
    assert_invariants(db, smtp, EXPECTED, sent=1)


@pytest.mark.parametrize("status", [429, 503])
def test_arxiv_asking_to_wait_is_honoured_and_the_run_still_sends(world, smtp, http_server, status):
    world.feeds.by_day = first_answers(Reply(status, "slow down", headers={"Retry-After": "1"},
                                             content_type="text/plain"))
    db, result = world.run()
    assert result.status == "sent", result.error
    feed_requests = [r.at for r in http_server.requests if r.path.startswith("/atom/")]
    assert len(feed_requests) == 2 and feed_requests[1] - feed_requests[0] >= 1.0
    assert_invariants(db, smtp, EXPECTED, sent=1)


def test_an_empty_feed_on_a_weekday_is_not_a_digest_and_leaves_the_day_owed(world, smtp):
    world.feeds.by_day = {DAY: empty_feed_xml(["cs.CL"], DAY)}  # Friday 2026-06-26, no holiday
    db, result = world.run()
    assert result.status == "empty"
    assert db.execute("SELECT status, announced_on FROM fetches").fetchall() == [("empty", None)]
    assert db["digests"].count == 0
    assert not day_settled(db, world.settings, DAY, due=True)  # so the daemon polls again
    assert_invariants(db, smtp, EXPECTED, sent=0)

    world.feeds.by_day = {DAY: day_feed()}  # arXiv's late mailing arrives
    db, result = world.run()
    assert result.status == "sent", result.error
    assert day_settled(db, world.settings, DAY, due=True)
    assert_invariants(db, smtp, EXPECTED, sent=1)


# -- the LLM ----------------------------------------------------------------------------------------------------

def test_every_llm_fault_in_one_run_costs_summaries_never_papers(world, smtp, monkeypatch):
    # The backoff schedule itself is tested in test_summarize; here it would only make the run slow.
    monkeypatch.setattr(summarize, "BACKOFF_BASE", 0.05)
    with LLMServer() as llm:
        # One request at a time, so the scripted answers meet the top papers in rank order.
        llm.script(
            rate_limited(0), ok(),                            # rank 1: 429, retried: a summary
            error(500), error(500), error(500), error(500),   # rank 2: 500 every time: the abstract
            slow(3), slow(3), slow(3), slow(3),               # rank 3: times out every time: the abstract
            malformed(), malformed(),                         # rank 4: invalid JSON twice: the abstract
            refusal(),                                        # rank 5: a refusal: the abstract
            huge(200_000),                                    # rank 6: a huge answer: capped
        )
        world.configure(llm=f'[llm]\nmodel = "gpt-test"\nbase_url = "{llm.url}"\napi_key = "sk-test"\n'
                            'summarize = 6\nconcurrency = 1\ntimeout = 0.5\ndeadline = 60\n',
                        extra="[digest]\ntop = 6\n")
        db, result = world.run()
    assert result.status == "sent", result.error
    assert_invariants(db, smtp, EXPECTED, sent=1)
    top = stored_digest_ids(db)[:6]
    assert [r.paper_id for r in llm.requests] == [top[0]] * 2 + [top[1]] * 4 + [top[2]] * 4 + [top[3]] * 2 + \
        [top[4], top[5]]
    digest = json.loads(stored_render(db, "json"))
    sources = [item["summary"]["source"] for item in digest["items"][:6]]
    assert sources == ["llm", "abstract", "abstract", "abstract", "abstract", "llm"]
    biggest = digest["items"][5]["summary"]
    assert len(biggest["tldr"]) <= answers.FIELD_MAX_CHARS["tldr"]
    assert max(len(biggest[k]) for k in answers.FAQ_FIELDS) <= 1500
    assert db.execute("SELECT summarized FROM digests").fetchone() == (2,)
    text = " ".join(smtp.messages[0].part("plain").split())
    assert text.count("no LLM summary") == 4
    statuses = [r[0] for r in db.execute("SELECT status FROM llm_calls ORDER BY id")]
    assert statuses.count("ok") == 2 and len(statuses) == 14


def test_answers_that_are_no_summaries_are_rejected_and_labelled_in_a_real_digest_run(world, smtp):
    """What a real llama.cpp server running SmolLM2-135M answered: TL;DRs "PAPER" and "arXiv id: ...",
    every other field empty. `digest run` asks once more, then shows each paper's abstract, labelled."""
    with LLMServer() as llm:
        llm.script(answer(tldr="PAPER"), answer(tldr="PAPER"),
                   answer(tldr="arXiv id: 2606.30237 (version 1),"), answer(tldr="arXiv id: 2606.30237 (version 1),"),
                   ok())
        settings = world.configure(llm=f'[llm]\nmodel = "gpt-test"\nbase_url = "{llm.url}"\napi_key = "sk-test"\n'
                                       'summarize = 3\nconcurrency = 1\n', extra="[digest]\ntop = 3\n")
        process = digest_process(["--config", str(settings.source), "run"])
    assert process.returncode == 0, process.stderr
    db = world.open()
    assert_invariants(db, smtp, EXPECTED, sent=1)
    assert all(r.body["max_tokens"] == 1000 and r.body["temperature"] == 0.2 for r in llm.requests)
    rows = db.execute("SELECT status, error FROM llm_calls ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["invalid"] * 4 + ["ok"]
    assert all("not a sentence about the paper" in r[1] for r in rows[:4])
    digest = json.loads(stored_render(db, "json"))
    assert [item["summary"]["source"] for item in digest["items"][:3]] == ["abstract", "abstract", "llm"]
    text = " ".join(smtp.messages[0].part("plain").split())
    assert text.count("no LLM summary") == 2 and "arXiv id: 2606.30237" not in text
    shown = {item["summary"]["tldr"] for item in digest["items"] if item["summary"]}
    assert shown.isdisjoint({"PAPER", "arXiv id: 2606.30237 (version 1),"})


# -- SMTP -------------------------------------------------------------------------------------------------------

def _smtp_settings(smtp, **changes) -> str:
    lines = smtp.settings_toml(user=SMTP_USER, password=changes.pop("password", SMTP_PASSWORD))
    for key, value in changes.items():
        lines = "\n".join(f"{key} = {value}" if line.startswith(f"{key} =") else line
                          for line in lines.splitlines()) + "\n"
    return lines


# fault name -> (how to cause it, run status, outbox status, words in the error, how the user recovers)
SMTP_FAULTS = {
    "connection refused": (lambda s: _smtp_settings(s, port=free_port()), "pending", "pending",
                           "cannot connect: Connection refused", "retry"),
    "TLS failure (untrusted certificate)": (lambda s: _smtp_settings(s, ca_file='""'), "failed", "failed",
                                            "TLS certificate not trusted", "resend"),
    "AUTH failure": (lambda s: _smtp_settings(s, password="wrong-password"), "failed", "failed",
                     "login as digest refused: 535", "resend"),
    "421 temporary": ("421 4.7.0 try again later", "pending", "pending", "message refused: 421", "retry"),
    "451 temporary": ("451 4.3.0 temporary failure", "pending", "pending", "message refused: 451", "retry"),
    "550 permanent": ("550 5.7.1 message rejected", "failed", "failed", "message refused: 550", "resend"),
    "disconnect during DATA": ("disconnect", "pending", "pending", "connection lost while sending", "retry"),
}


@pytest.mark.parametrize("fault", list(SMTP_FAULTS))
def test_smtp_fault_keeps_the_complete_digest_in_the_outbox_and_it_goes_out_once(world, smtp, fault):
    cause, run_status, row_status, words, recovery = SMTP_FAULTS[fault]
    if callable(cause):
        world.configure(email=cause(smtp))
    elif cause == "disconnect":
        smtp.disconnect_in_data(times=1)
    else:
        smtp.fail_data(cause, times=1)
    db, result = world.run()
    assert result.status == run_status
    assert words in result.error
    assert db.execute("SELECT status FROM deliveries").fetchall() == [(row_status,)]
    status = status_of(db, world.settings)
    listed = status["pending"] + status["failed"]
    assert [o["status"] for o in listed] == [row_status] and words in listed[0]["last_error"]
    assert SMTP_PASSWORD not in json.dumps(status) and "wrong-password" not in json.dumps(status)
    assert_invariants(db, smtp, EXPECTED, sent=0)

    world.configure(email="")  # the user fixes the configuration, or the server recovers
    if recovery == "retry":  # the outbox retries by itself once the backoff has passed
        make_due(db)
        db, again = world.run()
        assert again.status == "sent", again.error
    else:  # a permanent failure waits for the user: `digest resend` (what failed) after fixing the cause
        resent = world.resend(DAY.isoformat())
        assert resent.exit_code == 0, resent.output
        assert resent.stdout == (f"Sending again:\n  {DAY} me: email to {READER} (failed: {listed[0]['last_error']})\n"
                                 f"Sent 1 of 1.\n")
    assert_invariants(db, smtp, EXPECTED, sent=1)
    db, third = world.run()
    assert_invariants(db, smtp, EXPECTED, sent=1)


# -- chat -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("status, outcome", [(429, "pending"), (500, "pending"), (401, "failed")])
def test_chat_fault_through_a_run(world, smtp, status, outcome):
    with ChatServer(path="/hook/T0KEN-chat-4711") as chat:
        world.configure(chat=f'[chat.lab]\nurl = "{chat.url}"\n',
                        profile=world.profile + 'chat = ["lab"]\n')
        chat.fail(status, times=1)
        db, result = world.run()
        assert result.status == outcome
        assert f"error={status}" in result.error
        assert "T0KEN-chat-4711" not in result.error
        row = db.execute("SELECT status, last_error FROM deliveries WHERE channel = 'chat'").fetchone()
        assert row[0] == outcome and "T0KEN-chat-4711" not in row[1]
        assert chat.posts == []
        assert_invariants(db, smtp, EXPECTED, sent=1)  # email went out regardless of the chat

        status_shown = status_of(db, world.settings)
        listed = status_shown["pending"] + status_shown["failed"]
        assert [(o["channel"], o["status"]) for o in listed] == [("chat", outcome)]
        if outcome == "failed":
            # A refused token waits for the user, for `digest resend` after fixing it.
            return
        make_due(db)
        db, again = world.run()
        assert again.status == "sent", again.error
        assert len(chat.posts) == 1
        attached = chat.posts[0].attachments[0].text
        assert all(f"arxiv.org/abs/{paper_id}" in attached for paper_id in EXPECTED)
        assert_invariants(db, smtp, EXPECTED, sent=1)


# -- the database -----------------------------------------------------------------------------------------------

HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
conn.execute("INSERT INTO feedback VALUES ('2606.00001', '', 1, 'x')")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def hold_write_lock(path, seconds: float) -> subprocess.Popen:
    """Another process in the middle of a write transaction (a `digest like` or a sqlite3 shell)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_database_briefly_locked_by_another_process_is_waited_for(world, smtp):
    world.configure()
    dbm.open_db(world.db_path).conn.close()
    holder = hold_write_lock(world.db_path, 1.5)
    started = time.monotonic()
    db, result = world.run()
    holder.wait(10)
    assert result.status == "sent", result.error
    assert time.monotonic() - started >= 1.0
    assert_invariants(db, smtp, EXPECTED, sent=1)
    assert db.execute("SELECT COUNT(*) FROM feedback").fetchone() == (1,)  # the other writer's work is kept


def test_a_database_locked_past_the_busy_timeout_is_one_line_and_the_next_run_sends(world, smtp, monkeypatch):
    world.configure()
    dbm.open_db(world.db_path).conn.close()
    monkeypatch.setattr(dbm, "BUSY_TIMEOUT_MS", 300)  # the real 10 s would make this test slow, not different
    holder = hold_write_lock(world.db_path, 4)
    try:
        outcome = CliRunner().invoke(cli, ["run"])
    finally:
        holder.kill()
        holder.wait()
    assert outcome.exit_code == 1, outcome.output
    assert outcome.stderr == (f"Error: {world.db_path}: the database is locked by another process; "
                              f"run again when it has finished\n")
    monkeypatch.undo()
    db, result = world.run()
    assert result.status == "sent", result.error
    assert_invariants(db, smtp, EXPECTED, sent=1)


def test_a_read_only_database_is_one_line_and_loses_nothing(world, smtp):
    config = world.write_config(world.toml())
    db, result = world.run()  # yesterday's work, stored
    assert result.status == "sent"
    db.conn.close()
    before = world.db_path.read_bytes()
    world.db_path.chmod(0o444)
    try:
        process = digest_process(["--config", str(config), "run"], without_root_override=True)
    finally:
        world.db_path.chmod(0o644)
    assert process.returncode == 1, process.stderr
    assert process.stderr.splitlines()[-1] == (
        f"Error: {world.db_path}: the database is read-only (attempt to write a readonly database); "
        f"digest must be able to write it: check the file's owner and permissions")
    assert "Traceback" not in process.stderr
    assert world.db_path.read_bytes() == before
    assert integrity(world.db_path) == "ok"
    db = world.open()
    assert_invariants(db, smtp, EXPECTED, sent=1)


FULL_DISK_TAIL = "Nothing stored was lost: free some space and run digest again"


@pytest.mark.parametrize("room", ["none", "for the fetch"])
def test_a_full_disk_fails_the_run_in_one_line_keeps_what_was_stored_and_sends_once_with_space(world, smtp, room):
    config = world.write_config(world.toml())
    db = world.open()
    stored = {t: db[t].count for t in ("papers", "embeddings")}
    db.conn.close()
    # RLIMIT_FSIZE caps each file: 32 KB leaves the write-ahead log no room for the day's papers; the
    # database's size plus 64 KB lets the fetch and ranking through and stops at the rendered digest.
    limit = 32 * 1024 if room == "none" else world.db_path.stat().st_size + 64 * 1024
    process = digest_process(["--config", str(config), "run"], file_size_limit=limit)
    assert process.returncode == 1, process.stderr
    assert process.stderr.splitlines()[-1] == (
        f"Error: {world.db_path}: writing to the disk failed (disk I/O error); is it full? {FULL_DISK_TAIL}")
    assert "Traceback" not in process.stderr
    assert smtp.messages == []
    assert integrity(world.db_path) == "ok"
    db = world.open()
    assert {t: db[t].count for t in stored} == stored
    assert db["digests"].count == 0
    assert_invariants(db, smtp, EXPECTED, sent=0)

    db, result = world.run()  # space again
    assert result.status == "sent", result.error
    assert_invariants(db, smtp, EXPECTED, sent=1)


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 1 MB tmpfs, where the system allows mounting one (root with CAP_SYS_ADMIN): a disk that is
    really full, with ENOSPC, rather than a file-size limit."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here; the RLIMIT_FSIZE test covers a full disk")
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_a_really_full_disk_is_one_line_too(world, smtp, tiny_filesystem):
    template = world.db_path
    world.db_path_override = tiny_filesystem / "digest.db"
    copy_database(template, world.db_path_override)
    body = world.toml().replace(f'path = "{template}"', f'path = "{world.db_path_override}"')
    config = world.write_config(body)
    process = digest_process(["--config", str(config), "run"])
    assert process.returncode == 1, process.stderr
    assert process.stderr.splitlines()[-1] == (
        f"Error: {world.db_path_override}: the disk is full (database or disk is full); "
        f"nothing stored was lost: free some space and run digest again")
    assert smtp.messages == []
    assert integrity(world.db_path_override) == "ok"


def test_a_files_folder_that_cannot_be_written_waits_in_the_outbox(world, smtp):
    world.configure(profile=world.profile + "files = true\n")
    world.files_dir.mkdir(parents=True)
    (world.files_dir / "me").write_text("a file where the profile's folder should be")  # cannot write there
    db, result = world.run()
    assert result.status == "pending"
    assert "cannot write" in result.error
    assert_invariants(db, smtp, EXPECTED, sent=1)
    (world.files_dir / "me").unlink()
    make_due(db)
    db, again = world.run()
    assert again.status == "sent", again.error
    written = (world.files_dir / "me" / f"{DAY}.md").read_text()
    assert all(f"arxiv.org/abs/{paper_id}" in written for paper_id in EXPECTED)
    assert_invariants(db, smtp, EXPECTED, sent=1)


def test_a_read_only_state_folder_still_answers_the_reading_commands(world, smtp):
    # A database made by the service user, read by someone else (or a backup mounted read-only):
    # SQLite cannot make its -shm file, yet status, search and export must answer, and a run must say why not.
    config = world.write_config(world.toml())
    db, result = world.run()
    assert result.status == "sent"
    title, paper_id = db.execute("SELECT title, id FROM papers ORDER BY id LIMIT 1").fetchone()
    db.conn.close()
    folder = world.db_path.parent
    before = sorted(p.name for p in folder.iterdir())
    folder.chmod(0o555)
    try:
        def digest(*args):
            return digest_process(["--config", str(config), *args], without_root_override=True)

        status = digest("status", "--json")
        found = digest("search", title.split()[0], "--json", "--limit", "100")
        shown = digest("show", paper_id, "--json")
        run = digest("run")
    finally:
        folder.chmod(0o755)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["last_run"]["status"] == "done"
    assert found.returncode == 0, found.stderr
    assert paper_id in [row["id"] for row in json.loads(found.stdout)]
    assert shown.returncode == 0 and json.loads(shown.stdout)["title"] == title
    assert run.returncode == 1
    assert run.stderr.splitlines()[-1] == (
        f"Error: {world.db_path}: cannot open the database: its folder {folder} is not writable, and SQLite keeps "
        f"its write-ahead log beside the database; run digest as the folder's owner or make it writable")
    assert sorted(p.name for p in folder.iterdir()) == before
    assert integrity(world.db_path) == "ok"


def test_status_on_a_new_path_creates_nothing(tmp_path, write_config):
    state = tmp_path / "not-yet"
    config = write_config(f'[profiles.me]\ninterests = ["x"]\n[storage]\npath = "{state / "digest.db"}"\n')
    process = digest_process(["--config", str(config), "status"])
    assert process.returncode == 0, process.stderr
    assert not state.exists()


def test_a_database_path_under_a_file_names_the_file(tmp_path, write_config):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    config = write_config(f'[profiles.me]\ninterests = ["x"]\n[storage]\npath = "{blocker / "db" / "digest.db"}"\n')
    process = digest_process(["--config", str(config), "run", "--no-fetch"])
    assert process.returncode == 1
    assert process.stderr.splitlines()[-1] == (
        f"Error: {blocker / 'db'}: cannot create the database directory: {blocker} is a file, not a folder")
