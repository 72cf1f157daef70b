"""One model call, one row: `Recording` is how a call is always logged.

    async with Recording(row, ...) as call:      # on exit, whatever happened: the row is kept
        async with call.attempt():               # a failure becomes a status and an apology
            ...                                  # open the reply, read the context, call the model
        ...                                      # deliver call.note (the apology) or the answer

`attempt()` classifies what goes wrong into the row's status, error type and (redacted)
message, and the apology shown in Slack:

- `ModelError`           status error (incomplete if some text came), ``ModelError.<kind>``
- `OverBudget`           status refused, its error type; the refusal says when the budget resets
- `CancelledError`       the bot shut down: ``Interrupted``; raised again once the row is kept
- anything else          status error, the exception's class name, a generic apology

On exit the completion's fields and cost go into the row (`CallLog.add_completion`), the
budget hold is settled, a channel that opted out of content logging has the text left out,
and the row is kept (journal first). An exception escaping the body is classified the same
way before the row is written, and then goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from bot.budgets import Budgets, Hold, OverBudget
from bot.delivery import Reply
from bot.errors import FlywheelError, ModelError
from bot.models import CallStatus
from bot.pricing import PriceTable
from bot.store import CallLog

log = logging.getLogger(__name__)


class Recording:
    """The row of one call, written on exit whatever happens (see the module's docstring)."""

    def __init__(self, row: CallLog, *, keep: Callable[[CallLog], Awaitable[int | None]],
                 redact: Callable[[str], str], prices: PriceTable, budgets: Budgets, log_content: bool):
        self.row = row
        self._keep, self._redact = keep, redact
        self._prices, self._budgets, self._log_content = prices, budgets, log_content
        self.stream: Any = None  # the model's stream, once the model is called (its .completion)
        self.reply: Reply | None = None  # where the answer went: its messages are the row's message_ts
        self.hold: Hold | None = None  # the budget held for this call, settled on exit
        self.note: str | None = None  # said under the answer: an apology, a refusal, a cut-off
        self.interrupted: BaseException | None = None
        self.call_id: int | None = None  # once the row is in the database
        self._started = time.monotonic()

    @property
    def text(self) -> str:
        """What the model said so far."""
        return self.stream.completion.text if self.stream is not None else ""

    @property
    def answered(self) -> bool:
        return bool(self.text.strip()) and self.row.status != CallStatus.ERROR

    @contextlib.asynccontextmanager
    async def attempt(self) -> AsyncIterator[None]:
        """Around the work before delivery: a failure is classified (and not raised); an
        interruption is raised again on exit, once the row is kept."""
        try:
            yield
        except (Exception, asyncio.CancelledError) as exc:  # noqa: BLE001 - the user gets an apology
            self.fail(exc)
        else:
            if self.stream is not None and self.stream.completion.finish_reason == "length":
                self.row.status = CallStatus.TRUNCATED
                self.note = "_(The answer hit this prompt's length limit and was cut off.)_"
            elif not self.text.strip():
                self.note = "_(The model returned an empty answer. Try rephrasing.)_"

    def fail(self, exc: BaseException, doing: str = "answering") -> None:
        """Classify a failure into the row's status, error type and message, and the apology."""
        partial = bool(self.text)
        if isinstance(exc, ModelError):
            log.warning("model call failed (%s): %s", exc.kind, exc)
            self._error(exc, f"ModelError.{exc.kind}", exc.user_message)
            if partial:
                self.row.status = CallStatus.INCOMPLETE
        elif isinstance(exc, OverBudget):
            log.info("call refused: %s", exc)
            self._error(exc, exc.error_type, "")
            self.note, self.row.status = f"_{exc.user_message}_", CallStatus.REFUSED
        elif isinstance(exc, asyncio.CancelledError):  # shut down before the answer finished
            self.interrupted = exc
            self._error(exc, "Interrupted", ModelError._apologies["interrupted"],
                        "the bot shut down before the answer finished")
            self.row.status = CallStatus.INCOMPLETE if partial else CallStatus.ERROR
        else:
            log.error("%s failed", doing, exc_info=exc)
            self._error(exc, type(exc).__name__, FlywheelError.user_message)

    def _error(self, exc: BaseException, error_type: str, apology: str, message: str | None = None) -> None:
        self.row.status, self.row.error_type = CallStatus.ERROR, error_type
        self.row.error_message = self._redact(message or str(exc) or type(exc).__name__)
        self.note = f"_{apology}_" if apology else None

    async def __aenter__(self) -> Recording:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> None:
        if isinstance(exc, (Exception, asyncio.CancelledError)):
            self.fail(exc)
        row = self.row
        elapsed = int((time.monotonic() - self._started) * 1000)
        if self.stream is not None:
            row.add_completion(self.stream.completion, self._prices, latency_ms=elapsed)
        if self.reply is not None:
            row.message_ts = list(self.reply.message_ts)
        row.latency_ms = row.latency_ms or elapsed
        if self.hold is not None:
            await self._budgets.settle(self.hold, (row.prompt_tokens or 0) + (row.completion_tokens or 0),
                                       row.cost_usd)
        if not self._log_content:
            row.drop_content()
        self.call_id = await self._keep(row)
        log.info("call %s: %s/%s %s in %sms", self.call_id if self.call_id is not None else "(kept)",
                 row.prompt_name, row.prompt_version[:12], row.status, row.latency_ms)
        if exc is None and self.interrupted is not None:
            raise self.interrupted
