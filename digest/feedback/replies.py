"""Replies to the digest, read over IMAP: a line such as ``+3 +7 -12`` or ``like 2601.01234`` is a vote.

A message counts when it answers one of digest's own emails (its In-Reply-To or References names the
Message-ID that email went out with, which carries an HMAC only digest can make and recompute from the
outbox) and comes from the address that email went to. Only the reply's own lines count: quoted lines
(``>``) and everything after an attribution ("On ... wrote:"), a forwarded original or a signature are
skipped, and a line votes only when every word on it is a vote, so prose ("-3 degrees here, +1 to this
paper") records nothing. digest answers nothing; it marks the reply seen and logs what it recorded.

No message can block the others: the server filters by header, then digest reads only the headers and size
of what it found. Mail that is not a reader's reply (a stranger's, one naming a digest it was never sent),
one larger than MAX_REPLY_BYTES, and one that cannot be read (an unknown charset, broken HTML) is marked
with the keyword PROCESSED (or seen, where the server keeps no keywords), logged once and never fetched
again. Mail that names none of digest's Message-IDs is not touched.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import imaplib
import logging
import re
import ssl
from contextlib import closing, contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Iterator

from .. import cutoff
from ..arxiv.ids import InvalidArxivId, normalize_id
from ..config import ImapSettings, Settings
from ..deliver.email import message_id, sender_address
from ..secrets import redact
from ..storage.db import open_db
from ..storage.feedback import set_feedback
from ..storage.ledger import digest_by_id, paper_at_rank
from ..storage.outbox import sent_emails
from ..text import one_line
from .links import message_key

log = logging.getLogger(__name__)

# Our Message-IDs all start so (deliver/email.py): the server filters with it, so other mail is never fetched.
OUR_MESSAGE_IDS = "<digest."
PROCESSED = "$DigestRead"  # an IMAP keyword: mail digest looked at and will not look at again
MAX_REPLY_BYTES = 1024 * 1024  # a reply quoting the whole HTML digest is ~300 KB
MAX_NAMED_IDS = 20  # Message-IDs of a reply compared with ours: a References header may list hundreds
_HEADERS = "FROM IN-REPLY-TO REFERENCES"
_RANK = re.compile(r"([+-])(\d{1,5})")
_SIGNED_ID = re.compile(r"([+-])(\S+)")
_END_OF_OWN_TEXT = re.compile(r"^(-- ?|-+ ?original message ?-+|_{8,}|.*\bwrote:|begin forwarded message:?)$", re.I)


class ImapError(Exception):
    """The mailbox cannot be read now; one line, never the password."""


@dataclass(frozen=True)
class Sent:
    """One email digest went out as: which digest, to whom."""

    digest_id: int
    profile: str
    day: str
    recipient: str


def check_replies(settings: Settings) -> list[str]:
    """Read new replies once and record their votes. Returns what was recorded, one line per reply."""
    key = message_key(settings)
    if key is None:  # the key was refused, logged once: no reply can be matched to a digest
        return []
    with closing(open_db(settings.database_path())) as db:
        ours = _sent_by_message_id(db, settings, key)
        recorded = []
        with mailbox(settings.feedback.imap) as imap:
            mark = PROCESSED if _keeps_keywords(imap) else r"\Seen"
            for uid, header, size in _candidates(imap):
                line = _read_reply(imap, db, settings, ours, uid, header, size)
                imap.uid("STORE", uid, "+FLAGS.SILENT", rf"(\Seen {mark})" if line else f"({mark})")
                if line:
                    log.info("%s", line)
                    recorded.append(line)
    return recorded


def _sent_by_message_id(db, settings: Settings, key: bytes) -> dict[str, Sent]:
    sender = sender_address(settings.email)
    found = {}
    for row in sent_emails(db):
        digest = digest_by_id(db, row["digest_id"])
        found[message_id(digest, row["target"], sender, key=key)] = Sent(digest.id, digest.profile, row["day"],
                                                                         row["target"])
    return found


def _read_reply(imap, db, settings: Settings, ours: dict[str, Sent], uid: bytes, header: EmailMessage,
                size: int) -> str | None:
    """What one candidate recorded, or None (said in the log when it is worth saying) for mail that is
    not a reply digest should count. Only the reply's body is fetched, and only for one that counts."""
    try:
        answered = _answered(header, ours)
        sender = email.utils.parseaddr(str(header.get("From", "")))[1].lower()
    except Exception as exc:  # a header the parser chokes on: the message is skipped, not the mailbox
        log.warning("a reply to a digest with unreadable headers skipped: %s", one_line(exc))
        return None
    if answered is None:
        return None
    if sender != answered.recipient.lower() or answered.profile not in settings.profiles:
        log.debug("a reply to the digest of %s from %s, who was not sent it: ignored", answered.day, sender)
        return None
    if size > MAX_REPLY_BYTES:
        log.warning("reply from %s to the digest of %s: %d bytes, more than %d; skipped", sender, answered.day,
                    size, MAX_REPLY_BYTES)
        return None
    message = _fetch(imap, uid)
    try:
        votes = parse_votes(own_text(message)) if message is not None else []
    except Exception as exc:  # whatever a message holds, the next reply is read
        log.warning("reply from %s to the digest of %s could not be read (%s): skipped", sender, answered.day,
                    one_line(exc))
        return None
    return _record(db, answered, sender, votes)


