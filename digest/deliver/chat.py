"""Chat through apprise URLs (Slack, Discord, Telegram, Matrix, Mattermost, ntfy, JSON webhooks, ...).

The top section goes out as one message that fits the service's length limit (apprise's
``body_maxlen`` for that service, or :data:`MESSAGE_BYTES` where that is not what the service takes);
the complete digest follows as an HTML attachment where the service takes files (:func:`takes_files`)
and the target's ``attach`` is on, otherwise the whole Markdown digest is split at line boundaries over
as many messages as it needs. Nothing is dropped either way. Lengths are counted in UTF-8 bytes, which
is never less than the characters most services count.

apprise reports only success or failure; the HTTP status of a failure is in the warning it logs
("... error=429."), which is what tells a retry (429, 5xx, no answer) from a give-up (other 4xx).
Matrix needs a little more (:mod:`.matrix`): apprise would create a room that does not exist.
"""

from __future__ import annotations

import http.client
import re
import ssl
import tempfile
import urllib.parse
from pathlib import Path

import apprise
import requests

from ..config import ChatTarget, Settings
from ..records import Digest, Rendered
from ..render import MARKDOWN_BREAK
from ..storage.outbox import Claim
from . import matrix
from .errors import PermanentFailure, TransientFailure

# Room left for the service's own markup: apprise converts Markdown to the service's dialect after we
# measured it, which lengthens a message a little.
LENGTH_MARGIN = 0.9
SMALLEST_LIMIT = 500
HTTP_SCHEMES = {"json": "http", "jsons": "https", "form": "http", "forms": "https", "xml": "http",
                "xmls": "https"}
# Per message, in UTF-8 bytes, where apprise's body_maxlen is not what the service takes. Matrix: one
# event may hold 65,536 bytes (the spec's size limits) and apprise puts a Markdown message in it twice,
# as text and as HTML (longer: links, tags), so a message of 58,500 was refused with HTTP 413 by Synapse.
MESSAGE_BYTES = {"matrix": 24_000}
# apprise sleeps inside notify() as long as a service asks (Matrix's retry_after_ms, Discord's rate-limit
# reset): a homeserver that asks for a day would hold the sender, and every channel queued behind it, for a
# day. A longer wait is cut to this; a service still limiting then fails the part as a 429, and the outbox
# tries it again at its own back-off, with nothing sent twice.
LONGEST_WAIT = 30.0  # seconds


def send_chat(claim: Claim, rendered: Rendered, digest: Digest, settings: Settings) -> None:
    target = settings.chat.get(claim.target)
    if target is None:
        raise PermanentFailure(f"no chat target named {claim.target!r} in [chat] any more")
    service = _service(claim.target, target)
    plugin = service[0]
    if matrix.is_matrix(target.url.reveal()):
        _rooms_exist(plugin, claim.target, settings.email.timeout)
    name = f"digest-{digest.profile}-{digest.day}.html"
    messages, with_file = plan_messages(plugin, rendered.markdown, target.attach, digest.announced, name)
    # apprise's Matrix plugin reads an attachment from its path (one held in memory fails there), so the
    # HTML goes through a file in a folder of our own, gone when the delivery ends.
    with tempfile.TemporaryDirectory(prefix="digest-chat-") as folder:
        attachment = None
        if with_file:
            attachment = Path(folder) / name
            attachment.write_text(rendered.html, encoding="utf-8")
        for index in range(claim.parts_sent, len(messages)):  # a retry resumes after the last part that went out
            _notify(service, claim.target, messages[index], str(attachment) if attachment and index == 0 else None)
            claim.part_sent(index + 1)


def plan_messages(plugin, markdown: str, attach: bool, papers: int, name: str) -> tuple[list[str], bool]:
    """What the reader of this service gets: (the messages in order, whether the first carries the
    complete digest as the HTML file ``name``). Pure: nothing is sent."""
    limit = message_limit(plugin)
    if attach and takes_files(plugin):
        return [head_message(markdown, limit, papers, name)], True
    return split_message(markdown, limit), False


