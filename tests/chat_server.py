"""A loopback chat webhook for tests: receives apprise's json:// posts (title, message, base64 attachments)
and answers with statuses a test scripts.

    with ChatServer() as chat:
        chat.url                      # json://127.0.0.1:<port>/hook, for a [chat.NAME] url
        chat.fail(429, times=2)       # the next two posts get HTTP 429
        chat.posts[0].message, chat.posts[0].attachments[0].text
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass

from loopback import AnsweredByLoopback, LoopbackServer, Reply, Request


@dataclass
class Attachment:
    filename: str
    mimetype: str
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")


@dataclass
class Post:
    title: str
    message: str
    attachments: list[Attachment]
    status: int  # what the server answered


class ChatServer(AnsweredByLoopback):
    def __init__(self, path: str = "/hook"):
        self.path = path
        self.posts: list[Post] = []  # accepted posts only
        self.rejected: list[Post] = []
        self.heads = 0
        self._script: list[int] = []
        self._lock = threading.Lock()
        self.http = LoopbackServer()
        self.http.routes["/"] = self._answer

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.http.port}{self.path}"

    def fail(self, status: int, times: int = 1) -> None:
        with self._lock:
            self._script += [status] * times

    def _answer(self, request: Request) -> Reply:
        if request.method == "HEAD":
            with self._lock:
                self.heads += 1
            return Reply(405, "", content_type="text/plain")
        with self._lock:
            status = self._script.pop(0) if self._script else 200
        payload = json.loads(request.body or b"{}")
        post = Post(payload.get("title", ""), payload.get("message", ""),
                    [Attachment(a["filename"], a["mimetype"], base64.b64decode(a["base64"]))
                     for a in payload.get("attachments") or []], status)
        with self._lock:
            (self.posts if status < 300 else self.rejected).append(post)
        return Reply(status, json.dumps({"ok": status < 300}), content_type="application/json")


if __name__ == "__main__":  # by hand: a JSON webhook that keeps what digest posts
    from loopback import serve_until_interrupted

    server = ChatServer()
    serve_until_interrupted(server, "Put this in digest's configuration:", "",
                            f'[chat.local]\nurl = "{server.url}"')
