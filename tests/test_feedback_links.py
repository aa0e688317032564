"""Like and dislike links in the digest, end to end: a real run sends the email over loopback SMTP, headless
Chromium (driven by Playwright) opens the email's HTML, follows "more like this", and presses the button on
the page that waitress serves; the like is then in the feedback table. A prefetch (GET only), a tampered
token and an expired one record nothing and get a 403 where the token is bad.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import stat
from contextlib import closing

import pytest
import requests
from feeds import serve_feeds
from neighbours import nearest_neighbour, ranks_now
from smtp_server import SMTPServer
from loopback import free_port
from world import DAY, SMTP_PASSWORD, SMTP_USER, World, copy_database, day_feed

from digest import render
from digest.config import parse_settings, state_dir
from digest.feedback.links import BadLink, Vote, link_maker, make_token, read_token, signing_key
from digest.feedback.web import FeedbackServer
from digest.storage.db import open_db
from digest.storage.feedback import list_feedback

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
KEY = "k" * 32


def feedback_toml(port: int, key: str | None = KEY) -> str:
    key_line = f'key = "{key}"\n' if key else ""
    return f'[feedback]\nlisten = "127.0.0.1:{port}"\npublic_url = "http://127.0.0.1:{port}"\n{key_line}'


def settings_with(tmp_path, port: int, key: str | None = KEY):
    body = f'[storage]\npath = "{tmp_path / "digest.db"}"\n' + feedback_toml(port, key) + \
        '[profiles.me]\ninterests = ["speech"]\n'
    return parse_settings(body, environ={})


def token(settings, paper="2606.12345", action="like", days=30, key=None) -> str:
    expires = int((dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days)).timestamp())
    return make_token(key or signing_key(settings), Vote("me", paper, action, expires))


@pytest.fixture
def served(tmp_path):
    """A feedback server on loopback over an empty database: (settings, base URL)."""
    port = free_port()
    settings = settings_with(tmp_path, port)
    open_db(settings.database_path()).conn.close()
    server = FeedbackServer(lambda: settings).start()
    yield settings, f"http://127.0.0.1:{port}"
    server.close()


def feedback(settings) -> list[dict]:
    with closing(open_db(settings.database_path())) as db:
        return list_feedback(db)


# -- the token -------------------------------------------------------------------------------------

def test_a_token_carries_its_vote_and_any_change_to_it_is_refused(tmp_path):
    settings = settings_with(tmp_path, 8425)
    key = signing_key(settings)
    good = token(settings)
    assert read_token(key, good) == Vote("me", "2606.12345", "like", read_token(key, good).expires)
    payload, signature = good.split(".")
    forged_payload = make_token(key, Vote("me", "2606.12345", "dislike", 9999999999)).split(".")[0]
    for bad in (f"{forged_payload}.{signature}", f"{payload}.{signature[:-2]}AA", f"{payload}.{signature}x",
                f"{payload}!.{signature}", "", "a.b.c", token(settings, key=b"another key")):
        with pytest.raises(BadLink):
            read_token(key, bad)
    with pytest.raises(BadLink, match="expired"):
        read_token(key, token(settings, days=-1))


def test_without_a_configured_key_one_is_made_once_in_the_state_directory_for_the_owner_only(tmp_path):
    settings = settings_with(tmp_path, 8425, key=None)
    first = signing_key(settings)
    path = state_dir() / "feedback.key"
    assert len(first) == 32 and signing_key(settings) == first
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_links_are_off_by_default_and_on_with_listen_and_public_url(tmp_path):
    from test_render import day_view, settings_for

    view = day_view(dt.date(2026, 6, 23))
    plain = render.render_digest(view, settings_for())
    assert "/feedback/" not in plain.html + plain.markdown + plain.text
    assert link_maker(settings_for('[feedback]\nlisten = "127.0.0.1:8425"\n'), "me") is None  # nowhere public
    linked = render.render_digest(view, settings_for(feedback_toml(8425)))
    assert linked.html.count("http://127.0.0.1:8425/feedback/") == 2 * len(view.items)
    assert linked.markdown.count("http://127.0.0.1:8425/feedback/") == 2 * len(view.items)
    assert "      More like this:\nhttp://127.0.0.1:8425/feedback/" in linked.text  # a URL on a line of its own


# -- the endpoint ----------------------------------------------------------------------------------

def test_a_get_only_asks_and_the_post_records_once_and_undo_forgets(served):
    settings, base = served
    url = f"{base}/feedback/{token(settings)}"
    for _ in range(3):  # a mail scanner prefetching the link, and a person opening it
        page = requests.get(url, timeout=10)
        assert page.status_code == 200 and 'method="post"' in page.text
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert feedback(settings) == []
    first = requests.post(url, data={"do": "record"}, timeout=10)
    assert "Noted" in first.text
    again = requests.post(url, data={"do": "record"}, timeout=10)
    assert "Already noted" in again.text
    assert [(f["id"], f["feedback"], f["profile"]) for f in feedback(settings)] == [("2606.12345", "like", "me")]
    assert "Already noted" in requests.get(url, timeout=10).text
    assert "Undone" in requests.post(url, data={"do": "undo"}, timeout=10).text
    assert feedback(settings) == []


def test_forged_altered_and_expired_links_get_a_plain_403_and_record_nothing(served):
    settings, base = served
    good = token(settings)
    payload, signature = good.split(".")
    dislike_payload = token(settings, action="dislike").split(".")[0]
    for bad in (f"{dislike_payload}.{signature}", f"{payload}.{'A' * len(signature)}", "nonsense",
                token(settings, days=-1), token(settings, key=b"someone else's key")):
        for method in ("get", "post"):
            reply = requests.request(method, f"{base}/feedback/{bad}", data={"do": "record"}, timeout=10)
            assert reply.status_code == 403
            assert "not valid" in reply.text and "form" not in reply.text
    assert requests.get(f"{base}/elsewhere", timeout=10).status_code == 404
    assert feedback(settings) == []


def test_the_signing_key_reaches_neither_the_database_nor_the_log(served, caplog):
    settings, base = served
    caplog.set_level("DEBUG")
    requests.post(f"{base}/feedback/{token(settings)}", data={"do": "record"}, timeout=10)
    requests.get(f"{base}/feedback/nonsense", timeout=10)
    assert feedback(settings)
    assert KEY.encode() not in settings.database_path().read_bytes()
    assert KEY not in caplog.text


# -- the real thing: the email in Chromium --------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_more_like_this_in_the_received_email_records_a_like_from_chromium(template, tmp_path, http_server,
                                                                          write_config):
    from playwright.sync_api import sync_playwright

    port = free_port()
    with SMTPServer(users={SMTP_USER: SMTP_PASSWORD}) as smtp:
        serve_feeds(http_server, {DAY: day_feed()}, day=DAY)
        world = World(tmp_path, http_server.url, smtp, write_config)
        copy_database(template, world.db_path)
        world.configure(extra=feedback_toml(port, key=None))
        db, result = world.run()
        assert result.status == "sent", result.error
        mail = smtp.messages[0]
        top = db.execute("SELECT paper_id FROM digest_items WHERE rank = 1").fetchone()[0]
        assert f'id="arxiv-{top}"' in mail.part("html") and "More like this</a>" in mail.part("html")
        # A paper down the list: its buttons are in the complete digest, attached when the body leaves them out.
        email_html = mail.attachments().get(f"digest-me-{DAY}.html", mail.part("html"))
        liked = db.execute("SELECT paper_id FROM digest_items WHERE rank = 40").fetchone()[0]
        neighbour = nearest_neighbour(db, world.settings, liked)
        before = ranks_now(db, world.settings)
    page_file = tmp_path / "email.html"
    page_file.write_text(email_html, encoding="utf-8")
    server = FeedbackServer(lambda: world.settings).start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(page_file.as_uri())
            card = page.locator(f"[id='arxiv-{liked}']")  # the 40th paper's line: a neighbour has room to rise
            link = card.get_by_role("link", name="More like this")
            box = link.bounding_box()
            assert box["width"] >= 44 and box["height"] >= 44, f"not a tap target: {box}"
            link.click()
            page.wait_for_url(f"http://127.0.0.1:{port}/feedback/*")
            assert page.get_by_role("button", name="More like this").is_visible()
            assert feedback(world.settings) == [], "opening the link alone recorded a vote"
            page.get_by_role("button", name="More like this").click()
            page.wait_for_load_state()
            assert "Noted" in page.content()
            browser.close()
    finally:
        server.close()
    likes = feedback(world.settings)
    assert [(f["id"], f["feedback"], f["profile"]) for f in likes] == [(liked, "like", "me")]
    after = ranks_now(db, world.settings)
    assert after[neighbour] < before[neighbour], "the like did not move the liked paper's neighbour up"


# -- served by `digest daemon` ---------------------------------------------------------------------

@pytest.mark.slow
def test_the_daemon_serves_the_links_while_it_runs_and_logs_what_it_recorded(tmp_path, write_config):
    import signal

    from test_daemon import SUNDAY, DaemonProcess, idle_config

    port = free_port()
    config = idle_config(tmp_path, write_config, extra=feedback_toml(port))
    settings = parse_settings(config.read_text(), environ={})
    process = DaemonProcess(config, pretend=SUNDAY)
    try:
        process.wait_for(rf"feedback links: listening on 127.0.0.1:{port}")
        url = f"http://127.0.0.1:{port}/feedback/{token(settings, paper='2606.00001', action='dislike')}"
        assert 'method="post"' in requests.get(url, timeout=10).text, process.output
        assert "Noted" in requests.post(url, data={"do": "record"}, timeout=10).text
        process.wait_for(r"feedback link: dislike 2606.00001 for profile me")
        process.signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        process.stop()
    assert [(f["id"], f["feedback"]) for f in feedback(settings)] == [("2606.00001", "dislike")]
    assert KEY not in "\n".join(process.lines)
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=2)


# -- a key that cannot be trusted, and a server under attack (issue 24) -----------------------------

def served_by(settings):
    open_db(settings.database_path()).conn.close()
    return FeedbackServer(lambda: settings).start()


def key_errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and "feedback links" in r.getMessage()]


@pytest.mark.parametrize("problem", ["empty", "short", "junk", "a folder", "0644"])
def test_a_key_that_is_empty_short_junk_not_a_file_or_readable_by_others_is_refused_in_one_line_and_no_link_is_made(
        problem, tmp_path, caplog):
    from test_render import day_view, settings_for

    path = state_dir() / "feedback.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    good = os.urandom(32).hex() + "\n"
    if problem == "a folder":
        path.mkdir()
    else:
        path.write_text({"empty": "", "short": "abcd\n", "junk": "\x00\xffnot hex at all", "0644": good}[problem])
        os.chmod(path, 0o644 if problem == "0644" else 0o600)
    settings = settings_for(feedback_toml(8425, key=None))
    assert signing_key(settings) is None
    linked = render.render_digest(day_view(dt.date(2026, 6, 23)), settings)  # the digest still goes out
    assert "/feedback/" not in linked.html + linked.text + linked.markdown
    assert len(key_errors(caplog)) == 1, "one line, not one per paper or per profile"
    assert str(path) in key_errors(caplog)[0] and good.strip() not in caplog.text


def test_a_disk_that_fills_while_the_key_is_made_leaves_no_key_and_the_next_start_makes_a_whole_one(tmp_path):
    import subprocess
    import sys

    # A file size limit of 0 bytes is a full disk to this process alone: the key's write fails with EFBIG.
    make = ("import resource, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0)); "
            "from digest.config import parse_settings; from digest.feedback.links import signing_key; "
            "print(signing_key(parse_settings('[profiles.me]\\ninterests = [\"x\"]\\n', environ={})))")
    done = subprocess.run([sys.executable, "-c", make], capture_output=True, text=True, timeout=60, env=os.environ)
    assert done.stdout.strip() == "None", done.stderr
    assert "cannot make the key" in done.stderr
    assert list(state_dir().iterdir()) == [], "a partial key (or its temporary file) was left behind"
    settings = settings_with(tmp_path, 8425, key=None)
    assert len(signing_key(settings)) == 32


def test_with_an_empty_key_file_a_vote_signed_with_the_empty_key_records_nothing(tmp_path):
    port = free_port()
    settings = settings_with(tmp_path, port, key=None)
    path = state_dir() / "feedback.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    expires = int((dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).timestamp())
    server = served_by(settings)
    try:
        for profile in ("me", ""):
            forged = make_token(b"", Vote(profile, "2606.12345", "like", expires))
            answer = requests.post(f"http://127.0.0.1:{port}/feedback/{forged}", data={"do": "record"}, timeout=10)
            assert answer.status_code == 503 and "nothing was recorded" in answer.text
    finally:
        server.close()
    assert feedback(settings) == []


def test_a_signed_link_for_every_profile_or_for_a_profile_no_longer_configured_records_nothing(served):
    settings, base = served
    expires = int((dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).timestamp())
    for profile in ("", "gone"):
        signed = make_token(signing_key(settings), Vote(profile, "2606.12345", "like", expires))
        for method in ("get", "post"):
            answer = requests.request(method, f"{base}/feedback/{signed}", data={"do": "record"}, timeout=10)
            assert answer.status_code == 403
    assert feedback(settings) == []


def test_a_400_mb_post_is_refused_before_its_body_is_read(served):
    settings, base = served
    port = int(base.rpartition(":")[2])
    url = f"/feedback/{token(settings)}"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST {url} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     f"Content-Length: {400 * 1024 * 1024}\r\n\r\n".encode() + b"do=record&" + b"x" * 65536)
        answer = sock.recv(200)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    chunked = requests.post(f"{base}{url}", data=(b"x" * 8192 for _ in range(16)), timeout=10)  # 128 KiB, no length
    assert chunked.status_code == 413
    assert feedback(settings) == []


def test_120_idle_half_sent_connections_do_not_stop_the_server_answering_others(served):
    settings, base = served
    port = int(base.rpartition(":")[2])
    idle = []
    try:
        for _ in range(120):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"POST /feedback/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
            idle.append(sock)
        assert requests.get(f"{base}/feedback/{token(settings)}", timeout=5).status_code == 200
    finally:
        for sock in idle:
            sock.close()


def test_a_connection_that_goes_quiet_is_closed(tmp_path, monkeypatch):
    from digest.feedback import web

    monkeypatch.setattr(web, "IDLE_SECONDS", 1)  # the default is 15 s; the same path, sooner
    monkeypatch.setattr(web, "CLEANUP_SECONDS", 1)
    port = free_port()
    server = served_by(settings_with(tmp_path, port))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /feedback/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
            assert sock.recv(100) == b"", "the server should close a connection idle past IDLE_SECONDS"
    finally:
        server.close()
