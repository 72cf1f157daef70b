"""History: the conversation before a question, as the model reads it.

`History` turns a Slack thread (or a DM's last hour) into a `Context`: the people's
messages as user turns, the bot's logged answers as assistant turns (corrected where a
person fixed them), its notes and apologies left out; then puts people's display names in
place of their ids. Calls whose rows are still in the journal count as logged.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.journal import Journal, within
from bot.models import CallStatus, Trigger
from bot.people import Mentions, People, mentioned, name_mentions
from bot.ratelimits import RateBudget
from bot.slack_text import strip_mention, unescape
from bot.store import PastCall, Store, ts_key

log = logging.getLogger(__name__)

HISTORY_LIMIT = 200  # thread messages read as context
CONTEXT_CHARS = 100_000  # what we send at most, in characters (~25k tokens); oldest messages go first
HISTORY_MIN_CHARS = 20_000  # room kept for the conversation when the user's text is very long
DM_WINDOW_SECONDS = 3600  # top-level DMs: earlier messages from the last hour are context
DM_MESSAGES = 20
DB_WAIT = 2.0  # seconds a read on the answer path may wait for the database


@dataclass(frozen=True)
class BotIdentity:
    user_id: str | None
    bot_id: str | None

    def wrote(self, message: dict[str, Any]) -> bool:
        return bool(
            (self.user_id and message.get("user") == self.user_id)
            or (self.bot_id and message.get("bot_id") == self.bot_id)
        )


class History:
    """Reads conversations from Slack and the call log (the journal's pending rows included)."""

    def __init__(self, *, store: Store, budget: RateBudget, people: People, journal: Journal | None):
        self.store = store
        self.budget = budget
        self.people = people
        self.journal = journal

    async def thread(self, client: AsyncWebClient, channel: str, thread_ts: str, before: str | None,
                     team: str | None, bot: BotIdentity) -> Context:
        """The thread's earlier messages as chat turns (the bot's answers as assistant turns)."""
        messages: list[dict[str, Any]] = []
        cursor = None
        while len(messages) < HISTORY_LIMIT * 5:
            try:
                resp = await self.budget.call(client, "conversations.replies", team=team, channel=channel,
                                              ts=thread_ts, limit=200, cursor=cursor)
            except SlackApiError as exc:
                if slack_error(exc) != "thread_not_found":
                    raise
                # The thread's first message was deleted (or never was): answer what was asked.
                log.warning("thread %s in %s not found; answering without its history", thread_ts, channel)
                break
            messages.extend(resp.get("messages") or [])
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        return await self._turns(channel, messages, before, bot)

    async def dm(self, client: AsyncWebClient, channel: str, before: str | None, team: str | None,
                 bot: BotIdentity) -> Context:
        oldest = (float(before) if before else time.time()) - DM_WINDOW_SECONDS
        resp = await self.budget.call(client, "conversations.history", team=team, channel=channel,
                                      limit=DM_MESSAGES, oldest=f"{oldest:.6f}")
        messages = list(reversed(resp.get("messages") or []))
        return await self._turns(channel, messages, before, bot)

    async def _turns(self, channel: str, messages: list[dict[str, Any]], before: str | None,
                     bot: BotIdentity) -> Context:
        if before:
            messages = [m for m in messages if ts_key(m.get("ts", "0")) < ts_key(before)]
        messages = messages[-HISTORY_LIMIT:]
        calls, complete = await self._calls_for(channel, [m["ts"] for m in messages if m.get("ts")])
        answer_of: dict[str, PastCall] = {ts: c for c in calls for ts in c.message_ts}
        asked_by: dict[str, PastCall] = {c.request_ts: c for c in calls if c.request_ts and c.trigger == Trigger.COMMAND}
        context = Context()
        used: set[int | str] = set()
        for m in messages:
            ts = m.get("ts", "")
            if (call := answer_of.get(ts)) is not None:
                if call.status not in (CallStatus.ERROR, CallStatus.REFUSED) and call.id not in used:
                    # a corrected answer reads as corrected; with no text in the log (its channel
                    # opted out of content logging), Slack's copy is what there is
                    context.add("assistant", call.correction or call.answer or unescape(m.get("text") or ""),
                                speaker=bot.user_id or YOU)
                used.add(call.id)
            elif (call := asked_by.get(ts)) is not None:
                context.add("user", call.request_text or unescape(m.get("text") or ""),
                            speaker=call.user_id or "someone")
            elif bot.wrote(m):
                if not complete and m.get("text"):  # without the log, what the bot wrote is all we know
                    context.add("assistant", unescape(m["text"]), speaker=bot.user_id or YOU)
                continue  # the bot's notes and apologies are not part of the conversation
            elif m.get("subtype") in (None, "thread_broadcast", "file_share", "bot_message"):
                text = unescape(strip_mention(m.get("text") or "", bot.user_id or ""))
                context.add("user", text, speaker=m.get("user") or m.get("username") or "bot")
        return context

    async def with_people(self, context: Context, client: AsyncWebClient, team: str | None, *, text: str,
                          asker: str | None, bot: BotIdentity) -> Context:
        """The context with people by name: who spoke, whom they mentioned, who asks and whom they
        name (each looked up once; a name that cannot be had leaves the id, as Slack wrote it)."""
        ids = {s for s in context.speakers if _is_user_id(s)} | mentioned(text) | {
            i for turn in context.turns for i in mentioned(turn["content"])}
        ids |= {i for i in (asker, bot.user_id) if i and _is_user_id(i)}
        return context.named(await self.people.names(client, team, ids), bot=bot.user_id)

    async def _calls_for(self, channel: str, ts: list[str]) -> tuple[list[PastCall], bool]:
        """The logged calls behind these messages, rows still in the journal included; and
        whether that is complete (False: the database did not answer)."""
        wanted = set(ts)
        pending = [_past_call(op) for op in pending_calls(self.journal, channel)
                   if wanted & set(op["log"]["message_ts"]) or op["log"]["request_ts"] in wanted]
        try:
            return await within(self.store.calls_for(channel, ts), DB_WAIT) + pending, True
        except Exception as exc:  # noqa: BLE001 - answer from Slack's messages alone
            log.warning("reading the conversation's calls: the database is unavailable (%s)", type(exc).__name__)
            return pending, False


@dataclass
class Context:
    """Earlier messages of a conversation: chat turns for the model, and a transcript
    (who said what) for prompts that template ``{{ thread }}``.

    Built with Slack's ids (a speaker is a user id, or a label such as a bot's username);
    `named` then puts people's display names in their place, the bot's own included."""

    turns: list[dict[str, Any]] = field(default_factory=list)
    speakers: list[str] = field(default_factory=list)
    dropped: int = 0  # older messages left out to fit the model's context
    people: dict[str, str | None] = field(default_factory=dict)  # user id -> display name (None: unknown)
    bot: str | None = None  # the bot's user id

    def add(self, role: str, content: str, *, speaker: str) -> None:
        if content := content.strip():
            self.turns.append({"role": role, "content": content})
            self.speakers.append(speaker)

    def named(self, people: dict[str, str | None], *, bot: str | None) -> Context:
        """The same conversation with people by name: ``Ann Lee: …``, ``@Ann Lee``."""
        def speaker(who: str) -> str:
            if name := people.get(who):
                return name
            return YOU if who in (bot, YOU) else _speaker(who)

        turns = [{**t, "content": name_mentions(t["content"], people)} for t in self.turns]
        return dataclasses.replace(self, turns=turns, speakers=[speaker(s) for s in self.speakers],
                                   people=dict(people), bot=bot)

    def name(self, text: str) -> str:
        """Mentions in ``text`` (``<@U…>``) as ``@Display Name`` where the name is known."""
        return name_mentions(text, self.people)

    def mentions(self) -> Mentions:
        """What turns the model's ``@Name`` of a person here into a mention (never of the bot itself)."""
        return Mentions({i: n for i, n in self.people.items() if i != self.bot})

    @property
    def note(self) -> str | None:
        if not self.dropped:
            return None
        return f"(The {self.dropped} oldest messages of this conversation were left out to fit the context.)"

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The turns as sent to the model, after a note if older ones were left out."""
        return ([{"role": "user", "content": self.note}] if self.note else []) + self.turns

    @property
    def transcript(self) -> str:
        lines = [f"{who}: {t['content']}" for who, t in zip(self.speakers, self.turns, strict=True)]
        return "\n\n".join([self.note] + lines if self.note else lines)

    def within(self, budget: int) -> Context:
        """The newest messages that fit in ``budget`` characters."""
        used, keep = 0, 0
        for turn in reversed(self.turns):
            used += len(turn["content"])
            if used > budget:
                break
            keep += 1
        return self.newest(keep)

    def newest(self, keep: int) -> Context:
        """The newest ``keep`` messages; the others are counted as left out."""
        keep = max(0, min(keep, len(self.turns)))
        if keep == len(self.turns):
            return self
        cut = len(self.turns) - keep
        return dataclasses.replace(self, turns=self.turns[cut:], speakers=self.speakers[cut:],
                                   dropped=self.dropped + cut)


def fit_text(text: str, limit: int) -> str:
    """The user's text, cut with a note if it alone would not fit the context."""
    if len(text) <= limit:
        return text
    return text[:limit] + "\n\n(The rest of this message was left out: it is too long for the model.)"


def _past_call(op: dict[str, Any]) -> PastCall:
    """A call whose row is still in the journal, as a logged one."""
    c = op["log"]
    return PastCall(op["id"], c["status"], c["trigger"], c["user_id"], c["request_ts"], c["request_text"],
                    c["answer"], c["prompt_name"], tuple(c["message_ts"]))


def pending_calls(journal: Journal | None, channel_id: str) -> list[dict[str, Any]]:
    """Call rows of this channel still in the journal, on their way to the database."""
    if journal is None:
        return []
    return [op for op in journal.pending("call") if op["log"]["channel_id"] == channel_id]


def pending_call(journal: Journal | None, channel_id: str, ts: str) -> dict[str, Any] | None:
    """The journal's row of the call posted as this message, if it is there."""
    return next((op for op in pending_calls(journal, channel_id) if ts in op["log"]["message_ts"]), None)


def slack_error(exc: SlackApiError) -> str | None:
    return exc.response.get("error") if exc.response is not None else None


YOU = "you"  # the bot in a transcript when its name is not known


def _is_user_id(value: str) -> bool:
    return value[:1] in ("U", "W") and value[1:].replace("_", "").isalnum() and value.upper() == value


def _speaker(user_id: str | None) -> str:
    return f"<@{user_id}>" if user_id and _is_user_id(user_id) else (user_id or "someone")
