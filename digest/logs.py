"""Logging to stdout for journald: one line per event, and no secret ever, whatever a library prints."""

from __future__ import annotations

import logging
import sys

from .secrets import redact

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


class OwnWords(logging.Filter):
    """Drop what apprise logs: its "Unsupported URL: ..." and HTTP warnings are read from its own
    capture (deliver/chat.py) and told once in our words, so the journal does not say them twice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("apprise")


def setup_logging(secrets: list[str], level: str = "INFO", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stdout)
    # journald stamps each line itself; elsewhere the time helps.
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if _under_journald() else FORMAT))
    handler.addFilter(OwnWords())
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
