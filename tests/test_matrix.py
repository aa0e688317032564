"""Issue 26: a digest as a Matrix reader gets it. A real Synapse on loopback (tests/matrix_server.py), the
bot posting through apprise's matrix:// and matrixs:// from the outbox (deliver_due: claim -> send_chat),
and the reader reading the room back through the client-server API: the top section as a formatted
message, the complete digest as an HTML file or over consecutive messages, every paper of a real
495-paper day in order, no event over Matrix's 64 KiB, a retry resuming where it stopped, and the failures
told apart (a wrong password or room: for good; the homeserver down: retried; M_LIMIT_EXCEEDED: waited out).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import socket
import threading

import pytest
from matrix_server import RC_PER_SECOND, SERVER_NAME, MatrixServer, synapse_missing
from smtp_server import SMTPServer
from test_deliver import LATER, queue
from test_render import BIG_DAY, announced, day_view, html_ids, tagged_ids

from digest import deliver, notices
from digest.config import parse_settings
from digest.storage import outbox

pytestmark = pytest.mark.skipif(synapse_missing() is not None, reason=synapse_missing() or "")

BOT, BOT_PASSWORD = "bot", "bot-passw0rd-4711"
SLOW_BOT = "slowbot"  # meets rc_message: M_LIMIT_EXCEEDED after a burst
READER = "reader"
MID_DAY = dt.date(2026, 6, 23)  # 255 papers: four messages without the file
_rooms = itertools.count(1)


@pytest.fixture(scope="session")
def synapse():
    with MatrixServer() as server:
        server.reader = server.register(READER, "reader-passw0rd")
        server.register(BOT, BOT_PASSWORD)
        server.register(SLOW_BOT, BOT_PASSWORD, throttled=True)
        yield server


@pytest.fixture
def room(synapse):
    """A fresh room of the reader's, the bots invited: (room id, its alias)."""
    alias = f"digest-{next(_rooms)}"
    room_id = synapse.create_room(synapse.reader, invite=[synapse.user_id(BOT), synapse.user_id(SLOW_BOT)],
                                  alias=alias)
    return room_id, f"#{alias}:{SERVER_NAME}"


def later() -> dt.datetime:
    return outbox.utcnow() + LATER


def url(synapse, room: str, *, user=BOT, password=BOT_PASSWORD, port=None, scheme="matrix") -> str:
    return f"{scheme}://{user}:{password}@127.0.0.1:{port or synapse.port}/{room.replace('#', '%23')}"


def settings_for(matrix_url: str, *, attach=True, smtp=None):
    body = smtp.settings_toml("digest", "smtp-passw0rd") if smtp else ""
    body += f'[chat.team]\nurl = "{matrix_url}"\nattach = {str(attach).lower()}\n'
    body += '[profiles.me]\ninterests = ["agents"]\nchat = ["team"]\n'
    body += 'email_to = ["me@example.org"]\n' if smtp else ""
    return parse_settings(body)


def parts_sent(db) -> int:
    return db.execute("SELECT parts_sent FROM deliveries").fetchone()[0]


def texts(events: list[dict]) -> list[dict]:
    return [e["content"] for e in events if e["content"]["msgtype"] == "m.text"]


def assert_whole_events(synapse, room_id: str, events: list[dict]) -> None:
    """Every event as the server stores it is under Matrix's 65,536 bytes, and none was cut."""
    for event in events:
        assert synapse.event_size(synapse.reader, room_id, event["event_id"]) < 65536


# -- what the reader gets ----------------------------------------------------------------------------------

def test_a_495_paper_day_reaches_the_reader_as_the_top_section_and_the_whole_digest_as_an_html_file(
        synapse, room, db):
    room_id, alias = room
    settings = settings_for(url(synapse, alias))
    queue(db, settings, day_view(BIG_DAY))
    assert [o.status for o in deliver.deliver_due(db, settings)] == ["sent"]

    events = synapse.messages(synapse.reader, room_id)
    assert [e["sender"] for e in events] == [synapse.user_id(BOT)] * 2
    file, head = (e["content"] for e in events)
    assert (file["msgtype"], file["body"], file["info"]["mimetype"]) == ("m.file", "digest-me-2026-06-22.html",
                                                                          "text/html")
    html = synapse.download(synapse.reader, file["url"]).decode()
    assert html_ids(html) == [p.id for p in announced(BIG_DAY)]  # every paper, in the digest's order
    assert head["format"] == "org.matrix.custom.html"
    assert "<h2>Top 15" in head["formatted_body"] and "<a href=" in head["formatted_body"]
    assert "All 495 papers, with every summary, are in the attached digest-me-2026-06-22.html" in head["body"]
    assert tagged_ids(head["body"]) == [p.id for p in announced(BIG_DAY)][:15]
    assert_whole_events(synapse, room_id, events)