def _record(db, answered: Sent, sender: str, parsed: list[tuple[str, str]]) -> str:
    votes, unknown = [], []
    for sign, reference in parsed:
        paper_id = paper_at_rank(db, answered.digest_id, int(reference)) if reference.isdigit() else reference
        if paper_id is None:
            unknown.append(f"#{reference}")
            continue
        set_feedback(db, paper_id, 1 if sign == "+" else -1, profile=answered.profile)
        votes.append(f"{'like' if sign == '+' else 'dislike'} {paper_id}")
    line = (f"reply from {sender} to the digest of {answered.day} ({answered.profile}): "
            f"{', '.join(votes) if votes else 'no votes'}")
    return line + (f"; not in that digest: {', '.join(unknown)}" if unknown else "")


def _answered(message: EmailMessage, ours: dict[str, Sent]) -> Sent | None:
    """The digest email this message answers: In-Reply-To first, then the newest of References and the
    thread's first; at most MAX_NAMED_IDS in all, however many a message lists."""
    references = str(message.get("References", "")).split()
    named = str(message.get("In-Reply-To", "")).split()[:2] + references[::-1][:MAX_NAMED_IDS] + references[:1]
    return next((ours[m] for m in named[:MAX_NAMED_IDS + 1] if m in ours), None)


def own_text(message: EmailMessage) -> str:
    """The reply's own words: its plain text (or its HTML as text, quotes removed), up to where the quoted
    original starts."""
    body = message.get_body(preferencelist=("plain", "html"))
    if body is None:
        return ""
    try:
        text = body.get_content()
    except LookupError:  # a charset Python does not know: read as mail programs read unknown-8bit
        text = (body.get_payload(decode=True) or b"").decode("utf-8", "replace")
    if body.get_content_subtype() == "html":
        text = _html_text(text)
    own = []
    for line in text.splitlines():
        line = line.strip()
        if _END_OF_OWN_TEXT.match(line):
            break
        if not line.startswith(">"):
            own.append(line)
    return "\n".join(own)


def _html_text(html: str) -> str:
    """Visible text of an HTML reply without what mail programs quote (blockquote, Gmail's and Outlook's
    quote containers)."""
    import lxml.etree
    import lxml.html

    # lxml refuses a str that declares its encoding (XHTML's <?xml ... encoding=...?>): it is decoded already.
    html = re.sub(r"^\s*<\?xml[^>]*\?>", "", html)
    try:
        root = lxml.html.fromstring(html)
    except (lxml.etree.ParserError, ValueError):  # empty, or only a comment: no words
        return ""
    for quoted in root.xpath("//blockquote | //*[contains(@class, 'gmail_quote')] | //*[@id='divRplyFwdMsg'] "
                             "| //script | //style"):
        quoted.drop_tree()
    for br in root.xpath("//br | //p | //div"):
        br.tail = "\n" + (br.tail or "")
    return root.text_content()


def parse_votes(text: str) -> list[tuple[str, str]]:
    """(sign, rank or arXiv id) for each vote on lines made only of votes: ``+3``, ``-12``, ``like ID``,
    ``dislike ID``, ``+ID``, ``-ID``."""
    votes = []
    for line in text.splitlines():
        found = _line_votes(line.replace(",", " ").split())
        votes += found or []
    return votes


def _line_votes(words: list[str]) -> list[tuple[str, str]] | None:
    votes, i = [], 0
    while i < len(words):
        word = words[i].lower()
        if word in ("like", "dislike") and i + 1 < len(words) and (paper := _paper_id(words[i + 1])):
            votes.append(("+" if word == "like" else "-", paper))
            i += 2
            continue
        if rank := _RANK.fullmatch(word):
            votes.append((rank[1], str(int(rank[2]))))
        elif (signed := _SIGNED_ID.fullmatch(word)) and (paper := _paper_id(signed[2])):
            votes.append((signed[1], paper))
        else:
            return None  # prose: the whole line is not a vote
        i += 1
    return votes


def _paper_id(text: str) -> str | None:
    if text.isdigit():
        return None
    try:
        return normalize_id(text)[0]
    except InvalidArxivId:
        return None


# -- the mailbox -------------------------------------------------------------------------------------

