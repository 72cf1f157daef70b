"""Corrections: a person's fix of an answer, from the "Fix it" modal to the note in its thread.

The modal opens on the answer's current text (its newest correction); the correction is kept
in the journal before Slack hears back, so nothing is lost during a database outage, and is
announced in the answer's thread once it is stored.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.feedback import AnswerRef, fix_modal
from bot.history import DB_WAIT, pending_call, slack_error
from bot.journal import Journal, new_op, within
from bot.models import CallStatus
from bot.ratelimits import RateBudget
from bot.slack_text import escape, truncate
from bot.store import Store

log = logging.getLogger(__name__)

CORRECTION_NOTE_WAIT = 300.0  # a correction kept during an outage is announced once it is stored

Outcome = Literal["done", "not_an_answer", "unavailable"]


class Corrections:
    """Open the fix modal, keep what a person wrote in it, and say so in the thread."""

    def __init__(self, *, store: Store, journal: Journal | None, budget: RateBudget):
        self.store = store
        self.journal = journal
        self.budget = budget

    async def open_fix(self, client: AsyncWebClient, *, trigger_id: str, channel_id: str, ts: str) -> Outcome:
        """Open the "Fix it" modal for the answer this message belongs to."""
        found = await self._answer_at(channel_id, ts)
        if isinstance(found, str):
            return found
        await client.views_open(trigger_id=trigger_id, view=fix_modal(*found))
        return "done"

    async def _answer_at(self, channel_id: str, ts: str) -> tuple[AnswerRef, str] | Outcome:
        """The answer posted as this message, and its current text (the newest correction)."""
        if (pending := pending_call(self.journal, channel_id, ts)) is not None:  # its row is on its way
            if pending["log"]["status"] == CallStatus.ERROR:
                return "not_an_answer"
            return AnswerRef(None, channel_id, ts), pending["log"]["answer"]
        try:
            call_id = await within(self.store.call_for_message(channel_id, ts), DB_WAIT)
            call = await within(self.store.get_call(call_id), DB_WAIT) if call_id is not None else None
            if call is None or call.status == CallStatus.ERROR:
                return "not_an_answer"
            corrections = await within(self.store.corrections(call.id), DB_WAIT)
        except Exception as exc:  # noqa: BLE001 - an outage: say so rather than nothing
            log.warning("fix: the database is unavailable (%s)", type(exc).__name__)
            return "unavailable"
        return AnswerRef(call.id, channel_id, ts), corrections[-1].text if corrections else call.answer

    async def keep(self, answer: AnswerRef, *, user_id: str, text: str) -> asyncio.Future[Any]:
        """Keep a person's fix of an answer (journal first, so nothing is lost before the modal
        closes). Raises `NotKept` if it can be neither kept nor stored."""
        assert self.journal is not None
        return await self.journal.keep(new_op("correction", call_id=answer.call_id, channel=answer.channel,
                                              ts=answer.ts, user=user_id, text=text))

    async def announce(self, kept: asyncio.Future[Any], *, user_id: str, team_id: str | None,
                       client: AsyncWebClient) -> None:
        """Once the correction is stored, say so, briefly, in the answer's thread."""
        call_id = await Journal.result(kept, CORRECTION_NOTE_WAIT)
        call = await self.store.get_call(call_id) if call_id is not None else None
        if call is None or not call.channel_id:
            return
        fixed = await answer_link(client, call.channel_id, call.reply_ts, call.answer, markdown=False)
        note = f"✏️ <@{user_id}> corrected {fixed}. Thank you: the correction is what I will learn from."
        try:
            await self.budget.call(client, "chat.postMessage", team=team_id, channel=call.channel_id,
                                   thread_ts=call.thread_ts or call.reply_ts, text=note)
        except SlackApiError as exc:  # the correction is saved; the note is a courtesy
            log.warning("could not post the correction note: %s", slack_error(exc))


async def answer_link(client: AsyncWebClient, channel: str, ts: str | None, answer: str, *,
                      markdown: bool) -> str:
    """How a note points at an answer: a link to it (chat.getPermalink), else its first words."""
    link = None
    if ts:
        try:
            link = (await client.chat_getPermalink(channel=channel, message_ts=ts)).get("permalink")
        except SlackApiError as exc:
            log.info("no permalink for %s (%s); quoting the answer instead", ts, slack_error(exc))
    if link:
        return f"[this answer]({link})" if markdown else f"<{link}|this answer>"
    first = next((line.strip() for line in answer.splitlines() if line.strip()), "")
    return f"the answer “{escape(truncate(first, 80))}”" if first else "this answer"
