"""Replies to the digest as feedback, end to end: a real run emails the digest over loopback SMTP, replies
land in a real IMAP server (Debian's dovecot, STARTTLS), and digest reads them: the reader's own lines
vote, quoted lines and anyone else's mail record nothing, and the reply is marked seen.
"""

from __future__ import annotations

import email.policy
import email.utils
from contextlib import closing
from email.message import EmailMessage

import pytest
from imap_server import DOVECOT, ImapServer
from neighbours import nearest_neighbour, ranks_now
from smtp_server import SMTPServer
from world import DAY, READER, SMTP_PASSWORD, SMTP_USER, make_world

from digest.feedback.replies import ImapError, check_replies, own_text, parse_votes
from digest.storage.db import open_db
from digest.storage.feedback import list_feedback

IMAP_USER, IMAP_PASSWORD = "digest", "imap-pass-0815"


def reply(to: EmailMessage, sender: str, body: str, *, html: str | None = None) -> EmailMessage:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = sender
    message["To"] = str(to["From"])
    message["Subject"] = f"Re: {to['Subject']}"
    message["Message-ID"] = email.utils.make_msgid(domain="example.org")
    message["In-Reply-To"] = str(to["Message-ID"])
    message["References"] = str(to["Message-ID"])
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


# -- what counts as a vote -------------------------------------------------------------------------

def test_a_vote_line_holds_only_votes_and_prose_records_nothing():
    text = ("+3 +7 -12\nlike 2601.01234, dislike arXiv:2602.00002v3\n-2603.00003\n"
            "It was -3 degrees here, +1 to the third paper\nlike this one\n")
    assert parse_votes(text) == [("+", "3"), ("+", "7"), ("-", "12"), ("+", "2601.01234"), ("-", "2602.00002"),
                                 ("-", "2603.00003")]


def test_only_the_replys_own_lines_count_not_what_it_quotes():
    original = EmailMessage()
    original["From"], original["Subject"], original["Message-ID"] = "d@example.org", "digest", "<digest.x@e>"
    plain = reply(original, READER, "+2\n\nOn Thu, 3 Dec 2026, digest <d@example.org> wrote:\n> +5\n+6\n")
    assert parse_votes(own_text(plain)) == [("+", "2")]
    outlook = reply(original, READER, "-4\n-----Original Message-----\n+5\n")
    assert parse_votes(own_text(outlook)) == [("-", "4")]
    html_only = EmailMessage()
    html_only.set_content("<div>+8</div><div class='gmail_quote'><blockquote>+9</blockquote></div>", subtype="html")
    assert parse_votes(own_text(html_only)) == [("+", "8")]


# -- the real mailbox ------------------------------------------------------------------------------

def imap_toml(imap: ImapServer) -> str:
    """The password by reference, from $IMAP_PASSWORD, as a user would keep it out of the file."""
    return (f'[feedback.imap]\nhost = "{imap.host}"\nport = {imap.port}\nsecurity = "starttls"\n'
            f'user = "{IMAP_USER}"\npassword_env = "IMAP_PASSWORD"\nca_file = "{imap.ca_file}"\n')


def ranked(db) -> dict[int, str]:
    return {rank: paper for paper, rank in db.execute("SELECT paper_id, rank FROM digest_items")}


pytestmark = pytest.mark.skipif(DOVECOT is None, reason="dovecot is not installed (apt-get install dovecot-imapd)")


