"""LLM summaries: Cool Papers' FAQ for the papers that matter, cached, bounded, never blocking the digest.

:func:`summarize_papers` returns a :class:`~digest.records.Summary` for every paper it is given: from the
``summaries`` cache, from the LLM, or :func:`fallback_summary` (the abstract's opening sentences,
labelled as no LLM summary). It never raises, so a broken, slow or expensive LLM costs the digest its
summaries, never its delivery.

Any OpenAI-compatible server works (OpenAI, DeepSeek, Moonshot, Ollama, vLLM, llama.cpp): the client
is the ``openai`` package with its own retries turned off, because ours honour Retry-After, stop at the
run's deadline and check the daily token budget before every request. Every request is a row in
``llm_calls`` (tokens, status, error, duration); neither the API key nor any header is stored.

Paper text is untrusted: :mod:`digest.prompt` quotes it as data, and :mod:`digest.answers` takes only
an answer that is a summary, cleaned and capped; one that is not is asked for once more. Every request
sends ``max_tokens`` and a ``temperature``, so a model that runs on cannot generate past its budget or
our timeout.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .answers import NoSummary, parse_answer
from .http_bounds import bounded_hooks, too_large
from .http_retry import seconds_to_wait
from .logs import redact
from .prompt import FULL_TEXT_PROMPT_VERSION, PROMPT_VERSION, build_messages, instructions_of
from .records import Paper, Summary
from .storage.db import iso
from .storage.summaries import cached_summary, record_call, save_summary, tokens_spent
from .text import cap, clean_untrusted

if TYPE_CHECKING:
    from .config import LLMSettings, Settings  # annotations only: pydantic is for validating
    import openai

log = logging.getLogger("digest.summarize")

CHARS_PER_TOKEN = 4  # a rough, model-independent estimate: budgets need an upper bound, not precision
MAX_ATTEMPTS = 4  # per request, on 429, 5xx, timeouts and connection failures
BACKOFF_BASE = 1.0  # seconds; doubles each attempt, with jitter
BACKOFF_CAP = 60.0
GRACE = 1.0  # seconds past the deadline to collect answers already arriving
FALLBACK_SENTENCES = 2
FALLBACK_MAX_CHARS = 400
# Statuses that end every request of the run: a wrong key, model or base URL will not fix itself.
FATAL_STATUSES = {401: "the API key was refused", 403: "access was denied", 404: "no such model or base URL"}

FetchText = Callable[[Paper], "str | None"]


# -- the public entry points ---------------------------------------------------------------------------

def summarize_papers(db, settings: Settings, papers: list[Paper], *, now: dt.datetime | None = None,
                     fetch_text: FetchText | None = None) -> dict[str, Summary]:
    """A Summary for every paper given, by id: cached, from the LLM, or the abstract's fallback.

    ``fetch_text(paper)`` (optional) returns a paper's full text; the first ``llm.full_text`` papers
    are then summarized from it, capped at ``llm.full_text_max_tokens``. Never raises.
    """
    first_seen: dict[str, Paper] = {}
    for paper in papers:
        first_seen.setdefault(paper.id, paper)
    unique = list(first_seen.values())
    results: dict[str, Summary] = {}
    try:
        _summarize(db, settings, unique, results, now, fetch_text)
    except Exception as exc:  # degrade, don't fail: the digest goes out with abstracts
        log.error("summaries failed, the digest shows abstracts instead: %s",
                  _redact(f"{type(exc).__name__}: {exc}", settings.llm))
    return {p.id: results.get(p.id) or fallback_summary(p) for p in unique}


def fallback_summary(paper: Paper) -> Summary:
    """The abstract's opening sentences, with source "abstract" so the digest labels it as no LLM summary."""
    text = clean_untrusted(paper.abstract, FALLBACK_MAX_CHARS * 4)
    sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z0-9(\\$])", text)
    opening = ""
    for sentence in sentences[:FALLBACK_SENTENCES]:
        if opening and len(opening) + len(sentence) + 1 > FALLBACK_MAX_CHARS:
            break
        opening = f"{opening} {sentence}".strip()
    return Summary(tldr=cap(opening or clean_untrusted(paper.title, 300), FALLBACK_MAX_CHARS), source="abstract")


# -- the run ------------------------------------------------------------------------------------------

