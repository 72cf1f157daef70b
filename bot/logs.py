"""Logging set-up: one handler on the root logger that scrubs secrets from every record."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

# Anything shaped like a Slack or OpenAI credential, whatever setting it came from.
_TOKEN = re.compile(r"\b(xox[abposr]-[A-Za-z0-9-]{6,}|xapp-[A-Za-z0-9-]{6,}|sk-[A-Za-z0-9_-]{8,})")


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: tuple[str, ...] = ()):
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return _TOKEN.sub("[redacted]", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = self.scrub(message), None
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log platforms that index fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str = "INFO", secrets: tuple[str, ...] = (), fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Library chatter (one line per HTTP request) only when DEBUG was asked for.
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for noisy in ("aiosqlite", "httpcore", "httpcore2", "httpx", "httpx2", "openai._base_client", "asyncio",
                   "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(quiet)
    # Bolt reads SLACK_BOT_TOKEN itself and warns that the client we pass wins: it does, by design.
    logging.getLogger("slack_bolt").addFilter(
        lambda record: not str(record.msg).startswith("As you gave `client` as well"))