def takes_files(plugin) -> bool:
    """Whether the file reaches the reader: apprise's Slack webhooks drop it with a warning (only a bot
    token uploads files), which would leave the reader the top section alone."""
    if not plugin.attachment_support:
        return False
    return not (plugin.service_name == "Slack" and getattr(plugin, "mode", "bot") != "bot")


def send_text(settings: Settings, name: str, body: str) -> None:
    """A short message (a failure notice) to one chat target, tried once: no outbox, no retry."""
    target = settings.chat.get(name)
    if target is None:
        raise PermanentFailure(f"no chat target named {name!r} in [chat] any more")
    _notify(_service(name, target), name, body, None)


def message_limit(plugin) -> int:
    """UTF-8 bytes one message may hold on this service, with room for apprise's own markup."""
    maxlen = plugin.body_maxlen if plugin.body_maxlen and plugin.body_maxlen > 0 else 4000
    maxlen = min(maxlen, MESSAGE_BYTES.get(plugin.protocol if isinstance(plugin.protocol, str) else "", maxlen))
    return max(int(maxlen * LENGTH_MARGIN), SMALLEST_LIMIT)


def size(text: str) -> int:
    return len(text.encode("utf-8"))


def head_message(markdown: str, limit: int, papers: int, attachment_name: str) -> str:
    """The top section, cut at a paragraph so it fits, and a line saying where everything else is."""
    note = f"\n\n_All {papers} papers, with every summary, are in the attached {attachment_name}._"
    head = markdown.split(MARKDOWN_BREAK, 1)[0].strip()
    kept = ""
    for paragraph in head.split("\n\n"):
        candidate = f"{kept}\n\n{paragraph}" if kept else paragraph
        if size(candidate) + size(note) > limit:
            break
        kept = candidate
    if not kept:  # not even the heading fits: a hard cut, the attachment has it all
        kept = next(_pieces(head, max(limit - size(note), 1)))
    return (kept + note).strip()


def split_message(markdown: str, limit: int) -> list[str]:
    """The whole digest over as few messages as fit, cut between lines (a line too long for one message
    is cut inside). Joined back with newlines, the parts give every line of the digest."""
    messages: list[str] = []
    current = ""
    for line in _lines_within(markdown.strip().split("\n"), limit):
        candidate = f"{current}\n{line}" if current else line
        if size(candidate) > limit and current.strip():
            messages.append(current.strip("\n"))
            candidate = line
        current = candidate
    if current.strip():
        messages.append(current.strip("\n"))
    return messages


def _lines_within(lines: list[str], limit: int):
    for line in lines:
        yield from _pieces(line, limit)


def _pieces(line: str, limit: int):
    """The line cut into pieces of at most ``limit`` bytes, between words where it can, never inside a
    character."""
    while size(line) > limit:
        low, high = 1, min(len(line), limit)  # the longest prefix that fits, by bisection
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if size(line[:middle]) <= limit else (low, middle - 1)
        space = line.rfind(" ", 0, low + 1)  # between words, so no link or arXiv id is cut in two
        cut = space + 1 if space > low // 2 else low
        yield line[:cut]
        line = line[cut:]
    yield line


def _service(name: str, target: ChatTarget) -> apprise.Apprise:
    service = apprise.Apprise()
    if not service.add(target.url.reveal()):
        raise PermanentFailure(f"chat.{name}.url: apprise does not recognise this URL")
    _bound_waits(service[0])
    return service


def _bound_waits(plugin) -> None:
    """Cut any wait a service asks apprise for to :data:`LONGEST_WAIT` (apprise has no setting for it; its
    Matrix plugin's ``max_retry_wait`` is not reachable from ``notify``)."""
    throttle = plugin.throttle

    def bounded(last_io=None, wait=None):
        return throttle(last_io=last_io, wait=None if wait is None else min(wait, LONGEST_WAIT))

    plugin.throttle = bounded


