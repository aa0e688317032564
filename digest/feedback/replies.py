"""Replies to the digest, read over IMAP: a line such as ``+3 +7 -12`` or ``like 2601.01234`` is a vote.

A message counts when it answers one of digest's own emails (its In-Reply-To or References names the
Message-ID that email went out with, which digest can recompute from the outbox) and comes from the
address that email went to. Only the reply's own lines count: quoted lines (``>``) and everything after an
attribution ("On ... wrote:"), a forwarded original or a signature are skipped, and a line votes only when
every word on it is a vote, so prose ("-3 degrees here, +1 to this paper") records nothing. digest answers
nothing; it marks the reply seen and logs what it recorded. Other mail is not touched.
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

from ..arxiv.ids import InvalidArxivId, normalize_id
from ..config import ImapSettings, Settings
from ..db import open_db
from ..deliver.email import message_id, sender_address
from ..deliver.outbox import sent_emails
from ..ledger import digest_by_id, paper_at_rank
from ..profiles import set_feedback
from ..text import one_line

log = logging.getLogger(__name__)

# Our Message-IDs all start so (deliver/email.py): the server filters with it, so other mail is never fetched.
OUR_MESSAGE_IDS = "<digest."
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
    with closing(open_db(settings.database_path())) as db:
        ours = _sent_by_message_id(db, settings)
        recorded = []
        with mailbox(settings.feedback.imap) as imap:
            for uid, message in _candidates(imap):
                line = _take_reply(db, ours, message)
                if line is not None:
                    imap.uid("STORE", uid, "+FLAGS.SILENT", r"(\Seen)")
                    log.info("%s", line)
                    recorded.append(line)
    return recorded


def _sent_by_message_id(db, settings: Settings) -> dict[str, Sent]:
    sender = sender_address(settings.email)
    found = {}
    for row in sent_emails(db):
        digest = digest_by_id(db, row["digest_id"])
        found[message_id(digest, row["target"], sender)] = Sent(digest.id, digest.profile, row["day"], row["target"])
    return found


def _take_reply(db, ours: dict[str, Sent], message: EmailMessage) -> str | None:
    """Record a reply's votes; None when the message is not a reply from a digest's recipient."""
    answered = _answered(message, ours)
    if answered is None:
        return None
    sender = email.utils.parseaddr(str(message.get("From", "")))[1].lower()
    if sender != answered.recipient.lower():
        log.debug("a reply to the digest of %s from %s, who was not sent it: ignored", answered.day, sender)
        return None
    votes, unknown = [], []
    for sign, reference in parse_votes(own_text(message)):
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
    """The digest email this message answers: In-Reply-To first, then the newest of References."""
    named = str(message.get("In-Reply-To", "")).split() + list(reversed(str(message.get("References", "")).split()))
    return next((ours[m] for m in named if m in ours), None)


def own_text(message: EmailMessage) -> str:
    """The reply's own words: its plain text (or its HTML as text, quotes removed), up to where the quoted
    original starts."""
    body = message.get_body(preferencelist=("plain", "html"))
    if body is None:
        return ""
    text = body.get_content()
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
    import lxml.html

    if not html.strip():
        return ""
    root = lxml.html.fromstring(html)
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
    """Logged in over TLS (certificate verified), the folder selected; logged out on the way out."""
    where = f"IMAP {config.host}:{config.port}"
    context = ssl.create_default_context(cafile=config.ca_file or None)
    try:
        if config.security == "ssl":
            imap = imaplib.IMAP4_SSL(config.host, config.port, ssl_context=context, timeout=config.timeout)
        else:
            imap = imaplib.IMAP4(config.host, config.port, timeout=config.timeout)
            imap.starttls(context)
    except (OSError, imaplib.IMAP4.error) as exc:
        raise ImapError(f"{where}: cannot connect: {_reason(exc)}") from None
    try:
        try:
            imap.login(config.user, config.password.reveal() if config.password else "")
        except imaplib.IMAP4.error as exc:
            raise ImapError(f"{where}: login as {config.user} refused: {_reason(exc)}") from None
        status, detail = imap.select(_quoted(config.folder))
        if status != "OK":
            raise ImapError(f"{where}: no folder {config.folder}: {_reason(detail)}")
        yield imap
    except (OSError, imaplib.IMAP4.abort) as exc:
        raise ImapError(f"{where}: connection lost: {_reason(exc)}") from None
    finally:
        try:
            imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def _candidates(imap: imaplib.IMAP4) -> Iterator[tuple[bytes, EmailMessage]]:
    """Unseen messages that name one of our Message-IDs, fetched without marking them seen."""
    status, data = imap.uid("SEARCH", None, "UNSEEN", "OR", "HEADER", "In-Reply-To", f'"{OUR_MESSAGE_IDS}"',
                            "HEADER", "References", f'"{OUR_MESSAGE_IDS}"')
    if status != "OK":
        raise ImapError(f"IMAP search failed: {_reason(data)}")
    for uid in data[0].split():
        status, parts = imap.uid("FETCH", uid, "(BODY.PEEK[])")
        raw = next((p[1] for p in parts if isinstance(p, tuple)), None) if status == "OK" else None
        if raw is not None:
            yield uid, email.message_from_bytes(raw, policy=email.policy.default)


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _reason(exc) -> str:
    if isinstance(exc, list):
        exc = b" ".join(x for x in exc if isinstance(x, bytes)).decode("utf-8", "replace")
    if isinstance(exc, bytes):
        exc = exc.decode("utf-8", "replace")
    return one_line(exc if isinstance(exc, BaseException) else Exception(str(exc)))


def read_replies_logged(settings: Settings) -> None:
    """check_replies for the daemon's thread: a mailbox that cannot be read now is one logged line, and
    the next look tries again."""
    try:
        check_replies(settings)
    except Exception as exc:  # the daemon goes on whatever the mailbox does
        log.error("replies not read: %s", one_line(exc))
