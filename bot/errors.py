"""One error hierarchy for the whole bot.

    FlywheelError                 base; ``user_message`` is safe to show in Slack
    ├── ConfigError               a setting is missing or malformed (start-up stops)
    ├── PromptError               a prompt file is invalid: path, line, reason
    ├── ModelError                the model call failed; ``kind`` says how
    ├── SlackDeliveryError        an answer could not be posted to Slack
    └── OverBudget                a daily budget is used up (bot.budgets): the call is refused

Errors are translated at the boundary: users see ``user_message`` (a short
apology, never a token or a stack trace), logs see the traceback, and the call
log stores ``type(err).__name__`` and ``str(err)``, which never contain secrets.
"""

from __future__ import annotations

from pathlib import Path


class FlywheelError(Exception):
    user_message = "Sorry, something went wrong on my side. Please try again."


class ConfigError(FlywheelError):
    """A setting is missing or malformed. ``problems`` holds one line per setting."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def database_error(doing: str, exc: BaseException) -> ConfigError:
    """A database failure for the command line, in one line and without a traceback:
    ``DATABASE_URL: cannot {doing} the database: {reason}``, the reason being the driver's
    first line (at most 300 characters)."""
    return ConfigError([f"DATABASE_URL: cannot {doing} the database: {driver_reason(exc)}"])


def driver_reason(exc: BaseException) -> str:
    """A database error's first line (the driver's own, not SQLAlchemy's wrapper), ≤ 300 characters."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__]
    return lines[0][:300]


class PromptError(FlywheelError):
    """A prompt file is invalid. Printed as ``path:line: reason``."""

    def __init__(self, path: Path | str, line: int | None, reason: str):
        self.path = Path(path)
        self.line = line
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else f"{self.path}"
        return f"{where}: {self.reason}"


class ModelError(FlywheelError):
    """A model call failed.

    ``kind`` is one of: ``timeout``, ``rate_limited``, ``connection``, ``auth``,
    ``bad_request``, ``context_too_long``, ``server``, ``malformed``, ``interrupted``.
    """

    _apologies = {
        "timeout": "Sorry, the model took too long to answer. Please try again.",
        "rate_limited": "Sorry, the model is busy right now (rate limited). Please try again in a minute.",
        "connection": "Sorry, I couldn't reach the model. Please try again shortly.",
        "auth": "Sorry, the model rejected my credentials. An admin needs to check the API key.",
        "bad_request": "Sorry, the model refused this request. An admin can find the details in the log.",
        "server": "Sorry, the model service had an error. Please try again.",
        "malformed": "Sorry, the model sent a reply I couldn't read. Please try again.",
        "interrupted": "Sorry, I was restarted before I could finish this answer. Please ask again.",
        "context_too_long": "Sorry, this is too long for the model, even without the older messages. "
                            "Try a shorter request, or start a new thread.",
    }

    def __init__(self, kind: str, message: str, *, status: int | None = None):
        self.kind = kind
        self.status = status
        super().__init__(message)

    @property
    def user_message(self) -> str:  # type: ignore[override]
        return self._apologies.get(self.kind, FlywheelError.user_message)


class SlackDeliveryError(FlywheelError):
    """Slack refused every way of posting an answer."""


def redact(text: str, secrets: tuple[str, ...] | list[str]) -> str:
    """Replace every secret (and a 12-character prefix of it) in ``text`` with ``[redacted]``."""
    for secret in secrets:
        if not secret:
            continue
        text = text.replace(secret, "[redacted]")
        if len(secret) > 16:
            text = text.replace(secret[:12], "[redacted]")
    return text
