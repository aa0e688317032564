"""What makes an LLM's answer a summary: a JSON object of the seven FAQ fields, cleaned and capped,
whose TL;DR is a sentence about the paper.

A real SmolLM2-135M behind llama.cpp answered ``PAPER``, ``arXiv id: 2606.30237 (version 1),`` and "The
paper is between lines.": :func:`tldr_problem` rejects a TL;DR that is too short to be a sentence, the
paper's title, a line of the quoted paper or an echo of the prompt, and asking once more often helps. FAQ
fields that are placeholders ("N/A") or echoes are emptied, so the digest shows nothing rather than junk.
Whatever is kept is cleaned as untrusted text: HTML tags, control and bidi characters and every link not
pointing at arxiv.org are removed.
"""

from __future__ import annotations

import json
import re

from .prompt import MARK_CLOSE, MARK_OPEN
from .records import Summary
from .text import cap, clean_untrusted

FAQ_FIELDS = tuple(key for key, _ in Summary.FAQ)
FIELD_MAX_CHARS = {"tldr": 400, **{key: 1500 for key in FAQ_FIELDS}}
MIN_TLDR_WORDS = 5  # "PAPER", a title, "arXiv id: 2606.30237 (version 1)," are not sentences about a paper

TLDR_LABEL = re.compile(r"^\W*(tl\W{0,2}dr|summary)\s*[:：\-–—]\s*", re.I)  # "TL;DR: ...", "Summary - ..."
# How the quoted paper's lines start ("arXiv id:", "Title:", ...), and its markers: no answer starts so.
PROMPT_LINE = re.compile(r"^\W*(?i:arxiv id|title|abstract|full text(?: \(may be cut off\))?)\s*:"
                         rf"|^\s*(?:{re.escape(MARK_OPEN)}|{re.escape(MARK_CLOSE)})")
# What a model writes where a field has nothing to say: dropped, so the digest shows no question for it.
PLACEHOLDERS = {"", "n a", "na", "none", "null", "nil", "nothing", "unknown", "empty", "tbd", "todo",
                "not applicable", "not available", "not mentioned", "not specified", "not stated", "not given",
                "no information", "not provided", "not discussed", "not described"}
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


class NoSummary(Exception):
    """Why one paper gets no LLM summary (it shows its abstract); ``retry_answer`` when asking again might help."""

    def __init__(self, reason: str, retry_answer: bool = False):
        super().__init__(reason)
        self.retry_answer = retry_answer


def parse_answer(content: str | None, refusal: str | None = None, *, title: str = "",
                 instructions: str = "") -> dict[str, str]:
    """The seven fields of a valid answer, cleaned and capped; :class:`NoSummary` otherwise.

    The TL;DR must be a sentence about the paper (:func:`tldr_problem`); FAQ fields that are placeholders
    or echoes of the prompt become empty, and an empty field is not shown."""
    if refusal:
        raise NoSummary(f"the model refused: {cap(' '.join(refusal.split()), 120)}")
    if not content or not content.strip():
        raise NoSummary("empty answer", retry_answer=True)
    data = _json_object(content)
    if "refusal" in data and not data.get("tldr"):
        raise NoSummary(f"the model refused: {cap(str(data['refusal']), 120)}")
    fields = {}
    for key in ("tldr",) + FAQ_FIELDS:
        value = data.get(key)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise NoSummary(f"{key} is not a string", retry_answer=True)
        fields[key] = clean_untrusted(value, FIELD_MAX_CHARS[key], tags=True)
    fields["tldr"] = TLDR_LABEL.sub("", fields["tldr"], count=1)
    if not fields["tldr"]:
        raise NoSummary("the answer has no tldr", retry_answer=True)
    problem = tldr_problem(fields["tldr"], title, instructions)
    if problem:
        raise NoSummary(problem, retry_answer=True)
    for key in FAQ_FIELDS:
        if is_filler(fields[key], instructions):
            fields[key] = ""
    return fields


def tldr_problem(tldr: str, title: str = "", instructions: str = "") -> str | None:
    """Why ``tldr`` is not a sentence about the paper, or None when it is.

    It must have at least :data:`MIN_TLDR_WORDS` words besides the paper's title (a word has a letter:
    ids and numbers do not count; two CJK characters count as one), must not start like a line of the
    quoted paper ("arXiv id:", "Title:", the markers), and must have a word that the instructions do not
    (SmolLM2-135M answered "The paper is between lines.")."""
    shown = repr(cap(" ".join(tldr.split()), 60))
    normal, title = _normal(tldr), _normal(title)
    rest = " ".join(f" {normal} ".replace(f" {title} ", " ").split()) if title else normal
    if word_count(rest) < MIN_TLDR_WORDS:
        if word_count(normal) >= MIN_TLDR_WORDS:
            return f"the tldr is the paper's title, not a sentence about the paper: {shown}"
        return f"the tldr is not a sentence about the paper (fewer than {MIN_TLDR_WORDS} words): {shown}"
    if PROMPT_LINE.match(tldr):
        return f"the tldr repeats the prompt's lines, not a sentence about the paper: {shown}"
    if _only_words_of(rest, instructions):
        return f"the tldr repeats the prompt's instructions, not a sentence about the paper: {shown}"
    return None


def is_filler(value: str, instructions: str = "") -> bool:
    """A FAQ answer that says nothing: a placeholder ("N/A", "None"), a line of the quoted paper, or
    nothing but words of the instructions ("what problem the paper tries to solve")."""
    normal = _normal(value)
    return normal in PLACEHOLDERS or bool(PROMPT_LINE.match(value)) or _only_words_of(normal, instructions)


def word_count(text: str) -> int:
    """Words with a letter in them; in Chinese, Japanese and Korean, two characters make a word."""
    wide = len(CJK.findall(text))
    return sum(1 for token in CJK.sub(" ", text).split() if re.search(r"[^\W\d_]", token)) + wide // 2


def _only_words_of(normal: str, instructions: str) -> bool:
    """Whether every one of these words (already :func:`_normal`) is a word of the instructions: an
    echo of them, shuffled or cut, says nothing about the paper."""
    words = set(normal.split())
    return bool(words) and words <= set(_normal(instructions).split())


def _normal(text: str) -> str:
    """Lower case, punctuation as spaces: how two texts are compared for an echo."""
    return " ".join(re.sub(r"[\W_]+", " ", text.lower()).split())


def _json_object(content: str) -> dict:
    """Parse the answer's JSON, tolerating the code fences and preambles local models add."""
    text = content.strip()
    for candidate in (text, text[text.find("{"):text.rfind("}") + 1]):
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
        raise NoSummary("the answer is not a JSON object", retry_answer=True)
    raise NoSummary(f"the answer is not JSON: {cap(' '.join(text.split()), 80)}", retry_answer=True)
