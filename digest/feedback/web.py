"""The feedback links' web endpoint: a WSGI app served by waitress on a thread of `digest daemon`.

GET only shows a page with a button; the vote is cast by the button's POST. Mail scanners and link
previewers fetch every link in a message, so a GET that recorded would like and dislike every paper.
A bad token (forged, altered, expired) gets a plain 403 and changes nothing. Pages are sent with
no-referrer (the token is in the URL), no-store, and a CSP that forbids every script and frame.
"""

from __future__ import annotations

import datetime as dt
import functools
import http
import logging
import threading
import urllib.parse
from contextlib import closing
from typing import Callable

import jinja2

from ..config import Settings
from ..storage.db import open_db
from ..storage.feedback import clear_feedback, own_vote, set_feedback
from ..storage.papers import get_paper
from ..text import clean_untrusted, one_line
from .links import BadLink, KeyRefused, Vote, vote_of

log = logging.getLogger(__name__)

MAX_FORM_BYTES = 1024
HEADERS = [
    ("Content-Type", "text/html; charset=utf-8"),
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                "frame-ancestors 'none'"),
]
WORDS = {"like": "More like this", "dislike": "Less like this"}


def feedback_app(settings: Callable[[], Settings], now: Callable[[], dt.datetime] | None = None):
    """The WSGI application. ``settings`` is called per request, so a reloaded configuration applies."""
    now = now or (lambda: dt.datetime.now(dt.timezone.utc))

    def app(environ, start_response):
        try:
            return answer(environ, start_response)
        except Exception as exc:  # one line in the log, a plain page for the reader; the daemon goes on
            log.error("feedback link: could not answer: %s", one_line(exc))
            return _reply(start_response, 500, _page("Sorry", message="digest could not record this now; "
                                                                      "try the link again later."))

    def answer(environ, start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        # Only the last two segments count, so a reverse proxy may mount this under any prefix.
        parts = environ.get("PATH_INFO", "").rstrip("/").split("/")
        if len(parts) < 2 or parts[-2] != "feedback" or method not in ("GET", "HEAD", "POST"):
            return _reply(start_response, 404, _page("Not found"))
        current = settings()
        try:
            vote = vote_of(current, urllib.parse.unquote(parts[-1]), now())
        except KeyRefused:  # logged once by signing_key; a link cannot be trusted without a key
            return _reply(start_response, 503, _page("Not now", message="digest cannot check links now; "
                                                                        "nothing was recorded."))
        except BadLink:
            return _reply(start_response, 403, _page("Forbidden", message="This link is not valid (or has expired)."))
        if method == "POST":
            return _reply(start_response, 200, _act(current, vote, _form(environ).get("do", "")))
        return _reply(start_response, 200, _confirm(current, vote))

    return app


def _confirm(settings: Settings, vote: Vote) -> str:
    title, value = _state(settings, vote)
    if value == vote.value:
        return _page("Already noted", vote, title, "You told digest this before; nothing more to do.",
                     button="Undo", do="undo", button_class="quiet")
    return _page(f"{WORDS[vote.action]}?", vote, title, f"Future digests for profile {vote.profile} will rank "
                 f"papers like this one {'higher' if vote.value > 0 else 'lower'}.",
                 button=WORDS[vote.action], do="record")


def _act(settings: Settings, vote: Vote, do: str) -> str:
    """Record or undo; both idempotent, so a second click or a re-sent form changes nothing more."""
    with closing(open_db(settings.database_path(), migrate=False)) as db:
        title, value = _state(settings, vote, db)
        if do == "undo":
            if value != vote.value:
                return _page("Nothing to undo", vote, title)
            clear_feedback(db, [vote.paper_id], profile=vote.profile)
            log.info("feedback link: undid %s of %s for profile %s", vote.action, vote.paper_id, vote.profile)
            return _page("Undone", vote, title, "digest forgot this vote.", button=WORDS[vote.action], do="record",
                         button_class="quiet")
        if value == vote.value:
            return _page("Already noted", vote, title, "You told digest this before; nothing more to do.",
                         button="Undo", do="undo", button_class="quiet")
        set_feedback(db, vote.paper_id, vote.value, profile=vote.profile)
    log.info("feedback link: %s %s for profile %s", vote.action, vote.paper_id, vote.profile)
    return _page("Noted, thank you", vote, title, f"{WORDS[vote.action]}: future digests for profile "
                 f"{vote.profile} take it into account.", button="Undo", do="undo", button_class="quiet")


def _state(settings: Settings, vote: Vote, db=None) -> tuple[str, int | None]:
    """The paper's title and the profile's own current vote on it."""
    if db is None:
        with closing(open_db(settings.database_path(), migrate=False)) as own:
            return _state(settings, vote, own)
    paper = get_paper(db, vote.paper_id)
    return (clean_untrusted(paper.title) if paper else ""), own_vote(db, vote.paper_id, vote.profile)


def _form(environ) -> dict[str, str]:
    try:
        length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_FORM_BYTES)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length).decode("utf-8", "replace")
    return {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}


