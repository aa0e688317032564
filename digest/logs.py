"""Logging to stdout for journald: one line per event, and no secret ever, whatever a library prints."""

from __future__ import annotations

import base64
import functools
import logging
import sys

from .config import REDACTED

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactSecrets(logging.Filter):
    """Replace every configured secret value in a record's final message (and traceback) by ********."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        record.msg, record.args = redact(message, self.secrets), None
        record.exc_text = None
        return True


def redact(text: str, secrets: list[str]) -> str:
    """``text`` with every secret replaced by ********, in the clear and in base64 (an SMTP server's
    reply to AUTH can quote the credentials it was sent, base64-encoded)."""
    for form in _forms(tuple(secrets)):
        if form in text:
            text = text.replace(form, REDACTED)
    return text


@functools.lru_cache(maxsize=32)
def _forms(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """Each secret as itself and as the part of any base64 text that encodes it, at each of the three
    alignments it can have inside a longer encoded string; longest first."""
    forms = set()
    for secret in secrets:
        if not secret:
            continue
        forms.add(secret)
        raw = secret.encode("utf-8")
        for shift, skip in ((0, 0), (1, 2), (2, 3)):  # base64 characters that also encode the bytes before
            data = b"\0" * shift + raw
            encoded = base64.b64encode(data).decode("ascii")[skip:len(data) // 3 * 4]
            if len(encoded) >= 6:
                forms.add(encoded)
        forms.add(base64.b64encode(raw).decode("ascii"))
    return tuple(sorted(forms, key=len, reverse=True))


def setup_logging(secrets: list[str], level: str = "INFO", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stdout)
    # journald stamps each line itself; elsewhere the time helps.
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if _under_journald() else FORMAT))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_digest", False):
            root.removeHandler(old)
    handler._digest = True
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "urllib3", "openai", "sentence_transformers", "apscheduler.executors",
                  "mail.log", "asyncio", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _under_journald() -> bool:
    import os
    return bool(os.environ.get("JOURNAL_STREAM"))
