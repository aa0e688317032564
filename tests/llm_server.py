"""A loopback server speaking OpenAI's ``POST /v1/chat/completions``, with behaviours a test scripts.

    with LLMServer() as llm:                     # or LLMServer().start() ... llm.stop()
        llm.url                                  # http://127.0.0.1:<port>/v1, the client's base_url
        llm.latency = 1.0                        # every answer waits this long
        llm.script(rate_limited(2), ok())        # the next two requests, in arrival order
        llm.script_for("2606.01234", error())    # requests about this paper, before the general script
        llm.reject_response_format = True        # answer 400 to response_format, as some servers do
        llm.reject_options = {"max_tokens"}      # 400 with OpenAI's words for a reasoning model's options
    Behaviours: ok(), slow(s), rate_limited(retry_after), error(status), echo_headers(), malformed(),
    refusal(), refusal_text(), huge(chars), flood(mib), bomb(mib), gzipped(encoding), drip(s),
    comply() (obeys links and HTML injected into the abstract),
    answer(tldr=..., ...) (exactly these fields, the others empty), cut_off() (stopped at max_tokens).
        llm.requests[0].paper_id, llm.requests[0].usage, llm.max_in_flight

A normal answer is derived from the request so a test can check it reached the right paper: its
``tldr`` is ``"TL;DR of <title>: a sentence on ..."`` and every other field names the paper's id. Usage is counted as
one token per 4 characters of the prompt and of the answer, and reported in ``usage``.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import time
import zlib
from dataclasses import dataclass, field

from loopback import AnsweredByLoopback, LoopbackServer, Reply, Request

FAQ_FIELDS = ("problem", "related_work", "method", "experiments", "further_work", "summary")
URL = re.compile(r"https?://[^\s\"'<>)\]]+")


@dataclass(frozen=True)
class Behaviour:
    """How the server answers one request."""

    # ok, rate_limited, error, echo_headers, malformed, refusal, refusal_text, huge, flood, bomb, gzipped, drip,
    # comply, answer, cut_off
    kind: str
    status: int = 200
    delay: float = 0.0
    retry_after: str | None = None
    size: int = 0  # characters per field of a huge answer
    fields: tuple = ()  # (key, value) pairs of an answer()


def ok(delay: float = 0.0) -> Behaviour:
    return Behaviour("ok", delay=delay)


def slow(seconds: float) -> Behaviour:
    """A normal answer after ``seconds`` (on top of :attr:`LLMServer.latency`)."""
    return Behaviour("ok", delay=seconds)


def rate_limited(retry_after: float | str | None = 1) -> Behaviour:
    return Behaviour("rate_limited", status=429, retry_after=None if retry_after is None else str(retry_after))


def error(status: int = 500) -> Behaviour:
    return Behaviour("error", status=status)


def echo_headers(status: int = 400) -> Behaviour:
    """An error whose message quotes the request's headers, as a careless proxy's might."""
    return Behaviour("echo_headers", status=status)


def malformed() -> Behaviour:
    """HTTP 200 whose message content is not JSON at all (truncated braces)."""
    return Behaviour("malformed")


def refusal() -> Behaviour:
    """OpenAI's structured refusal: ``message.refusal`` set, ``content`` null."""
    return Behaviour("refusal")


def refusal_text() -> Behaviour:
    """A local model's plain-text apology where JSON was asked for."""
    return Behaviour("refusal_text")


def huge(chars: int = 200_000) -> Behaviour:
    """Valid JSON whose every field is ``chars`` characters long."""
    return Behaviour("huge", size=chars)


def flood(mib: int = 20) -> Behaviour:
    """HTTP 200 with a body of ``mib`` MiB: a server gone wrong."""
    return Behaviour("flood", size=mib * 2**20)


def bomb(mib: int = 1024) -> Behaviour:
    """HTTP 200, gzip-encoded, a few hundred KB that decompress to ``mib`` MiB: a hostile server."""
    return Behaviour("bomb", size=mib * 2**20)


def gzipped(encoding: str = "gzip") -> Behaviour:
    """A normal answer, compressed (``gzip``, or ``deflate`` as zlib or as raw deflate: ``raw-deflate``, which
    servers also send as "deflate"), as a server behind a compressing proxy sends it."""
    return Behaviour("gzipped", fields=(("encoding", encoding),))


