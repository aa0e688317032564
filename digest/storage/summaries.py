"""The ``summaries`` and ``llm_calls`` tables: each paper's summary by model, prompt and language (the
cache a re-run reads before it pays for a request), and every request to the LLM with its tokens, status
and error, which the daily token budget and `digest stats` count. The only module that reads or writes
them; :mod:`digest.summarize` decides what goes in.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
from typing import TYPE_CHECKING

from ..answers import FAQ_FIELDS
from ..prompt import FULL_TEXT_PROMPT_VERSION, PROMPT_VERSION
from ..records import Paper, Summary

if TYPE_CHECKING:
    from ..config import LLMSettings  # annotations only: pydantic is for validating

log = logging.getLogger("digest.summarize")


# -- summaries --------------------------------------------------------------------------------------

def cached_summary(db, paper: Paper, llm: LLMSettings, *, full_text: bool = False) -> Summary | None:
    """The stored summary of this paper's version by this model, prompt and language. A paper meant
    for full text also takes its abstract-based summary, so a re-run never pays twice."""
    versions = [FULL_TEXT_PROMPT_VERSION, PROMPT_VERSION] if full_text else [PROMPT_VERSION]
    for prompt_version in versions:
        row = db.execute(
            "SELECT tldr, faq FROM summaries WHERE paper_id = ? AND version = ? AND model = ? AND prompt_version = ? "
            "AND language = ?", [paper.id, paper.version, llm.model, prompt_version, llm.language]).fetchone()
        if row:
            faq = json.loads(row[1])
            return Summary(tldr=row[0], **{key: str(faq.get(key, "")) for key in FAQ_FIELDS}, source="llm",
                           model=llm.model)
    return None


def save_summary(db, paper: Paper, fields: dict[str, str], llm: LLMSettings, prompt_version: str,
                 created_at: str) -> None:
    """Cache one paper's summary; a paper never stored (no papers row) is summarized but not cached."""
    faq = json.dumps({key: fields[key] for key in FAQ_FIELDS}, ensure_ascii=False)
    try:
        db.execute("INSERT OR REPLACE INTO summaries (paper_id, version, model, prompt_version, language, tldr, "
                   "faq, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   [paper.id, paper.version, llm.model, prompt_version, llm.language, fields["tldr"], faq,
                    created_at])
    except sqlite3.IntegrityError:
        log.warning("summary of %s not cached: the paper is not in the database", paper.id)


def latest_summary(db, paper_id: str) -> dict | None:
    """The latest summary of a paper (`digest show`): TL;DR, FAQ, model, language, version."""
    row = db.execute("SELECT tldr, faq, model, language, version FROM summaries WHERE paper_id = ? "
                     "ORDER BY created_at DESC, version DESC LIMIT 1", [paper_id]).fetchone()
    if row is None:
        return None
    try:
        faq = json.loads(row[1])
    except ValueError:
        faq = {}
    questions = [{"question": q, "answer": faq[key]} for key, q in Summary.FAQ if faq.get(key)]
    return {"tldr": row[0], "faq": questions, "model": row[2], "language": row[3], "version": row[4]}


# -- llm_calls ----------------------------------------------------------------------------------------

def record_call(db, day: dt.date, paper_id: str, model: str, prompt_tokens: int, completion_tokens: int,
                status: str, error: str | None, duration: float, created_at: str) -> None:
    """One request to the LLM; ``error`` already redacted."""
    db.execute("INSERT INTO llm_calls (day, paper_id, model, prompt_tokens, completion_tokens, status, error, "
               "duration, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               [day.isoformat(), paper_id, model, prompt_tokens, completion_tokens, status, error,
                round(duration, 3), created_at])


def tokens_spent(db, day: dt.date) -> int:
    row = db.execute("SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM llm_calls WHERE day = ?",
                     [day.isoformat()]).fetchone()
    return int(row[0])


def tokens_by_day(db, days: int = 30) -> list[dict]:
    """LLM spend on the last ``days`` UTC days with calls, oldest first (`digest stats`): calls, prompt,
    completion and all tokens, failed calls."""
    return [dict(row) for row in db.query(
        "SELECT day, COUNT(*) AS calls, SUM(prompt_tokens) AS prompt_tokens, "
        "SUM(completion_tokens) AS completion_tokens, SUM(prompt_tokens + completion_tokens) AS tokens, "
        "SUM(status != 'ok') AS failed FROM llm_calls GROUP BY day ORDER BY day DESC LIMIT ?", [days])][::-1]


def latest_call_error(db) -> dict | None:
    """The most recent error an LLM request recorded: when, which model, what."""
    row = db.execute("SELECT created_at, 'LLM call ' || model, error FROM llm_calls WHERE error IS NOT NULL "
                     "ORDER BY created_at DESC LIMIT 1").fetchone()
    return dict(zip(("at", "source", "error"), row)) if row else None
