"""`digest demo`: the real pipeline against arXiv, an LLM and a mail server that live on loopback.

A recorded real arXiv day (cs.CL, 2026-06-30, 136 papers; demo_data/README.md says where it comes from)
is served over HTTP as rss.arxiv.org serves it; an OpenAI-compatible stub answers summaries from each
paper's own abstract; an SMTP sink keeps what it receives as .eml files. Then `digest run` runs as a
separate process with a throw-away configuration pointing at them: the same code as production, with the
URLs pointed at loopback, arXiv's politeness delay and retries shortened, ten summaries, and feedback links
on (their signing key in the demo's folder), so the first digest a newcomer sees has its like/dislike
buttons. Nothing leaves the machine.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import secrets
import shlex
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

from .atomic import create_atomically

DAY = "2026-06-30"
CATEGORIES = "cs.CL"
FEED = f"atom_{CATEGORIES}_{DAY}.xml.gz"
INTERESTS = ["retrieval-augmented generation and hallucination", "speech recognition for low-resource languages"]
SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass
class Demo:
    folder: Path
    config: Path
    mail: Path | None  # where the SMTP sink writes; None without aiosmtpd
    returncode: int

    def digest_command(self) -> str:
        return f"digest --config {shlex.quote(str(self.config))}"


def feed_bytes() -> bytes:
    return gzip.decompress(resources.files("digest").joinpath("demo_data", FEED).read_bytes())


def stub_summary(prompt: str) -> dict:
    """An answer in the shape digest asks the LLM for, made from the abstract in ``prompt``: the demo
    shows where summaries go without a model. Every field says it is a stub."""
    abstract = re.search(r"^Abstract: (.*)$", prompt, re.M)
    sentences = SENTENCE.split(abstract.group(1)) if abstract else ["(no abstract)"]
    pick = lambda i: f"[demo stub] {sentences[min(i, len(sentences) - 1)]}"  # noqa: E731
    return {"tldr": pick(0), "problem": pick(0), "related_work": pick(1), "method": pick(2),
            "experiments": pick(3), "further_work": pick(len(sentences) - 1), "summary": pick(0)}


class _Handler(BaseHTTPRequestHandler):
    """The loopback arXiv feed and the LLM stub, on one server."""

    protocol_version = "HTTP/1.1"
    feed = b""

    def log_message(self, *args):  # the demo's own output says what happened
        pass

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.rstrip("/") == f"/atom/{CATEGORIES}":
            self._reply(200, self.feed, "application/atom+xml; charset=utf-8")
        else:
            self._reply(404, b"not in the demo\n", "text/plain")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/v1/chat/completions":
            self._reply(404, b"not in the demo\n", "text/plain")
            return
        prompt = "\n".join(m.get("content", "") for m in json.loads(body).get("messages", []))
        content = json.dumps(stub_summary(prompt))
        answer = {"id": "demo", "object": "chat.completion", "created": 0, "model": "demo-stub",
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": content}}],
                  "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(content) // 4,
                            "total_tokens": (len(prompt) + len(content)) // 4}}
        self._reply(200, json.dumps(answer).encode(), "application/json")


def _http_server() -> ThreadingHTTPServer:
    handler = type("DemoHandler", (_Handler,), {"feed": feed_bytes()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _smtp_sink(folder: Path):
    """An SMTP server on loopback that writes each message it receives to ``folder``; None when
    aiosmtpd (a test dependency, installed by `make demo`) is not installed."""
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        return None
    folder.mkdir(parents=True, exist_ok=True)

    class Keep:
        async def handle_DATA(self, server, session, envelope):
            count = len(list(folder.glob("*.eml"))) + 1
            (folder / f"{count:03d}.eml").write_bytes(envelope.original_content or envelope.content)
            return "250 OK"

    controller = Controller(Keep(), hostname="127.0.0.1", port=free_port())  # aiosmtpd needs a port first
    controller.start()
    return controller


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def feedback_key(folder: Path) -> Path:
    """The demo's own link-signing key, so the demo writes nothing outside its folder."""
    path = folder / "feedback.key"
    create_atomically(path, secrets.token_hex(32) + "\n")  # one already there is kept
    return path


