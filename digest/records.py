"""Plain records that flow down the pipeline. No behaviour beyond what the data itself implies."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field, fields

ANNOUNCE_TYPES = ("new", "cross", "replace", "replace-cross")
REPLACEMENT_TYPES = ("replace", "replace-cross")  # a new version of a paper, not the paper's first listing


def is_replacement(kind: str) -> bool:
    """Whether an announcement of this kind (one of ANNOUNCE_TYPES) is a replacement."""
    return kind in REPLACEMENT_TYPES


def replacement_sql(column: str) -> str:
    """:func:`is_replacement` as an SQL condition on the announcement kind ``column``."""
    return f"{column} IN ({', '.join(repr(kind) for kind in REPLACEMENT_TYPES)})"


@dataclass
class Paper:
    """One arXiv paper at one version. ``id`` carries no version: ``2401.01234``, ``hep-th/9901001``."""

    id: str
    version: int
    title: str
    abstract: str
    authors: list[str]
    categories: list[str]
    primary_category: str
    published: str | None = None  # first version, ISO 8601
    updated: str | None = None  # this version, ISO 8601
    comment: str | None = None
    journal_ref: str | None = None
    doi: str | None = None

    @property
    def text(self) -> str:
        """The paper as the models read it: what is embedded, what the learned term and the keywords
        read, and what :attr:`content_hash` covers."""
        return f"{self.title}\n{self.abstract}"

    @property
    def content_hash(self) -> str:
        """What embeddings and summaries are keyed on: a new version with the same text needs no new work."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:32]

    @property
    def abs_url(self) -> str:
        return f"https://arxiv.org/abs/{self.id}"


@dataclass
class Announcement:
    """A paper as listed on one announcement day, in the order arXiv listed it."""

    paper: Paper
    announced_on: dt.date
    kind: str  # one of ANNOUNCE_TYPES
    position: int = 0
    version: int | None = None  # the version this announcement announced, when it differs from paper.version

    @property
    def replacement(self) -> int:
        """The ledger's key for what is announced: 0 for the submission (new or cross-list), whatever its
        version; N for the replacement that announced version N."""
        return (self.version or self.paper.version) if is_replacement(self.kind) else 0


@dataclass
class Ranked:
    """A paper's place in one profile's digest. ``reason`` is for a person to read."""

    paper: Paper
    rank: int
    score: float
    reason: str
    section: str = "rest"  # "top", "rest" or "replaced"
    kind: str = "new"
    summary: "Summary | None" = None
    note: str = ""  # for a paper of an earlier day: "announced 2026-06-23, after that day's digest"


@dataclass
class Summary:
    """Cool Papers' FAQ for one paper. ``source`` is "llm" or "abstract" (the fallback, labelled as such)."""

    tldr: str
    problem: str = ""
    related_work: str = ""
    method: str = ""
    experiments: str = ""
    further_work: str = ""
    summary: str = ""
    source: str = "llm"
    model: str = ""

    FAQ = (
        ("problem", "What problem does the paper try to solve?"),
        ("related_work", "What is the related work?"),
        ("method", "How does the paper solve it?"),
        ("experiments", "What experiments does it run?"),
        ("further_work", "What could be explored further?"),
        ("summary", "Summary"),
    )

    @property
    def is_fallback(self) -> bool:
        return self.source != "llm"


@dataclass
class DigestView:
    """Everything a renderer needs for one profile's digest of one announcement day (or a catch-up)."""

    profile: str
    days: list[dt.date]
    categories: str
    items: list[Ranked] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # announced, new, cross, replace, summarized
    digest_id: int | None = None
    covers: list[Announcement] = field(default_factory=list)  # what the ledger records this digest covers
    caught_up: list[str] = field(default_factory=list)  # problems noticed since the last digest (notices.py)

    @property
    def top(self) -> list[Ranked]:
        return [i for i in self.items if i.section == "top"]

    @property
    def rest(self) -> list[Ranked]:
        return [i for i in self.items if i.section == "rest"]

    @property
    def replaced(self) -> list[Ranked]:
        return [i for i in self.items if i.section == "replaced"]


@dataclass
class Rendered:
    """One digest in every format it is delivered in; stored as-is so a retry sends what was built.

    ``html`` is the complete digest (files, chat attachments, the email's attachment); ``email_html`` the
    email's own body within EMAIL_HTML_BUDGET, the same as ``html`` when the complete digest fits, and
    empty in digests stored before it existed (sent as ``html``). ``attachment`` names the file the email
    attaches ``html`` as when the two differ."""

    subject: str
    html: str
    text: str
    markdown: str
    json: str
    email_html: str = ""
    attachment: str = ""

    OPTIONAL = ("email_html", "attachment")

    @classmethod
    def formats(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @property
    def email_body(self) -> str:
        return self.email_html or self.html

    @property
    def attaches(self) -> bool:
        """Whether the email must carry the complete digest: its body leaves something out."""
        return bool(self.email_html) and self.email_html != self.html


@dataclass(frozen=True)
class Digest:
    """A stored digest: one profile, the days it was built for (several for a merged catch-up)."""

    id: int
    profile: str
    day: dt.date  # the last (or only) day it was built for
    days: tuple[dt.date, ...]
    announced: int
    summarized: int
    subject: str | None

    @classmethod
    def from_row(cls, row) -> "Digest":
        return cls(row["id"], row["profile"], dt.date.fromisoformat(row["announced_on"]),
                   tuple(dt.date.fromisoformat(d) for d in json.loads(row["days"])), row["announced"],
                   row["summarized"], row["subject"])