def _summarize(db, settings: Settings, papers: list[Paper], results: dict[str, Summary],
               now: dt.datetime | None, fetch_text: FetchText | None) -> None:
    llm = settings.llm
    if not llm.enabled or not papers:
        return
    full_text_ids = {p.id for p in papers[:llm.full_text]} if fetch_text else set()
    todo = []
    for paper in papers:
        cached = cached_summary(db, paper, llm, full_text=paper.id in full_text_ids)
        if cached:
            results[paper.id] = cached
        else:
            todo.append(paper)
    cached_count = len(papers) - len(todo)
    if todo:
        job = SummaryJob(db, llm, now=now, fetch_text=fetch_text)
        results.update(job.run(todo, full_text_ids))
    made = len(results) - cached_count
    log.info("summaries: %d papers, %d cached, %d from %s, %d from the abstract", len(papers), cached_count,
             made, llm.model, len(papers) - len(results))


@dataclass
class Answer:
    """One answer from the server, before it is judged."""

    content: str | None
    refusal: str | None
    cut_off: bool  # the server stopped it at max_tokens
    prompt_tokens: int
    completion_tokens: int
    duration: float
    reserved: int  # the budget tokens held for this request, released when it is recorded


class SummaryJob:
    """One batch of papers against the LLM: the thread pool, the deadline, the budget and the call log.

    Workers share one database connection, so every read and write goes through ``db_lock``; once
    the deadline has passed and :meth:`run` has returned, ``closed`` is set and late workers write
    nothing (the caller may be inside its own transaction on the same connection by then).
    """

    def __init__(self, db, llm: LLMSettings, *, now: dt.datetime | None = None,
                 fetch_text: FetchText | None = None):
        self.db = db
        self.llm = llm
        self.now = now
        self.fetch_text = fetch_text
        self.deadline = time.monotonic() + llm.deadline
        self.db_lock = threading.Condition()  # also signals when a request's reserved tokens are released
        self.closed = threading.Event()
        self.reserved = 0  # tokens of requests in flight, not yet in llm_calls
        self.stopped: str | None = None  # why no further request is sent (budget, a refused key ...)
        # What each request sends beyond the messages, until the server says it does not take one of them.
        self.options = {"response_format": {"type": "json_object"}, "max_tokens": llm.max_tokens,
                        "temperature": llm.temperature}
        import openai  # here, not at the top: a run without an LLM, and the daemon's runs, start faster

        self.client = openai.OpenAI(
            base_url=llm.base_url,
            # Local servers (Ollama, llama.cpp) need no key, but the client insists on one.
            api_key=llm.api_key.reveal() if llm.api_key else "no-key",
            timeout=llm.timeout,
            max_retries=0,
            http_client=openai.DefaultHttpxClient(event_hooks=bounded_hooks()),  # answers bounded in size
        )

    def run(self, papers: list[Paper], full_text_ids: set[str]) -> dict[str, Summary]:
        """Summaries for as many papers as the deadline and budget allow; the others are left out."""
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(self.llm.concurrency, len(papers)),
                                                     thread_name_prefix="summarize")
        futures = {pool.submit(self.summarize_one, p, p.id in full_text_ids): p for p in papers}
        done, late = concurrent.futures.wait(futures, timeout=max(0.0, self.deadline - time.monotonic()) + GRACE)
        with self.db_lock:
            self.closed.set()
            self.db_lock.notify_all()
        pool.shutdown(wait=False, cancel_futures=True)
        if late:
            log.warning("summaries: the deadline of %.0fs passed; %d papers get the abstract", self.llm.deadline,
                        len(late))
        results = {}
        for future in done:
            summary = future.result()
            if summary is not None:
                results[futures[future].id] = summary
        if not late:  # late workers still hold connections; they end at their (deadline-capped) timeout
            self.client.close()
        return results

    def summarize_one(self, paper: Paper, full_text: bool) -> Summary | None:
        """The LLM's summary of one paper, cached; None when it failed for good (logged)."""
        try:
            text = self._full_text(paper) if full_text else None
            messages = build_messages(paper, self.llm.language, text)
            try:
                fields = self._answer(paper, messages)
            except NoSummary as exc:
                if not exc.retry_answer:
                    raise
                log.info("summary of %s: %s; asking once more", paper.id, exc)
                fields = self._answer(paper, messages)
        except NoSummary as exc:
            if not self.stopped:
                log.warning("summary of %s failed, using the abstract: %s", paper.id, exc)
            return None
        except Exception as exc:  # a bug must cost one summary, not the digest
            log.error("summary of %s failed unexpectedly, using the abstract: %s", paper.id,
                      _redact(f"{type(exc).__name__}: {exc}", self.llm))
            return None
        summary = Summary(**fields, source="llm", model=self.llm.model)
        self._save(paper, fields, FULL_TEXT_PROMPT_VERSION if text else PROMPT_VERSION)
        return summary

    def _full_text(self, paper: Paper) -> str | None:
        try:
            text = self.fetch_text(paper) if self.fetch_text else None
        except Exception as exc:
            log.warning("full text of %s unavailable, summarizing the abstract: %s", paper.id, exc)
            return None
        if not text or not text.strip():
            return None
        return text[:self.llm.full_text_max_tokens * CHARS_PER_TOKEN]

    # -- one answer, with retries on transient failures ---------------------------------------------

    def _answer(self, paper: Paper, messages: list[dict]) -> dict[str, str]:
        """The validated fields of one answer, or :class:`NoSummary`."""
        call = self._request(paper, messages)
        try:
            fields = parse_answer(call.content, call.refusal, title=paper.title,
                                  instructions=instructions_of(messages))
        except NoSummary as exc:
            if call.cut_off:  # asking again would cost as many tokens to be cut off again
                exc = NoSummary(f"cut off at llm.max_tokens ({self.llm.max_tokens}): {exc}")
            self._record(paper, call, "invalid", str(exc))
            raise exc from None
        self._record(paper, call, "ok", None)
        return fields

    def _request(self, paper: Paper, messages: list[dict]) -> Answer:
        import openai

        estimate = _estimate_tokens(messages, self.llm.max_tokens)
        refused = 0  # connections that failed outright, as opposed to answers that were slow or errors
        for attempt in range(MAX_ATTEMPTS):
            timeout = self._request_timeout()
            self._reserve(estimate)
            started = time.monotonic()
            try:
                completion = self.client.chat.completions.create(
                    model=self.llm.model, messages=messages, timeout=timeout, **self.options)
            except openai.APIStatusError as exc:
                wait = self._failed_request(paper, exc, estimate, started)
            except openai.APIConnectionError as exc:  # includes timeouts, and answers over the bound
                refusal = too_large(exc)
                if refusal:  # the server would send it again: this paper keeps its abstract, the others go on
                    self._record_error(paper, refusal, estimate, started)
                    raise NoSummary(refusal) from None
                reason = "timed out" if isinstance(exc, openai.APITimeoutError) else "connection failed"
                refused += reason == "connection failed"
                self._record_error(paper, reason, estimate, started)
                wait = 0.0
            else:
                return _answer_of(completion, time.monotonic() - started, estimate, self.llm.max_tokens)
            if wait is None:
                continue  # retry at once: sent an option the server does not take, now left out
            if attempt + 1 < MAX_ATTEMPTS:
                self._back_off(attempt, wait)
        if refused == MAX_ATTEMPTS:  # a server that is down will not come up for the next paper either
            self._stop(_redact(f"cannot connect to the LLM server at {self.llm.base_url}", self.llm))
        raise NoSummary(f"no answer after {MAX_ATTEMPTS} attempts")

    def _failed_request(self, paper: Paper, exc: openai.APIStatusError, estimate: int,
                        started: float) -> float | None:
        """Record a refused request; return the Retry-After to honour (0 if none), None to retry at once,
        or raise :class:`NoSummary` when retrying cannot help."""
        status = exc.status_code
        reason = _redact(f"HTTP {status}: {_error_message(exc)}", self.llm)  # a proxy may echo our headers
        self._record_error(paper, reason, estimate, started)
        if status == 400 and self._leave_out_option(reason):
            return None
        if status == 429 or status >= 500:
            return seconds_to_wait(exc.response.headers)
        if status in FATAL_STATUSES:
            self._stop(f"{FATAL_STATUSES[status]} ({reason})")
        raise NoSummary(reason)

    def _leave_out_option(self, reason: str) -> bool:
        """After a 400 naming an option we send, True to send the request again without it: no
        ``response_format`` or ``temperature``, and ``max_completion_tokens`` for ``max_tokens`` where
        the server asks for it (OpenAI's reasoning models). The bound on the answer is never dropped.
        Also True when another request already left the option out, so the 400 came from before."""
        named = lambda option: re.search(rf"\b{option}\b", reason)  # noqa: E731
        with self.db_lock:
            if named("max_tokens") and named("max_completion_tokens"):
                if "max_tokens" in self.options:
                    self.options["max_completion_tokens"] = self.options.pop("max_tokens")
                    log.info("the LLM server takes max_completion_tokens instead of max_tokens; sending that")
                return True
            for option in ("response_format", "temperature"):
                if named(option):
                    if self.options.pop(option, None) is not None:
                        log.info("the LLM server does not take %s; the run's requests go without it", option)
                    return True
        return False

    def _back_off(self, attempt: int, retry_after: float) -> None:
        """Sleep before the next attempt: exponential with jitter, at least what Retry-After asked."""
        wait = max(retry_after, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt) * random.uniform(0.5, 1.0))
        if time.monotonic() + wait >= self.deadline:
            raise NoSummary(f"retrying in {wait:.0f}s would pass the deadline")
        if self.closed.wait(wait):
            raise NoSummary("the deadline passed")

    def _request_timeout(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0 or self.closed.is_set():
            raise NoSummary("the deadline passed")
        return min(self.llm.timeout, remaining)

    # -- the budget and the call log ----------------------------------------------------------------

    def _reserve(self, estimate: int) -> None:
        """Hold ``estimate`` tokens of today's budget for one request, or raise :class:`NoSummary`.

        While other requests are in flight their estimates are held too; when those alone block this
        one, wait for them to come back (they usually cost less than estimated) before calling the
        budget spent."""
        with self.db_lock:
            while True:
                if self.stopped:
                    raise NoSummary(self.stopped)
                if self.closed.is_set() or time.monotonic() >= self.deadline:
                    raise NoSummary("the deadline passed")
                spent = tokens_spent(self.db, self._day())
                if spent + self.reserved + estimate <= self.llm.daily_token_budget or not self.reserved:
                    break
                self.db_lock.wait(timeout=max(0.01, self.deadline - time.monotonic()))
            if spent + estimate > self.llm.daily_token_budget:
                self.stopped = "the daily token budget is spent"
                log.warning("summaries: the daily token budget of %d is spent (%d used today); the remaining "
                            "papers get the abstract", self.llm.daily_token_budget, spent)
                raise NoSummary(self.stopped)
            self.reserved += estimate

    def _stop(self, reason: str) -> None:
        with self.db_lock:
            if not self.stopped:
                self.stopped = reason
                log.error("summaries stopped: %s; the remaining papers get the abstract", reason)

    def _record(self, paper: Paper, call: Answer, status: str, error: str | None) -> None:
        self._insert_call(paper, status, error, call.duration, call.prompt_tokens, call.completion_tokens,
                          call.reserved)

    def _record_error(self, paper: Paper, error: str, estimate: int, started: float) -> None:
        self._insert_call(paper, "error", error, time.monotonic() - started, 0, 0, estimate)

    def _insert_call(self, paper: Paper, status: str, error: str | None, duration: float, prompt_tokens: int,
                     completion_tokens: int, release: int) -> None:
        with self.db_lock:
            self.reserved -= release
            self.db_lock.notify_all()
            if self.closed.is_set():
                return
            record_call(self.db, self._day(), paper.id, self.llm.model, prompt_tokens, completion_tokens, status,
                        _redact(error, self.llm)[:500] if error else None, duration, self._stamp())

    def _save(self, paper: Paper, fields: dict[str, str], prompt_version: str) -> None:
        with self.db_lock:
            if not self.closed.is_set():
                save_summary(self.db, paper, fields, self.llm, prompt_version, self._stamp())

    def _day(self) -> dt.date:
        return (self.now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).date()

    def _stamp(self) -> str:
        return iso(self.now or dt.datetime.now(dt.timezone.utc))


def _answer_of(completion, duration: float, estimate: int, max_tokens: int) -> Answer:
    """The parts of an OpenAI completion we use. Servers that report no usage are charged the estimate,
    so a budget still holds against them."""
    usage = getattr(completion, "usage", None)
    choice = completion.choices[0] if completion.choices else None
    message = choice.message if choice else None
    content = message.content if message else None
    prompt_tokens = getattr(usage, "prompt_tokens", None)
    completion_tokens = getattr(usage, "completion_tokens", None)
    if prompt_tokens is None or completion_tokens is None:
        prompt_tokens = estimate - max_tokens
        completion_tokens = len(content or "") // CHARS_PER_TOKEN
    return Answer(content=content, refusal=getattr(message, "refusal", None) if message else None,
                  cut_off=getattr(choice, "finish_reason", None) == "length", prompt_tokens=int(prompt_tokens),
                  completion_tokens=int(completion_tokens), duration=duration, reserved=estimate)


def _estimate_tokens(messages: list[dict], max_tokens: int) -> int:
    """The most one request can cost: its prompt at 4 characters a token, and the longest answer it allows."""
    chars = sum(len(m["content"]) for m in messages)
    return chars // CHARS_PER_TOKEN + max_tokens


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return " ".join(str(message).split())[:300]
    return " ".join(str(exc.message).split())[:300]


def _redact(text: str, llm: LLMSettings) -> str:
    """The API key out of an error (a proxy may quote our headers), in clear and in base64."""
    return redact(text, [llm.api_key.reveal()] if llm.api_key else [])