@pytest.mark.slow
def test_a_readers_reply_votes_and_is_marked_seen_while_other_mail_records_nothing(template, tmp_path, http_server,
                                                                                  write_config, caplog):
    caplog.set_level("INFO")
    with SMTPServer(users={SMTP_USER: SMTP_PASSWORD}) as smtp, ImapServer(users={IMAP_USER: IMAP_PASSWORD}) as imap:
        world = make_world(template, tmp_path, http_server, smtp, write_config)
        settings = world.configure(environ={"IMAP_PASSWORD": IMAP_PASSWORD}, extra=imap_toml(imap))
        db, result = world.run()
        assert result.status == "sent", result.error
        digest = smtp.messages[0].message
        ranks = ranked(db)
        neighbour = nearest_neighbour(db, settings, ranks[40])
        before = ranks_now(db, settings)
        quoted = "\n".join("> " + line for line in smtp.messages[0].part("plain").splitlines())
        mine = reply(digest, f"Reader <{READER}>", f"+1 -2\nlike {ranks[40]}\nthanks, -3 is off topic\n\n"
                                                   f"On Fri, digest wrote:\n> +4\n{quoted}\n")
        stranger = reply(digest, "stranger@example.org", "+5\n")
        unrelated = EmailMessage()
        unrelated["From"], unrelated["Subject"] = READER, "lunch?"
        unrelated["Message-ID"] = "<lunch@example.org>"
        unrelated.set_content("+6\n")
        for message in (mine, stranger, unrelated):
            imap.append(IMAP_USER, message.as_bytes())

        recorded = check_replies(settings)
        again = check_replies(settings)
        flags = imap.flags(IMAP_USER)

    assert recorded == [f"reply from {READER} to the digest of {DAY} (me): like {ranks[1]}, dislike {ranks[2]}, "
                        f"like {ranks[40]}"]
    assert again == []
    assert "\\Seen" in flags[str(mine["Message-ID"])]
    assert "\\Seen" not in flags[str(stranger["Message-ID"])] and "\\Seen" not in flags["<lunch@example.org>"]
    with closing(open_db(world.db_path)) as db:
        votes = {(f["id"], f["feedback"], f["profile"]) for f in list_feedback(db)}
    assert votes == {(ranks[1], "like", "me"), (ranks[2], "dislike", "me"), (ranks[40], "like", "me")}
    with closing(open_db(world.db_path)) as db:
        after = ranks_now(db, settings)
    assert after[neighbour] < before[neighbour], "the liked paper's neighbour did not move up"
    assert recorded[0] in caplog.text
    assert IMAP_PASSWORD not in caplog.text


@pytest.mark.slow
def test_a_wrong_password_is_one_line_that_does_not_show_it(tmp_path):
    from digest.config import parse_settings

    with ImapServer(users={IMAP_USER: IMAP_PASSWORD}) as imap:
        settings = parse_settings(f'[storage]\npath = "{tmp_path / "d.db"}"\n' + imap_toml(imap) +
                                  '[profiles.me]\ninterests = ["x"]\n', environ={"IMAP_PASSWORD": "wrong-pass-99"})
        with pytest.raises(ImapError) as caught:
            check_replies(settings)
    message = str(caught.value)
    assert message.startswith(f"IMAP 127.0.0.1:{imap.port}: login as {IMAP_USER} refused: ")
    assert "\n" not in message and "wrong-pass-99" not in message


@pytest.mark.slow
def test_the_daemon_reads_replies_while_it_waits_and_logs_what_they_recorded(template, tmp_path, http_server,
                                                                             write_config):
    import signal

    from test_daemon import SUNDAY, DaemonProcess

    with SMTPServer(users={SMTP_USER: SMTP_PASSWORD}) as smtp, ImapServer(users={IMAP_USER: IMAP_PASSWORD}) as imap:
        world = make_world(template, tmp_path, http_server, smtp, write_config)
        settings = world.configure(environ={"IMAP_PASSWORD": IMAP_PASSWORD}, extra=imap_toml(imap))
        db, result = world.run()
        assert result.status == "sent", result.error
        ranks = ranked(db)
        imap.append(IMAP_USER, reply(smtp.messages[0].message, READER, "-3\n").as_bytes())
        process = DaemonProcess(settings.source, pretend=SUNDAY, env={"IMAP_PASSWORD": IMAP_PASSWORD})
        try:
            process.wait_for(rf"reply from {READER} to the digest of {DAY} \(me\): dislike {ranks[3]}$")
            process.signal(signal.SIGTERM)
            assert process.wait(10) == 0
        finally:
            process.stop()
        assert "\\Seen" in next(iter(imap.flags(IMAP_USER).values()))
    assert IMAP_PASSWORD not in process.output