def test_without_the_file_every_paper_arrives_in_order_over_consecutive_formatted_messages(synapse, room, db):
    room_id, _ = room
    settings = settings_for(url(synapse, room_id) + "?hsreq=no", attach=False)  # a room id, as Synapse makes them
    queue(db, settings, day_view(BIG_DAY))
    assert [o.status for o in deliver.deliver_due(db, settings)] == ["sent"]

    events = synapse.messages(synapse.reader, room_id)
    messages = texts(events)
    assert len(messages) == len(events) == parts_sent(db) > 4  # 120 KB of Markdown, at most 21,600 bytes a message
    assert all(m["format"] == "org.matrix.custom.html" for m in messages)
    assert tagged_ids("\n".join(m["body"] for m in messages)) == [p.id for p in announced(BIG_DAY)]
    assert tagged_ids("\n".join(m["formatted_body"] for m in messages)) == [p.id for p in announced(BIG_DAY)]
    assert_whole_events(synapse, room_id, events)


def test_matrixs_with_the_test_ca_in_requests_ca_bundle_delivers_and_without_it_fails_for_good(
        synapse, room, db, monkeypatch):
    room_id, alias = room
    settings = settings_for(url(synapse, alias, port=synapse.tls_port, scheme="matrixs"))
    queue(db, settings, day_view(dt.date(2026, 6, 24)))
    [outcome] = deliver.deliver_due(db, settings)
    assert outcome.status == "failed"
    assert outcome.error == ("chat team: 127.0.0.1: TLS certificate not trusted; for a private CA, set "
                             "REQUESTS_CA_BUNDLE in digest's environment")

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(synapse.ca_file))
    outbox.requeue(db, [1])
    assert [o.status for o in deliver.deliver_due(db, settings)] == ["sent"]
    file, head = (e["content"] for e in synapse.messages(synapse.reader, room_id))
    assert html_ids(synapse.download(synapse.reader, file["url"]).decode()) == [
        p.id for p in announced(dt.date(2026, 6, 24))]


# -- failures told apart -----------------------------------------------------------------------------------

class Gate:
    """A TCP relay in front of Synapse that lets ``allow`` connections through and then drops every new
    one, as a homeserver that goes down mid-delivery does (apprise opens one connection per request)."""

    def __init__(self, port: int, allow: int):
        self.allow, self.upstream = allow, port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.allow <= 0:
                client.close()
                continue
            self.allow -= 1
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:  # Synapse stopped already (apprise logs out when its plugin is collected)
                client.close()
                continue
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


def test_the_homeserver_going_down_mid_delivery_is_retried_and_resumes_where_it_stopped_with_no_part_twice(
        synapse, room, db):
    room_id, alias = room
    gate = Gate(synapse.port, allow=5)  # the room lookup, login, join, two messages; then it is down
    try:
        settings = settings_for(url(synapse, alias, port=gate.port), attach=False)
        queue(db, settings, day_view(BIG_DAY))
        [outcome] = deliver.deliver_due(db, settings)
        assert outcome.status == "pending"
        assert outcome.error == (f"chat team: A Connection error occurred while registering with Matrix server. "
                                 f"Could not send notification Matrix room {alias}.")
        assert parts_sent(db) == 2
        assert len(synapse.messages(synapse.reader, room_id)) == 2

        gate.allow = 100  # back up
        assert [o.status for o in deliver.deliver_due(db, settings, now=later())] == ["sent"]
    finally:
        gate.close()
    messages = texts(synapse.messages(synapse.reader, room_id))
    assert len(messages) == parts_sent(db) and len({m["body"] for m in messages}) == len(messages)  # none twice
    assert tagged_ids("\n".join(m["body"] for m in messages)) == [p.id for p in announced(BIG_DAY)]


def test_the_homeserver_down_from_the_start_is_retried(synapse, room, db):
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    settings = settings_for(url(synapse, room[1], port=port))
    queue(db, settings, day_view(dt.date(2026, 6, 24)))
    [outcome] = deliver.deliver_due(db, settings)
    assert outcome.status == "pending" and outcome.next_attempt_at
    assert outcome.error == "chat team: 127.0.0.1: the homeserver is not reachable: Connection refused"