def drip(seconds: float = 0.05) -> Behaviour:
    """A normal answer sent a byte every ``seconds``: each within any timeout, the whole within none."""
    return Behaviour("drip", size=int(seconds * 1000))  # size: milliseconds between two bytes


def answer(**fields: str) -> Behaviour:
    """Exactly these fields, every other one empty: what a small local model answered, say."""
    return Behaviour("answer", fields=tuple(fields.items()))


def cut_off() -> Behaviour:
    """The server stopped the answer at max_tokens: half a JSON object, finish_reason "length"."""
    return Behaviour("cut_off")


def comply() -> Behaviour:
    """A gullible model: obeys the abstract, puts every URL of the prompt and some HTML into its answer."""
    return Behaviour("comply")


@dataclass
class LLMRequest:
    """One request as the server saw it, with what it answered."""

    at: float  # time.monotonic() on arrival
    body: dict
    headers: dict[str, str]
    paper_id: str
    title: str
    behaviour: Behaviour
    status: int
    usage: dict = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        return "\n".join(str(m.get("content", "")) for m in self.body.get("messages", []))

    @property
    def asked_json(self) -> bool:
        return "response_format" in self.body


class LLMServer(AnsweredByLoopback):
    def __init__(self, latency: float = 0.0):
        self.latency = latency
        self.reject_response_format = False
        self.reject_options: set[str] = set()
        self.requests: list[LLMRequest] = []
        self._script: list[Behaviour] = []
        self._per_paper: dict[str, list[Behaviour]] = {}
        self._lock = threading.Lock()
        self.http = LoopbackServer()
        self.http.routes["/v1/chat/completions"] = self._answer

    # -- the API tests use ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{self.http.url}/v1"

    @property
    def max_in_flight(self) -> int:
        return self.http.max_in_flight

    def script(self, *behaviours: Behaviour) -> None:
        """Answer the next requests (in arrival order) with these; afterwards answer normally."""
        with self._lock:
            self._script += behaviours

    def script_for(self, paper_id: str, *behaviours: Behaviour) -> None:
        """Answer the next requests about ``paper_id`` with these, whatever order they arrive in."""
        with self._lock:
            self._per_paper.setdefault(paper_id, []).extend(behaviours)

    def for_paper(self, paper_id: str) -> list[LLMRequest]:
        return [r for r in self.requests if r.paper_id == paper_id]

    # -- answering --------------------------------------------------------------------------------

    def _answer(self, request: Request) -> Reply:
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return _json_reply(400, {"error": {"message": "request body is not JSON"}})
        prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        paper_id = _first(r"arXiv id: (\S+)", prompt)
        title = _first(r"Title: (.*)", prompt)
        with self._lock:
            queue = self._per_paper.get(paper_id)
            behaviour = queue.pop(0) if queue else (self._script.pop(0) if self._script else ok())
        logged = LLMRequest(request.at, body, request.headers, paper_id, title, behaviour, 200)
        with self._lock:
            self.requests.append(logged)
        reply = self._reply(body, prompt, paper_id, title, behaviour, logged)
        reply.delay = self.latency + behaviour.delay
        logged.status = reply.status
        return reply

    def _reply(self, body: dict, prompt: str, paper_id: str, title: str, behaviour: Behaviour,
               logged: LLMRequest) -> Reply:
        if self.reject_response_format and "response_format" in body:
            return _json_reply(400, {"error": {"message": "Invalid parameter: 'response_format' is not supported "
                                                          "by this model.", "param": "response_format"}})
        rejected = self.reject_options & set(body)
        if rejected:
            return _json_reply(400, {"error": {"message": OPTION_ERRORS[sorted(rejected)[0]]}})
        if behaviour.kind == "rate_limited":
            headers = {"Retry-After": behaviour.retry_after} if behaviour.retry_after is not None else {}
            return _json_reply(429, {"error": {"message": "Rate limit reached"}}, headers)
        if behaviour.kind == "echo_headers":
            return _json_reply(behaviour.status, {"error": {"message": f"bad request with headers {logged.headers}"}})
        if behaviour.kind == "error":
            return _json_reply(behaviour.status, {"error": {"message": "The server had an error"}})
        if behaviour.kind == "flood":
            return Reply(200, b'{"id": "' + b"x" * behaviour.size + b'"}', content_type="application/json")
        if behaviour.kind == "bomb":
            return Reply(200, _gzip_of_spaces(behaviour.size), headers={"Content-Encoding": "gzip"},
                         content_type="application/json")
        if behaviour.kind == "gzipped":
            reply = self._reply(body, prompt, paper_id, title, ok(), logged)
            encoding = dict(behaviour.fields)["encoding"]
            packed = {"gzip": gzip.compress, "deflate": zlib.compress,
                      "raw-deflate": lambda data: zlib.compress(data, wbits=-zlib.MAX_WBITS)}[encoding]
            return Reply(reply.status, packed(reply.body.encode()),
                         headers={"Content-Encoding": encoding.removeprefix("raw-")}, content_type=reply.content_type)
        if behaviour.kind == "drip":
            reply = self._reply(body, prompt, paper_id, title, ok(), logged)
            reply.drip = behaviour.size / 1000
            return reply
        content, refusal_message = self._content(prompt, paper_id, title, behaviour)
        logged.usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(content or refusal_message) // 4}
        logged.usage["total_tokens"] = logged.usage["prompt_tokens"] + logged.usage["completion_tokens"]
        return _json_reply(200, {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [{"index": 0, "finish_reason": "length" if behaviour.kind == "cut_off" else "stop", "message": {
                "role": "assistant", "content": content, "refusal": refusal_message or None}}],
            "usage": logged.usage,
        })

    def _content(self, prompt: str, paper_id: str, title: str, behaviour: Behaviour) -> tuple[str | None, str]:
        """(message content, refusal text)."""
        if behaviour.kind in ("malformed", "cut_off"):
            return '{"tldr": "cut off in the midd', ""
        if behaviour.kind == "answer":
            return json.dumps({key: "" for key in ("tldr",) + FAQ_FIELDS} | dict(behaviour.fields)), ""
        if behaviour.kind == "refusal":
            return None, "I'm sorry, I can't help with that."
        if behaviour.kind == "refusal_text":
            return "I'm sorry, but I cannot summarize this paper.", ""
        answer = normal_answer(paper_id, title)
        if behaviour.kind == "huge":
            answer = {key: (value + " ") * (behaviour.size // len(value)) for key, value in answer.items()}
        if behaviour.kind == "comply":
            links = " ".join(URL.findall(prompt)) or "http://evil.example"
            answer["tldr"] = f"{answer['tldr']} See {links} and <a href=\"{links}\">here</a>."
            answer["summary"] = f"[click]({links}) <script>alert(1)</script> www.evil.example/x"
        return json.dumps(answer), ""


def _gzip_of_spaces(size: int) -> bytes:
    """``{"id": "<size spaces>"}`` gzip-compressed, a MiB at a time (the whole never in memory)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [packer.compress(b'{"id": "')]
    parts += [packer.compress(b" " * 2**20) for _ in range(size // 2**20)]
    return b"".join(parts + [packer.compress(b'"}'), packer.flush()])


def normal_answer(paper_id: str, title: str) -> dict[str, str]:
    """What the server answers for a paper when nothing odd is scripted."""
    answer = {"tldr": f"TL;DR of {title}: a sentence on what the paper does and finds."}
    answer.update({key: f"{key} of {paper_id}" for key in FAQ_FIELDS})
    return answer


# What OpenAI answers a reasoning model (o1, o3, gpt-5) sent the options a chat model takes.
OPTION_ERRORS = {
    "max_tokens": "Unsupported parameter: 'max_tokens' is not supported with this model. "
                  "Use 'max_completion_tokens' instead.",
    "temperature": "Unsupported value: 'temperature' does not support 0.2 with this model. "
                   "Only the default (1) value is supported.",
}


def _first(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    return match.group(1).strip() if match else ""


def _json_reply(status: int, payload: dict, headers: dict | None = None) -> Reply:
    return Reply(status=status, body=json.dumps(payload), headers=headers or {},
                 content_type="application/json")


if __name__ == "__main__":  # by hand: an OpenAI-compatible server answering every paper with normal_answer
    from loopback import serve_until_interrupted

    server = LLMServer()
    serve_until_interrupted(server, "Put this in digest's configuration:", "",
                            f'[llm]\nbase_url = "{server.url}"\nmodel = "test-model"\napi_key = "any"')