# -- what an attacker tried (issue 24) -------------------------------------------------------------

def sent_world(template, tmp_path, http_server, write_config, smtp, imap):
    """A run that emailed the digest to READER, replies read from ``imap``: (settings, db, the email)."""
    world = make_world(template, tmp_path, http_server, smtp, write_config)
    settings = world.configure(environ={"IMAP_PASSWORD": IMAP_PASSWORD}, extra=imap_toml(imap))
    db, result = world.run()
    assert result.status == "sent", result.error
    return settings, db, smtp.messages[0].message


def naming(message: EmailMessage, in_reply_to: str, references: str) -> EmailMessage:
    for name, value in (("In-Reply-To", in_reply_to), ("References", references)):
        del message[name]
        message[name] = value
    return message


def raw_reply(digest: EmailMessage, content_type: str, body: str, label: str) -> bytes:
    sent = str(digest["Message-ID"])
    return (f"From: {READER}\r\nTo: {digest['From']}\r\nSubject: Re: digest\r\nMessage-ID: <{label}@example.org>\r\n"
            f"In-Reply-To: {sent}\r\nReferences: {sent}\r\nMIME-Version: 1.0\r\nContent-Type: {content_type}\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n").encode("latin-1")


def served_bytes(imap: ImapServer) -> list[int]:
    """What dovecot sent each session, from its "Logged out in=… out=…" lines."""
    import re

    return [int(n) for n in re.findall(r"Logged out in=\d+ out=(\d+)", imap.log())]


@pytest.mark.slow
def test_a_reply_naming_a_message_id_computed_without_the_secret_or_hiding_ours_among_500_records_nothing(
        template, tmp_path, http_server, write_config):
    from digest.deliver.email import message_id, sender_address
    from digest.storage.ledger import digest_by_id

    with SMTPServer(users={SMTP_USER: SMTP_PASSWORD}) as smtp, ImapServer(users={IMAP_USER: IMAP_PASSWORD}) as imap:
        settings, db, digest = sent_world(template, tmp_path, http_server, write_config, smtp, imap)
        ranks = ranked(db)
        sent = str(digest["Message-ID"])
        digest_id = db.execute("SELECT id FROM digests").fetchone()[0]
        guessed = message_id(digest_by_id(db, digest_id), READER, sender_address(settings.email))  # sha256, no key
        assert guessed != sent
        guesses = [f"<digest.{DAY}.me.{n:032x}@example.org>" for n in range(500)]
        forged = naming(reply(digest, READER, "+1\n"), guessed, guessed)
        buried = naming(reply(digest, READER, "+2\n"), guesses[0], " ".join(guesses[:250] + [sent] + guesses[250:]))
        genuine = reply(digest, READER, "+3\n")
        for message in (forged, buried, genuine):
            imap.append(IMAP_USER, message.as_bytes())
        recorded = check_replies(settings)
    assert recorded == [f"reply from {READER} to the digest of {DAY} (me): like {ranks[3]}"]
    with closing(open_db(settings.database_path())) as db:
        assert [f["id"] for f in list_feedback(db)] == [ranks[3]]