def test_a_wrong_password_fails_for_good_in_one_line_and_a_notice_goes_by_email(synapse, room, db):
    with SMTPServer(users={"digest": "smtp-passw0rd"}) as smtp:
        settings = settings_for(url(synapse, room[1], password="wrong-passw0rd"), smtp=smtp)
        queue(db, settings, day_view(dt.date(2026, 6, 24)))
        outcomes = {o.channel: o for o in deliver.deliver_due(db, settings)}
        assert outcomes["email"].status == "sent"
        assert outcomes["chat"].status == "failed"
        assert outcomes["chat"].error == ("chat team: the homeserver refused the login as bot (HTTP 403): check the "
                                          "user and password")
        assert deliver.deliver_due(db, settings, now=later()) == []  # not retried
        notices.speak_up(db, settings)
        [notice] = [m for m in smtp.messages if m.message["Subject"].startswith("digest: ")]
    assert "could not be sent by chat to team: chat team: the homeserver refused the login" in notice.message[
        "Subject"] + notice.part("plain")
    assert "wrong-passw0rd" not in json.dumps(outbox.not_sent(db)) + notice.part("plain")
    assert synapse.messages(synapse.reader, room[0]) == []


@pytest.mark.parametrize("missing", [f"#nobody-reads-this:{SERVER_NAME}", f"!nosuchroom:{SERVER_NAME}"])
def test_an_unknown_room_fails_for_good_naming_it_and_no_room_is_created(synapse, db, missing):
    settings = settings_for(url(synapse, missing))
    queue(db, settings, day_view(dt.date(2026, 6, 24)))
    [outcome] = deliver.deliver_due(db, settings)
    assert outcome.status == "failed"
    if missing.startswith("#"):
        assert outcome.error == (f"chat team: no Matrix room {missing} on 127.0.0.1 (apprise would create it, "
                                 f"and nobody would read it)")
    else:
        assert outcome.error == ("chat team: Failed to handshake with Matrix server: Page not found., error=404. "
                                 "Could not join Matrix room ********:digest.test.")  # a room id may be a secret
    import requests
    lookup = requests.get(f"{synapse.base}/_matrix/client/v3/directory/room/%23nobody-reads-this%3A{SERVER_NAME}")
    assert lookup.status_code == 404


def test_m_limit_exceeded_is_waited_out_as_retry_after_ms_says_and_every_part_goes_once(synapse, room, db, caplog):
    room_id, alias = room
    settings = settings_for(url(synapse, alias, user=SLOW_BOT), attach=False)
    queue(db, settings, day_view(MID_DAY))
    assert [o.status for o in deliver.deliver_due(db, settings)] == ["sent"]

    events = synapse.messages(synapse.reader, room_id)
    assert len(events) == parts_sent(db) > 2  # more than rc_message's burst
    assert tagged_ids("\n".join(m["body"] for m in texts(events))) == [p.id for p in announced(MID_DAY)]
    throttled = [r.getMessage() for r in caplog.records if "throttle back" in r.getMessage()]
    assert throttled, "Synapse's rc_message did not limit the slow bot"
    # after the burst, one message per 1/RC_PER_SECOND seconds, as Synapse's retry_after_ms told apprise
    gaps = [b["origin_server_ts"] - a["origin_server_ts"] for a, b in zip(events[1:], events[2:])]
    assert all(gap >= 1000 / RC_PER_SECOND * 0.8 for gap in gaps), gaps
    assert '"M_LIMIT_EXCEEDED"' in synapse.log() or " 429 " in synapse.log()


# -- digest check ------------------------------------------------------------------------------------------

def test_check_logs_in_and_asks_whoami_and_posts_nothing(synapse, room):
    room_id, alias = room
    lines = {}
    for label, matrix_url in (("right", url(synapse, alias)), ("wrong", url(synapse, alias, password="nope")),
                              ("no room", url(synapse, f"#gone:{SERVER_NAME}"))):
        [(channel, ok, detail)] = deliver.check_channels(settings_for(matrix_url))
        lines[label] = (ok, detail)
    base = f"http://127.0.0.1:{synapse.port}"
    assert lines == {
        "right": (True, f"{base}: logged in as @bot:{SERVER_NAME}, posting to {alias} (nothing sent)"),
        "wrong": (False, f"{base}: login as bot refused: HTTP 403 M_FORBIDDEN"),
        "no room": (False, f"{base}: logged in as @bot:{SERVER_NAME}, but no room #gone:{SERVER_NAME} (apprise "
                           f"would create it, and nobody would read it)"),
    }
    assert synapse.messages(synapse.reader, room_id) == []
