"""Servers that would hold the sender for good: a chat service asking it to wait a day, an SMTP or IMAP
server answering a byte at a time. Each costs one delivery attempt of bounded length, and the outbox tries again.

Real servers never do this (tests/test_matrix.py waits out a real Synapse's M_LIMIT_EXCEEDED), so these are
scripted on loopback: a homeserver (tests/loopback.py) that logs the bot in, lets it join and answers every
message with M_LIMIT_EXCEEDED and a ``retry_after_ms`` of a day; an SMTP server that sends its greeting a
byte every 0.1 s, each within the per-read timeout, and an IMAP server doing the same.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import threading
import time

import pytest
from loopback import LoopbackServer, Reply
from test_render import day_view

from digest import deliver
from digest.config import parse_settings
from digest.deliver import chat
from digest.storage import outbox
from digest.storage.db import iso, open_db

A_DAY_MS = 86_400_000


def _homeserver(request):
    answer = {"/login": {"access_token": "t0ken", "user_id": "@bot:hostile.test", "device_id": "D"},
              "/join/": {"room_id": "!room:hostile.test"},
              "/directory/room/": {"room_id": "!room:hostile.test", "servers": ["hostile.test"]}}
    for part, body in answer.items():
        if part in request.path:
            return Reply(200, json.dumps(body), content_type="application/json")
    if "/send/" in request.path:
        return Reply(429, json.dumps({"errcode": "M_LIMIT_EXCEEDED", "error": "Too Many Requests",
                                      "retry_after_ms": A_DAY_MS}), content_type="application/json")
    return Reply(200, "{}", content_type="application/json")


def queue_and_deliver(tmp_path, settings):
    """A day's digest queued for ``settings``' one profile, and one delivery attempt: (db, outcome, seconds)."""
    from test_deliver import queue

    db = open_db(tmp_path / "digest.db")
    queue(db, settings, day_view(dt.date(2026, 6, 24)))
    started = time.monotonic()
    [outcome] = deliver.deliver_due(db, settings)
    return db, outcome, time.monotonic() - started


def test_a_homeserver_asking_to_wait_a_day_gets_a_bounded_wait_and_the_outbox_tries_again_later(
        tmp_path, monkeypatch):
    # the bound itself (30 s) is what a user gets; the test only shortens it so it runs in seconds
    monkeypatch.setattr(chat, "LONGEST_WAIT", 0.5)
    with LoopbackServer() as server:
        server.routes["/"] = _homeserver
        settings = parse_settings(f'[chat.team]\nurl = "matrix://bot:passw0rd@127.0.0.1:{server.port}/'
                                  f'%23digest:hostile.test"\nattach = false\n'
                                  '[profiles.me]\ninterests = ["agents"]\nchat = ["team"]\n')
        db, outcome, took = queue_and_deliver(tmp_path, settings)
        sends = [r for r in server.requests if "/send/" in r.path]

    assert took < 15, took  # apprise's two tries, each waiting the bound, not the day asked for
    assert len(sends) == 2
    assert outcome.status == "pending"
    assert outcome.error == ("chat team: the homeserver is limiting the rate (M_LIMIT_EXCEEDED, asked to wait "
                             f"{A_DAY_MS} ms)")
    [row] = db.query("SELECT status, parts_sent, next_attempt_at FROM deliveries")
    assert (row["status"], row["parts_sent"]) == ("pending", 0)
    assert row["next_attempt_at"] > iso(outbox.utcnow())


@contextlib.contextmanager
def dripping_server(greeting: bytes):
    """A TCP server on loopback that sends ``greeting`` and then more, a byte every 0.1 s; yields its port."""
    stop = threading.Event()

    def drip(listener: socket.socket) -> None:
        connection, _ = listener.accept()
        with connection:
            for byte in greeting + b"x" * 10_000:
                if stop.is_set():
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:  # the client cut the conversation off
                    return
                time.sleep(0.1)

    with socket.create_server(("127.0.0.1", 0)) as listener:
        threading.Thread(target=drip, args=(listener,), daemon=True).start()
        try:
            yield listener.getsockname()[1]
        finally:
            stop.set()


def test_an_smtp_server_answering_a_byte_at_a_time_is_cut_off_and_the_digest_waits_in_the_outbox(tmp_path):
    with dripping_server(b"220 ") as port:
        settings = parse_settings(f'[email]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\ntimeout = 1\n'
                                  'from = "digest@example.org"\n'
                                  '[profiles.me]\ninterests = ["agents"]\nemail_to = ["me@example.org"]\n')
        db, outcome, took = queue_and_deliver(tmp_path, settings)

    assert took < 8, took  # four times email.timeout, not the 1,000 s the greeting would take
    assert outcome.status == "pending"
    assert outcome.error == f"127.0.0.1:{port}: the conversation took longer than 4 s; cut off"
    [row] = db.query("SELECT status, attempts, next_attempt_at FROM deliveries")
    assert (row["status"], row["attempts"]) == ("pending", 1) and row["next_attempt_at"]

    # The server mended: the waiting digest goes out once, whole, at its retry.
    from smtp_server import SMTPServer
    from test_deliver import LATER
    from test_render import announced

    with SMTPServer(users={"digest": "smtp-passw0rd"}) as smtp:
        mended = parse_settings(smtp.settings_toml("digest", "smtp-passw0rd")
                                + '[profiles.me]\ninterests = ["agents"]\nemail_to = ["me@example.org"]\n')
        assert [o.status for o in deliver.deliver_due(db, mended, now=outbox.utcnow() + LATER)] == ["sent"]
        assert deliver.deliver_due(db, mended, now=outbox.utcnow() + 2 * LATER) == []
        [received] = smtp.messages
    text = received.part("plain")
    assert all(paper.id in text for paper in announced(dt.date(2026, 6, 24)))
    assert [tuple(r) for r in db.execute("SELECT status, attempts FROM deliveries")] == [("sent", 2)]


def test_an_imap_server_answering_a_byte_at_a_time_is_cut_off_in_one_line(tmp_path):
    from digest.feedback import replies

    with dripping_server(b"* OK ") as port:
        settings = parse_settings(f'[storage]\npath = "{tmp_path / "digest.db"}"\n'
                                  f'[feedback.imap]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "starttls"\n'
                                  'user = "me"\npassword = "imap-passw0rd"\ntimeout = 1\n'
                                  '[profiles.me]\ninterests = ["agents"]\n')
        started = time.monotonic()
        with pytest.raises(replies.ImapError) as refused:
            replies.check_replies(settings)
        took = time.monotonic() - started

    assert took < 8, took
    assert str(refused.value) == f"IMAP 127.0.0.1:{port}: the conversation took longer than 4 s; cut off"