@pytest.mark.slow
def test_a_reply_in_an_unknown_charset_xhtml_or_only_a_comment_is_read_or_skipped_and_blocks_no_later_reply(
        template, tmp_path, http_server, write_config, caplog):
    xhtml = ('<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
             '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\n<html xmlns="http://www.w3.org/1999/xhtml">'
             '<body><p>+2</p></body></html>')
    with SMTPServer(users={SMTP_USER: SMTP_PASSWORD}) as smtp, ImapServer(users={IMAP_USER: IMAP_PASSWORD}) as imap:
        settings, db, digest = sent_world(template, tmp_path, http_server, write_config, smtp, imap)
        ranks = ranked(db)
        imap.append(IMAP_USER, raw_reply(digest, 'text/plain; charset="x-no-such-charset"', "+1\r\n\xe9t\xe9", "cs"))
        imap.append(IMAP_USER, raw_reply(digest, "text/html; charset=utf-8", xhtml, "xhtml"))
        imap.append(IMAP_USER, raw_reply(digest, "text/html; charset=utf-8", "<!-- only a comment -->", "comment"))
        imap.append(IMAP_USER, reply(digest, READER, "-4\n").as_bytes())
        recorded = check_replies(settings)
        again = check_replies(settings)
        flags = imap.flags(IMAP_USER)
    line = f"reply from {READER} to the digest of {DAY} (me): "
    assert recorded == [line + f"like {ranks[1]}", line + f"like {ranks[2]}", line + "no votes",
                        line + f"dislike {ranks[4]}"]
    assert again == []
    assert all("\\Seen" in f for f in flags.values())


@pytest.mark.slow
def test_a_20_mb_mail_from_a_stranger_naming_a_digest_is_marked_and_never_downloaded(
        template, tmp_path, http_server, write_config, caplog):
    with SMTPServer(users={SMTP_USER: SMTP_PASSWORD}) as smtp, ImapServer(users={IMAP_USER: IMAP_PASSWORD}) as imap:
        settings, db, digest = sent_world(template, tmp_path, http_server, write_config, smtp, imap)
        huge = reply(digest, "stranger@example.org", "+5\n" + ("x" * 76 + "\n") * (20 * 1024 * 1024 // 77))
        too_big = reply(digest, READER, "+6\n" + ("y" * 76 + "\n") * (2 * 1024 * 1024 // 77))
        for message in (huge, too_big):
            imap.append(IMAP_USER, message.as_bytes())
        before = len(served_bytes(imap))
        first, second = check_replies(settings), check_replies(settings)
        flags = imap.flags(IMAP_USER)
        sessions = served_bytes(imap)[before:]
    assert first == second == []
    assert flags[str(huge["Message-ID"])] == flags[str(too_big["Message-ID"])] == {"$DigestRead"}  # still unread
    assert len(sessions) >= 2 and max(sessions) < 100_000, sessions
    assert caplog.text.count("more than 1048576; skipped") == 1


def test_an_imap_server_that_echoes_the_password_in_its_refusal_has_it_redacted(tmp_path):
    """A scripted IMAP server over TLS on loopback (dovecot never echoes a password; a broken server might)."""
    import socket
    import ssl
    import threading

    import trustme

    from digest.config import parse_settings

    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        with listener, context.wrap_socket(listener.accept()[0], server_side=True) as conn:
            lines = conn.makefile("rwb")
            lines.write(b"* OK ready\r\n")
            lines.flush()
            while line := lines.readline():
                tag, command = line.split()[:2]
                if command.upper() == b"CAPABILITY":
                    lines.write(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
                else:
                    lines.write(tag + b" NO [AUTHENTICATIONFAILED] no such login: " + line.strip() + b"\r\n")
                lines.flush()

    threading.Thread(target=serve, daemon=True).start()
    settings = parse_settings(
        f'[storage]\npath = "{tmp_path / "d.db"}"\n[feedback.imap]\nhost = "127.0.0.1"\n'
        f'port = {listener.getsockname()[1]}\nsecurity = "ssl"\nuser = "{IMAP_USER}"\npassword_env = "IMAP_PASSWORD"\n'
        f'ca_file = "{ca_file}"\n[profiles.me]\ninterests = ["x"]\n', environ={"IMAP_PASSWORD": "echoed-pass-77"})
    with pytest.raises(ImapError) as caught:
        check_replies(settings)
    assert "no such login" in str(caught.value) and "echoed-pass-77" not in str(caught.value)
