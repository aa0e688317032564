"""arXiv's HTML rendering of a paper, for ``llm.full_text``: fetched politely, reduced to readable text."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Callable

import requests

from ..config import Settings
from ..records import Paper
from .http import ArxivError, session_for, where


def get_full_text(settings: Settings, paper: Paper, session: requests.Session) -> bytes | None:
    """arXiv's HTML rendering of ``paper`` at its version, or None where arXiv has none (HTTP 404:
    older papers and those whose LaTeX did not convert). Other failures raise :class:`ArxivError`."""
    url = f"{settings.arxiv.html_url.rstrip('/')}/{paper.id}v{paper.version}"
    response = session.get(url)
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise ArxivError(f"{where(url)}: HTTP {response.status_code} from arXiv")
    return response.content


def parse_full_text(html_bytes: bytes) -> str:
    """The readable text of an arXiv HTML paper: paragraphs and headings, without scripts, styles,
    navigation or the bibliography (which would spend the token cap on references)."""
    extractor = _TextExtractor()
    extractor.feed(html_bytes.decode("utf-8", errors="replace"))
    extractor.close()
    return re.sub(r"[ \t]+", " ", "\n".join(extractor.lines)).strip()


class _TextExtractor(HTMLParser):
    SKIP = {"script", "style", "nav", "header", "footer", "math", "button", "svg"}
    BREAK = {"p", "div", "section", "h1", "h2", "h3", "h4", "h5", "h6", "li", "br", "tr", "figcaption"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.skipping = 0
        self.in_bibliography = False
        self.current = ""

    def handle_starttag(self, tag, attrs):
        classes = dict(attrs).get("class") or ""
        if tag in self.SKIP:
            self.skipping += 1
        if "ltx_bibliography" in classes:
            self.in_bibliography = True
        if tag in self.BREAK:
            self._flush()

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.skipping:
            self.skipping -= 1
        if tag in self.BREAK:
            self._flush()

    def handle_data(self, data):
        if not self.skipping and not self.in_bibliography:
            self.current += data

    def _flush(self):
        if self.current.strip():
            self.lines.append(" ".join(self.current.split()))
        self.current = ""

    def close(self):
        super().close()
        self._flush()


def full_text_fetcher(settings: Settings) -> Callable[[Paper], str | None]:
    """``fetch_text(paper)`` for the summarizer: polite like every arXiv request, None when missing."""

    def fetch_text(paper: Paper) -> str | None:
        with session_for(settings, None) as session:
            body = get_full_text(settings, paper, session)
        return parse_full_text(body) if body else None

    return fetch_text