def config_text(folder: Path, http_url: str, smtp_port: int | None, llm: bool, feedback_port: int) -> str:
    text = (f'[arxiv]\ncategories = "{CATEGORIES}"\ncontact = "demo@localhost"\n'
            f'feed_url = "{http_url}/atom/"\napi_url = "{http_url}/api/query"\noai_url = "{http_url}/oai"\n'
            f'html_url = "{http_url}/html/"\nmin_interval = 0.0\ntimeout = 10.0\nretries = 1\n\n'
            f'[storage]\npath = "{folder / "digest.db"}"\n\n'
            f'[files]\ndir = "{folder / "digests"}"\nalways = true\n\n'
            f'[feedback]\nlisten = "127.0.0.1:{feedback_port}"\npublic_url = "http://127.0.0.1:{feedback_port}"\n'
            f'key_file = "{feedback_key(folder)}"\n\n')
    if llm:
        text += (f'[llm]\nbase_url = "{http_url}/v1"\nmodel = "demo-stub"\napi_key = "demo-key"\n'
                 f"summarize = 10\n\n")
    if smtp_port:
        text += (f'[email]\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\n'
                 f'from = "digest@localhost"\n\n')
    text += "[profiles.me]\ninterests = " + json.dumps(INTERESTS) + "\n"
    if smtp_port:
        text += 'email_to = ["you@localhost"]\n'
    return text


def run_demo(folder: Path, llm: bool = True, echo=print) -> Demo:
    """Serve, run `digest run` against the servers, stop them. ``folder`` keeps the database, the
    configuration, the HTML digest and the received mail, for the history commands to try after."""
    folder.mkdir(parents=True, exist_ok=True)
    http = _http_server()
    smtp = _smtp_sink(folder / "mail")
    try:
        url = f"http://127.0.0.1:{http.server_address[1]}"
        config = folder / "config.toml"
        config.write_text(config_text(folder, url, smtp.port if smtp else None, llm, free_port()), encoding="utf-8")
        echo(f"Serving arXiv's recorded {CATEGORIES} announcement of {DAY} at {url}"
             + (", an LLM stub" if llm else "") + (f", and an SMTP sink on 127.0.0.1:{smtp.port}" if smtp else ""))
        echo(f"Running: digest --config {config} run\n")
        env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
        done = subprocess.run([sys.executable, "-m", "digest", "--config", str(config), "run"], env=env)
    finally:
        http.shutdown()
        if smtp:
            smtp.stop()
    return Demo(folder, config, folder / "mail" if smtp else None, done.returncode)


def describe(demo: Demo) -> list[str]:
    """Where to look, and what to try next."""
    if demo.returncode != 0:
        return [f"The run failed (exit {demo.returncode}); its output above says why."]
    lines = [""]
    pages = sorted((demo.folder / "digests").rglob("*.html"))
    if pages:
        lines.append(f"The digest as a page:   {pages[-1]}")
    mails = sorted(demo.mail.glob("*.eml")) if demo.mail else []
    if mails:
        lines.append(f"The email it sent:      {mails[-1]}")
    elif demo.mail is None:
        lines.append("(no email: install aiosmtpd to see the message the SMTP sink receives)")
    command = demo.digest_command()
    lines += ["", "Its like/dislike buttons point at this machine, where `digest daemon` serves them in a real",
              "installation ([feedback] listen and public_url); here, `digest like <arXiv id>` does the same."]
    lines += ["", "Try the history it kept:",
              f'  {command} search "hallucination"',
              f"  {command} digests --day {DAY}",
              f"  {command} status"]
    return lines
