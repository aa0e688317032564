"""What a run needs, tried now and sending nothing: arXiv's hosts resolving and answering, and the LLM
answering with the configured key and model. `digest check` prints these beside the channels' checks,
one line each; an interactive `digest run` first asks only whether arXiv's hosts resolve, so a machine
that is offline hears so in seconds, not after a minute of retries (the daemon's runs keep retrying:
a network that is down at 07:00 is often back at 07:05).
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.parse

from .config import Settings
from .http_bounds import bounded_hooks
from .logs import redact

RESOLVE_SECONDS = 5.0  # a resolver that has not answered by then will not help a person waiting at a terminal
CHECK_SECONDS = 10.0  # the longest one check of `digest check` waits for an answer

Result = tuple[str, bool, str]  # (what, worked, what worked or what failed), as deliver.check_channels


def arxiv_hosts(settings: Settings) -> list[str]:
    """The hosts a run asks: the feed's (the latest day) and the API's (older days, seed papers)."""
    urls = (settings.arxiv.feed_url, settings.arxiv.api_url)
    return list(dict.fromkeys(host for host in (urllib.parse.urlsplit(url).hostname for url in urls) if host))


def unresolved(hosts: list[str], timeout: float = RESOLVE_SECONDS) -> str | None:
    """Why the first of ``hosts`` that cannot be resolved cannot, or None when all resolve. Each is looked
    up in a thread of its own: the system's resolver cannot be interrupted, only left behind."""
    answers: dict[str, str | None] = {}

    def look_up(host: str) -> None:
        try:
            socket.getaddrinfo(host, None)
            answers[host] = None
        except Exception as exc:  # socket.gaierror mostly; UnicodeError for a name IDNA cannot encode
            answers[host] = f"cannot resolve {host} ({getattr(exc, 'strerror', None) or exc})"

    threads = [threading.Thread(target=look_up, args=(host,), daemon=True) for host in hosts]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for host in hosts:
        if host not in answers:
            return f"cannot resolve {host} (no answer from the resolver in {timeout:.0f} s)"
        if answers[host]:
            return answers[host]
    return None


def check_arxiv(settings: Settings) -> list[Result]:
    """One line per arXiv URL a run uses: its host resolves and it answers HTTP (one request each, through
    the polite session, without retries)."""
    from .arxiv.feed import feed_url  # requests and lxml: only for the check itself
    from .arxiv.http import ArxivError, PoliteSession

    categories = settings.feed_categories()[:1] or ["cs.AI"]
    urls = {"arxiv feed": feed_url(settings, categories),
            "arxiv api": f"{settings.arxiv.api_url}?id_list=2401.00001&max_results=1"}
    results = []
    for what, url in urls.items():
        host = urllib.parse.urlsplit(url).hostname or url
        reason = unresolved([host])
        if reason:
            results.append((what, False, reason))
            continue
        arxiv = settings.arxiv.model_copy(update={"retries": 0, "timeout": min(settings.arxiv.timeout,
                                                                                 CHECK_SECONDS)})
        session = PoliteSession(settings.model_copy(update={"arxiv": arxiv}))
        started = time.monotonic()
        try:
            with session.get(url, stream=True) as response:
                took = time.monotonic() - started
                worked = response.status_code < 400
                results.append((what, worked, f"{host} answered HTTP {response.status_code} in {took:.1f} s"))
        except ArxivError as exc:
            results.append((what, False, str(exc)))
        finally:
            session.close()
    return results


def check_llm(settings: Settings) -> Result:
    """One short request to the configured model with the configured key (its tokens are not counted
    against the daily budget: a check is not a run)."""
    llm = settings.llm
    if not llm.enabled:
        return "llm", True, "none configured (llm.model is empty): digests show abstracts"
    import openai  # heavy: only for the check itself

    host = urllib.parse.urlsplit(llm.base_url).hostname or llm.base_url
    reason = unresolved([host])
    if reason:
        return "llm", False, reason
    client = openai.OpenAI(base_url=llm.base_url, api_key=llm.api_key.reveal() if llm.api_key else "no-key",
                           timeout=min(llm.timeout, CHECK_SECONDS), max_retries=0,
                           http_client=openai.DefaultHttpxClient(event_hooks=bounded_hooks()))  # as a run's
    started = time.monotonic()
    try:
        client.chat.completions.create(model=llm.model, messages=[{"role": "user", "content": "Answer: OK"}])
    except openai.APIStatusError as exc:
        why = {401: "the key was refused", 403: "the key may not use it", 404: "no such model"}.get(
            exc.status_code, "an error")
        return "llm", False, redact(f"{llm.model} at {host}: {why} (HTTP {exc.status_code})", settings.secrets())
    except openai.APIConnectionError as exc:
        what = "timed out" if isinstance(exc, openai.APITimeoutError) else "cannot connect"
        return "llm", False, f"{llm.model} at {host}: {what}"
    finally:
        client.close()
    return "llm", True, f"{llm.model} at {host} answered in {time.monotonic() - started:.1f} s"
