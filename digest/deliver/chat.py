"""Chat through apprise URLs (Slack, Discord, Telegram, Matrix, Mattermost, ntfy, JSON webhooks, ...).

The top section goes out as one message that fits the service's length limit (apprise's
``body_maxlen`` for that service); the complete digest follows as an HTML attachment where the service
takes files and the target's ``attach`` is on, otherwise the whole Markdown digest is split at line
boundaries over as many messages as it needs. Nothing is dropped either way.

apprise reports only success or failure; the HTTP status of a failure is in the warning it logs
("... error=429."), which is what tells a retry (429, 5xx, no answer) from a give-up (other 4xx).
"""

from __future__ import annotations

import http.client
import re
import ssl
import urllib.parse

import apprise
from apprise.attachment.memory import AttachMemory

from ..config import ChatTarget, Settings
from ..ledger import Digest
from ..render import MARKDOWN_BREAK, Rendered
from .errors import PermanentFailure, TransientFailure
from .outbox import Claim

# Room left for the service's own markup: apprise converts Markdown to the service's dialect after we
# measured it, which lengthens a message a little.
LENGTH_MARGIN = 0.9
SMALLEST_LIMIT = 500
HTTP_SCHEMES = {"json": "http", "jsons": "https", "form": "http", "forms": "https", "xml": "http",
                "xmls": "https"}


def send_chat(claim: Claim, rendered: Rendered, digest: Digest, settings: Settings) -> None:
    target = settings.chat.get(claim.target)
    if target is None:
        raise PermanentFailure(f"no chat target named {claim.target!r} in [chat] any more")
    service = _service(claim.target, target)
    plugin = service[0]
    limit = message_limit(plugin)
    attachment = None
    if target.attach and plugin.attachment_support:
        name = f"digest-{digest.profile}-{digest.day}.html"
        messages = [head_message(rendered.markdown, limit, digest.announced, name)]
        attachment = AttachMemory(content=rendered.html, name=name, mimetype="text/html")
    else:
        messages = split_message(rendered.markdown, limit)
    for index in range(claim.parts_sent, len(messages)):  # a retry resumes after the last part that went out
        _notify(service, claim.target, messages[index], attachment if index == 0 else None)
        claim.part_sent(index + 1)


def send_text(settings: Settings, name: str, body: str) -> None:
    """A short message (a failure notice) to one chat target, tried once: no outbox, no retry."""
    target = settings.chat.get(name)
    if target is None:
        raise PermanentFailure(f"no chat target named {name!r} in [chat] any more")
    _notify(_service(name, target), name, body, None)


def message_limit(plugin) -> int:
    maxlen = plugin.body_maxlen if plugin.body_maxlen and plugin.body_maxlen > 0 else 4000
    return max(int(maxlen * LENGTH_MARGIN), SMALLEST_LIMIT)


def head_message(markdown: str, limit: int, papers: int, attachment_name: str) -> str:
    """The top section, cut at a paragraph so it fits, and a line saying where everything else is."""
    note = f"\n\n_All {papers} papers, with every summary, are in the attached {attachment_name}._"
    head = markdown.split(MARKDOWN_BREAK, 1)[0].strip()
    kept = ""
    for paragraph in head.split("\n\n"):
        candidate = f"{kept}\n\n{paragraph}" if kept else paragraph
        if len(candidate) + len(note) > limit:
            break
        kept = candidate
    if not kept:  # not even the heading fits: a hard cut, the attachment has it all
        kept = head[: max(limit - len(note), 0)]
    return (kept + note).strip()


def split_message(markdown: str, limit: int) -> list[str]:
    """The whole digest over as few messages as fit, cut between lines (a line too long for one message
    is cut inside). Joined back with newlines, the parts give every line of the digest."""
    messages: list[str] = []
    current = ""
    for line in _lines_within(markdown.strip().split("\n"), limit):
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit and current.strip():
            messages.append(current.strip("\n"))
            candidate = line
        current = candidate
    if current.strip():
        messages.append(current.strip("\n"))
    return messages


def _lines_within(lines: list[str], limit: int):
    for line in lines:
        while len(line) > limit:
            yield line[:limit]
            line = line[limit:]
        yield line


def _service(name: str, target: ChatTarget) -> apprise.Apprise:
    service = apprise.Apprise()
    if not service.add(target.url.reveal()):
        raise PermanentFailure(f"chat.{name}.url: apprise does not recognise this URL")
    return service


def _notify(service: apprise.Apprise, name: str, body: str, attachment) -> None:
    result = service.notify(body=body, title="", body_format=apprise.NotifyFormat.MARKDOWN,
                            attach=[attachment] if attachment is not None else None)
    if result:
        return
    problems = [entry.message for entry in result.logs() if entry.level in ("WARNING", "ERROR")]
    detail = " ".join((problems[-1] if problems else "the service did not accept the message").split())
    codes = [int(code) for code in re.findall(r"error=(\d{3})", " ".join(problems))]
    status = codes[-1] if codes else None
    if status is not None and 400 <= status < 500 and status not in (408, 425, 429):
        raise PermanentFailure(f"chat {name}: {detail}")
    raise TransientFailure(f"chat {name}: {detail}")


def check_chat(name: str, target: ChatTarget, settings: Settings) -> tuple[str, bool, str]:
    """Whether the URL is one apprise understands and, for plain HTTP webhooks, whether the host answers.
    Other services cannot be tried without posting a message, and this never posts one."""
    channel = f"chat {name}"
    url = target.url.reveal()
    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        return channel, False, f"chat.{name}.url: apprise does not recognise this URL"
    scheme = url.split("://", 1)[0].lower()
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
    return " ".join(str(getattr(exc, "strerror", None) or exc or type(exc).__name__).split())