def _page(heading: str, vote: Vote | None = None, title: str = "", message: str = "", *, button: str = "",
          do: str = "", button_class: str = "") -> str:
    return _template().render(heading=heading, title=title or (vote and f"arXiv:{vote.paper_id}") or "",
                              paper_id=vote.paper_id if vote else "", profile=vote.profile if vote else "",
                              message=message, button=button, do=do, button_class=button_class)


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.PackageLoader("digest", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template("feedback.html")


def _reply(start_response, status: int, body: str):
    data = body.encode()
    start_response(f"{status} {http.HTTPStatus(status).phrase}", HEADERS + [("Content-Length", str(len(data)))])
    return [data]


# -- serving -------------------------------------------------------------------------------------------

# waitress's defaults suit an application server behind a proxy, not a page anyone on the internet can
# reach: a 1 GiB body spooled to /tmp, and at 100 open connections it stops accepting until one has been idle
# for 120 s. A vote's form is a few bytes; a connection that sends nothing for IDLE_SECONDS is closed.
MAX_BODY_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_CONNECTIONS = 500
IDLE_SECONDS = 15
CLEANUP_SECONDS = 5


class FeedbackServer:
    """waitress on its own thread; ``close()`` stops it. The daemon owns one while it runs.

    The database is migrated here, once, so that requests open it without migrating: two connections
    migrating a fresh database at once would race to create the same tables."""

    def __init__(self, settings: Callable[[], Settings]):
        import waitress

        open_db(settings().database_path()).conn.close()
        host, _, port = settings().feedback.listen.rpartition(":")
        self.server = waitress.create_server(feedback_app(settings), host=host.strip("[]"), port=int(port),
                                             threads=2, ident="digest", clear_untrusted_proxy_headers=True,
                                             max_request_body_size=MAX_BODY_BYTES,
                                             max_request_header_size=MAX_HEADER_BYTES,
                                             connection_limit=MAX_CONNECTIONS, channel_timeout=IDLE_SECONDS,
                                             cleanup_interval=CLEANUP_SECONDS,
                                             asyncore_use_poll=True)  # select() fails past fd 1023
        self.thread = threading.Thread(target=self.server.run, name="feedback-server", daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.socket.getsockname()[:2]
        return f"{host}:{port}"

    def start(self) -> "FeedbackServer":
        self.thread.start()
        return self

    def close(self) -> None:
        self.server.close()
        self.thread.join(timeout=5)


def start_feedback_server(settings: Callable[[], Settings]) -> FeedbackServer | None:
    """The server, or None (logged) when it cannot listen: the digests still go out without it."""
    try:
        server = FeedbackServer(settings).start()
    except OSError as exc:
        log.error("feedback links: cannot listen on %s: %s; the links in digests will not work until it can",
                  settings().feedback.listen, exc.strerror)
        return None
    log.info("feedback links: listening on %s for %s", server.address, settings().feedback.public_url)
    return server