def _notify(service: apprise.Apprise, name: str, body: str, attachment) -> None:
    result = service.notify(body=body, title="", body_format=apprise.NotifyFormat.MARKDOWN,
                            attach=[attachment] if attachment is not None else None)
    if result:
        return
    problems = [entry.message for entry in result.logs() if entry.level in ("WARNING", "ERROR")]
    # the cause and what it stopped (Matrix warns twice: "A Connection error ...", "Could not send ...")
    detail = " ".join(" ".join(dict.fromkeys(problems[-2:])).split()) or "the service did not accept the message"
    codes = [int(code) for code in re.findall(r"error=(\d{3})", " ".join(problems))]
    status = codes[-1] if codes else None
    # Matrix's M_LIMIT_EXCEEDED: apprise waits its retry_after_ms and tries again, twice at most
    waits = re.findall(r"throttle back (\d+)ms; retries left 0", " ".join(problems))
    if waits:  # apprise waited as told and was told again: the outbox tries later
        raise TransientFailure(f"chat {name}: the homeserver is limiting the rate (M_LIMIT_EXCEEDED, asked to wait "
                               f"{waits[-1]} ms)")
    detail = (matrix.failure(service[0], status) if service[0].service_name == "Matrix" else None) or detail
    if status is not None and 400 <= status < 500 and status not in (408, 425, 429):
        raise PermanentFailure(f"chat {name}: {detail}")
    raise TransientFailure(f"chat {name}: {detail}")


def _rooms_exist(plugin, name: str, timeout: float) -> None:
    """Fail for good before anything is posted when a room alias names no room (apprise would create it)."""
    try:
        missing = matrix.missing_rooms(plugin, timeout)
    except requests.exceptions.SSLError:
        raise PermanentFailure(f"chat {name}: {plugin.host}: TLS certificate not trusted; for a private CA, set "
                               f"REQUESTS_CA_BUNDLE in digest's environment") from None
    except requests.RequestException as exc:
        raise TransientFailure(f"chat {name}: {plugin.host}: the homeserver is not reachable: {_reason(exc)}") \
            from None
    if missing:
        raise PermanentFailure(f"chat {name}: no Matrix room {', '.join(missing)} on {plugin.host} (apprise would "
                               f"create it, and nobody would read it)")


def check_chat(name: str, target: ChatTarget, settings: Settings) -> tuple[str, bool, str]:
    """Whether the URL is one apprise understands and, for plain HTTP webhooks, whether the host answers.
    Other services cannot be tried without posting a message, and this never posts one."""
    channel = f"chat {name}"
    url = target.url.reveal()
    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        return channel, False, f"chat.{name}.url: apprise does not recognise this URL"
    scheme = url.split("://", 1)[0].lower()
    if matrix.is_matrix(url):
        try:
            return (channel, *matrix.check(plugin, settings.email.timeout))
        except requests.RequestException as exc:
            return channel, False, f"{plugin.host}: the homeserver is not reachable: {_reason(exc)}"
    if scheme not in HTTP_SCHEMES:
        return channel, True, (f"{plugin.service_name} URL understood; not contacted, since apprise can only "
                               f"test it by sending a message")
    parts = urllib.parse.urlsplit(HTTP_SCHEMES[scheme] + "://" + url.split("://", 1)[1])
    host, port = parts.hostname or "", parts.port
    try:
        status = _head(HTTP_SCHEMES[scheme], host, port, settings.email.timeout)
    except (OSError, http.client.HTTPException) as exc:
        return channel, False, f"{host}{':' + str(port) if port else ''}: not reachable: {_reason(exc)}"
    return channel, True, f"{host}{':' + str(port) if port else ''} answered HEAD / with HTTP {status} (nothing sent)"


def _head(scheme: str, host: str, port: int | None, timeout: float) -> int:
    if scheme == "https":
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("HEAD", "/")
        return connection.getresponse().status
    finally:
        connection.close()


def _reason(exc: BaseException) -> str:
    text = " ".join(str(getattr(exc, "strerror", None) or exc or type(exc).__name__).split())
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)  # requests nests the socket's error deep inside
    if errno:
        return errno.group(1).strip()
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS certificate not trusted"
    return text