@contextmanager
def mailbox(config: ImapSettings) -> Iterator[imaplib.IMAP4]:
    """Logged in over TLS (certificate verified), the folder selected; logged out on the way out. The
    whole conversation is cut off after four times ``imap.timeout`` (:mod:`digest.cutoff`)."""
    where = f"IMAP {config.host}:{config.port}"
    with cutoff.Cutoff(config.timeout * cutoff.WHOLE_CONVERSATION_TIMEOUTS) as limit:
        try:
            with _logged_in(config, where, limit) as imap:
                yield imap
        except ImapError:
            if limit.passed:
                raise ImapError(limit.reason(where)) from None
            raise


@contextmanager
def _logged_in(config: ImapSettings, where: str, limit: cutoff.Cutoff) -> Iterator[imaplib.IMAP4]:
    hidden = [config.password.reveal()] if config.password else []
    context = ssl.create_default_context(cafile=config.ca_file or None)
    try:
        if config.security == "ssl":
            imap = cutoff.IMAP4_SSL(config.host, config.port, ssl_context=context, timeout=config.timeout,
                                    cutoff=limit)
        else:
            imap = cutoff.IMAP4(config.host, config.port, timeout=config.timeout, cutoff=limit)
            imap.starttls(context)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise ImapError(f"{where}: cannot connect: {_reason(exc, hidden)}") from None
    try:
        try:
            imap.login(config.user, config.password.reveal() if config.password else "")
        except imaplib.IMAP4.error as exc:
            raise ImapError(f"{where}: login as {config.user} refused: {_reason(exc, hidden)}") from None
        status, detail = imap.select(_quoted(config.folder))
        if status != "OK":
            raise ImapError(f"{where}: no folder {config.folder}: {_reason(detail, hidden)}")
        yield imap
    except (OSError, imaplib.IMAP4.abort) as exc:
        raise ImapError(f"{where}: connection lost: {_reason(exc, hidden)}") from None
    finally:
        try:
            imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def _candidates(imap: imaplib.IMAP4) -> Iterator[tuple[bytes, EmailMessage, int]]:
    """(uid, headers, size) of unseen messages not yet processed that name one of our Message-IDs;
    nothing is marked seen, and no body is fetched here."""
    status, data = imap.uid("SEARCH", None, "UNSEEN", "UNKEYWORD", PROCESSED, "OR", "HEADER", "In-Reply-To",
                            f'"{OUR_MESSAGE_IDS}"', "HEADER", "References", f'"{OUR_MESSAGE_IDS}"')
    if status != "OK":
        raise ImapError(f"IMAP search failed: {_reason(data)}")
    uids = data[0].split()
    if not uids:
        return
    status, parts = imap.uid("FETCH", b",".join(uids), f"(RFC822.SIZE BODY.PEEK[HEADER.FIELDS ({_HEADERS})])")
    if status != "OK":
        raise ImapError(f"IMAP fetch failed: {_reason(parts)}")
    for part in parts:
        if isinstance(part, tuple) and (uid := re.search(rb"\bUID (\d+)", part[0])):
            size = re.search(rb"\bRFC822\.SIZE (\d+)", part[0])
            yield uid[1], email.message_from_bytes(part[1], policy=email.policy.default), int(size[1]) if size else 0


def _fetch(imap: imaplib.IMAP4, uid: bytes) -> EmailMessage | None:
    """The whole message, without marking it seen."""
    status, parts = imap.uid("FETCH", uid, "(BODY.PEEK[])")
    raw = next((p[1] for p in parts if isinstance(p, tuple)), None) if status == "OK" else None
    return email.message_from_bytes(raw, policy=email.policy.default) if raw is not None else None


def _keeps_keywords(imap: imaplib.IMAP4) -> bool:
    """Whether the folder keeps keywords of our own (PERMANENTFLAGS lists \\*): most servers do."""
    _, flags = imap.response("PERMANENTFLAGS")
    return any(b"\\*" in f for f in flags if isinstance(f, bytes))


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _reason(exc, hidden: list[str] = ()) -> str:
    """The server's words in one line, the password redacted even should a server echo it."""
    if isinstance(exc, list):
        exc = b" ".join(x for x in exc if isinstance(x, bytes)).decode("utf-8", "replace")
    if isinstance(exc, bytes):
        exc = exc.decode("utf-8", "replace")
    return redact(one_line(exc if isinstance(exc, BaseException) else Exception(str(exc))), list(hidden))


def read_replies_logged(settings: Settings) -> None:
    """check_replies for the daemon's thread: a mailbox that cannot be read now is one logged line, and
    the next look tries again."""
    try:
        check_replies(settings)
    except Exception as exc:  # the daemon goes on whatever the mailbox does
        log.error("replies not read: %s", one_line(exc))
