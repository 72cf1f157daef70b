"""Slack's assistant pane (the AI app split view): greet, show status, title, answer.

When someone opens the pane, Slack starts an assistant thread in their DM with the bot
(`assistant_thread_started`, with the channel they were looking at, if any). The bot
greets them there with suggested prompts made from the prompt files. Each question in
the thread is answered like a DM in a thread (`Conversation.answer`: one call row,
trigger ``assistant``, the usual vote and fix buttons), with a status ("is thinking…")
while the model works, a title for the thread from its first question, and, when the
pane was opened from a channel, that channel's recent messages as context; the answer
then says that it read them.

The channel a thread was opened from is remembered in this process, and also kept in
the metadata of the greeting, so that another process (or this one after a restart)
finds it again with one conversations.replies call.

Bolt's own `AsyncAssistant` middleware is not used: it takes every reply in any DM
thread for an assistant message (ordinary DM threads would change behaviour), and its
context store rewrites the greeting through calls outside `RateBudget`.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.conversation import Ask, BotIdentity, Context, Conversation
from bot.delivery import StreamedReply
from bot.models import Trigger
from bot.prompts import PromptSet
from bot.slack_text import strip_mention, unescape

log = logging.getLogger(__name__)

SUGGESTIONS = 4  # Slack shows at most four suggested prompts
THINKING = "is thinking…"
TITLE_CHARS = 80
CHANNEL_MESSAGES = 30  # recent messages of the channel the pane was opened from
CHANNEL_CHARS = 20_000  # at most, of the context, for them
THREADS_REMEMBERED = 10_000
GREETING_EVENT = "flywheel_assistant_thread"  # the greeting's metadata: the thread's channel context
CHANNEL_TYPES = ("C", "G")  # channels whose history the pane may read (not DMs)
_UNREADABLE = {
    "not_in_channel": "I am not a member of it; invite me there and ask again",
    "channel_not_found": "I cannot see it (a private channel I am not in?)",
    "missing_scope": "this app was installed without the `channels:history` permission",
}


def suggested_prompts(prompts: PromptSet, channel_id: str | None = None) -> list[dict[str, str]]:
    """Up to four suggestions for the pane, from the prompt files: each prompt's description as
    the title, its name and usage hint as the message. Opened from a channel: summarise it first."""
    found: list[dict[str, str]] = []
    if channel_id and prompts.get("summarize") is not None:
        found.append({"title": "Summarise this channel",
                      "message": "summarize the recent messages of this channel"})
    default = prompts.get("ask")
    for prompt in sorted(prompts, key=lambda p: p.name):
        if len(found) == SUGGESTIONS:
            break
        if prompt is default or not prompt.slack or not prompt.description:
            continue  # the default prompt answers whatever is typed; no suggestion needed
        title, hint = prompt.description.split(" - ")[0], prompt.usage_hint.split(" - ")[0]
        found.append({"title": _short(title, 75), "message": _short(f"{prompt.name} {hint}", 200)})
    if not found and default is not None:
        found.append({"title": _short(default.description or "Ask a question", 75), "message": "What can you do?"})
    return found


@dataclass
class PaneThread:
    """One assistant thread: where it is, and the channel it was opened from (if any)."""

    channel_id: str  # the DM with the bot
    thread_ts: str
    context_channel: str | None = None
    titled: bool = False


class Assistant:
    """What the bot does in the assistant pane; answers go through `Conversation`."""

    def __init__(self, conversation: Conversation):
        self.conversation = conversation
        self._threads: OrderedDict[tuple[str, str], PaneThread] = OrderedDict()

    # -- events --------------------------------------------------------------------------

    async def started(self, client: AsyncWebClient, assistant_thread: dict[str, Any], *,
                      team_id: str | None) -> None:
        """The pane was opened: greet once (Slack may deliver the event again) with suggestions."""
        thread = self._remember(assistant_thread)
        if thread is None or not await self.conversation.claim(f"pane:{thread.channel_id}:{thread.thread_ts}"):
            return
        where = f" I can read the recent messages of <#{thread.context_channel}> to answer about it." \
            if thread.context_channel else ""
        await self._optional(client, "chat.postMessage", team_id, channel=thread.channel_id,
                             thread_ts=thread.thread_ts, text=f"Hi! How can I help?{where}",
                             metadata=self._metadata(thread))
        await self._suggest(client, thread, team_id)

    async def context_changed(self, client: AsyncWebClient, assistant_thread: dict[str, Any], *,
                              team_id: str | None) -> None:
        """The person switched channels with the pane open: that channel is the context now."""
        thread = self._remember(assistant_thread)
        if thread is not None:
            await self._suggest(client, thread, team_id)

    def in_pane(self, event: dict[str, Any]) -> bool:
        """Whether this message event is a question asked in an assistant thread."""
        if event.get("channel_type") != "im" or event.get("bot_id"):
            return False
        if event.get("assistant_thread") is not None:  # Slack marks messages written in the pane
            return True
        return (event.get("channel", ""), event.get("thread_ts") or "") in self._threads

    async def answer(self, event: dict[str, Any], client: AsyncWebClient, bot: BotIdentity, *,
                     team_id: str | None) -> int | None:
        """Answer a question in an assistant thread, once, with status and title around it."""
        channel, ts, user = event.get("channel"), event.get("ts"), event.get("user")
        if not channel or not ts or not user or event.get("subtype") not in (None, "file_share"):
            return None
        thread_ts = event.get("thread_ts") or ts
        if not await self.conversation.claim(f"msg:{channel}:{ts}"):
            log.info("assistant message %s already answered; skipping", ts)
            return None
        thread = self._threads.get((channel, thread_ts)) or await self._recall(client, channel, thread_ts, team_id)
        text = unescape(strip_mention(event.get("text") or "", bot.user_id or ""))
        prompt, routed = self.conversation.prompts.route(text)
        if prompt is None:
            return None
        ask = Ask(trigger=Trigger.ASSISTANT, prompt=prompt, text=routed, channel_id=channel, user_id=user,
                  team_id=team_id, ts=ts, thread_ts=thread_ts)
        reply = PaneReply(client, self.conversation.budget, channel=channel, thread_ts=thread_ts,
                          team_id=team_id, user_id=user)

        async def context() -> Context:
            history = Context()
            if thread_ts != ts:
                history = await self.conversation.history.thread(client, channel, thread_ts, ts, team_id, bot)
            if not thread.titled:
                thread.titled = True
                if not any(t["role"] == "user" for t in history.turns):  # the thread's first question
                    await self._optional(client, "assistant.threads.setTitle", team_id, channel_id=channel,
                                         thread_ts=thread_ts, title=_short(text, TITLE_CHARS))
            if thread.context_channel is None:
                return history
            read, reply.read_note = await self._channel_context(client, thread.context_channel, team_id, bot)
            return _joined(read, history)

        await self._status(client, thread, team_id, THINKING)
        try:
            return await self.conversation.answer(ask, reply, context)
        finally:  # Slack clears it when the answer posts; an apology or a failure must not leave it
            await self._status(client, thread, team_id, "")

    # -- the channel the pane was opened from -----------------------------------------------

    async def _channel_context(self, client: AsyncWebClient, channel: str, team_id: str | None,
                               bot: BotIdentity) -> tuple[Context, str]:
        """The channel's recent messages as one turn, and the note that says so on the answer."""
        try:
            resp = await self.conversation.budget.call(client, "conversations.history", team=team_id,
                                                       optional=True, channel=channel, limit=CHANNEL_MESSAGES)
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else None
            why = _UNREADABLE.get(error or "", f"Slack refused ({error})")
            log.info("assistant: cannot read %s (%s)", channel, error)
            return Context(), f"I could not read <#{channel}>: {why}."
        if resp is None:  # conversations.history's rate budget is spent for now
            return Context(), f"I could not read <#{channel}> just now (Slack's rate limit); ask again in a minute."
        lines = []
        for m in reversed(resp.get("messages") or []):
            if bot.wrote(m) or m.get("subtype") not in (None, "thread_broadcast", "file_share", "bot_message"):
                continue
            text = unescape(strip_mention(m.get("text") or "", bot.user_id or "")).strip()
            if text:
                who = m.get("user") or m.get("username") or "bot"
                lines.append(f"<@{who}>: {text}" if who[:1] in "UW" else f"{who}: {text}")
        transcript = "\n".join(lines)[-CHANNEL_CHARS:]
        read = Context()
        read.add("user", f"For context, the most recent messages of the channel <#{channel}> (oldest first):\n\n"
                 f"{transcript}", speaker=f"<#{channel}>")
        return read, f"Read the {len(lines)} most recent messages of <#{channel}> for this answer."

    # -- threads ------------------------------------------------------------------------------

    def _remember(self, assistant_thread: dict[str, Any]) -> PaneThread | None:
        channel, thread_ts = assistant_thread.get("channel_id"), assistant_thread.get("thread_ts")
        if not channel or not thread_ts:
            return None
        context_channel = (assistant_thread.get("context") or {}).get("channel_id") or None
        if context_channel is not None and context_channel[:1] not in CHANNEL_TYPES:
            context_channel = None  # opened from a DM or elsewhere: nothing to read
        thread = self._threads.get((channel, thread_ts)) or PaneThread(channel, thread_ts)
        thread.context_channel = context_channel
        self._keep(thread)
        return thread

    def _keep(self, thread: PaneThread) -> None:
        self._threads[(thread.channel_id, thread.thread_ts)] = thread
        self._threads.move_to_end((thread.channel_id, thread.thread_ts))
        if len(self._threads) > THREADS_REMEMBERED:
            self._threads.popitem(last=False)

    async def _recall(self, client: AsyncWebClient, channel: str, thread_ts: str, team_id: str | None) -> PaneThread:
        """A thread this process did not see start: its channel context is in the greeting's metadata."""
        thread = PaneThread(channel, thread_ts)
        try:
            resp = await self.conversation.budget.call(client, "conversations.replies", team=team_id, optional=True,
                                                       channel=channel, ts=thread_ts, limit=4,
                                                       include_all_metadata=True)
        except SlackApiError as exc:
            log.info("assistant: cannot read thread %s (%s)", thread_ts, exc.response.get("error"))
            resp = None
        for m in (resp or {}).get("messages") or []:
            meta = m.get("metadata") or {}
            if meta.get("event_type") == GREETING_EVENT:
                thread.context_channel = (meta.get("event_payload") or {}).get("context_channel") or None
                break
        self._keep(thread)
        return thread

    @staticmethod
    def _metadata(thread: PaneThread) -> dict[str, Any]:
        return {"event_type": GREETING_EVENT, "event_payload": {"context_channel": thread.context_channel or ""}}

    async def _suggest(self, client: AsyncWebClient, thread: PaneThread, team_id: str | None) -> None:
        prompts = suggested_prompts(self.conversation.prompts, thread.context_channel)
        if prompts:
            await self._optional(client, "assistant.threads.setSuggestedPrompts", team_id,
                                 channel_id=thread.channel_id, thread_ts=thread.thread_ts, prompts=prompts)

    async def _status(self, client: AsyncWebClient, thread: PaneThread, team_id: str | None, status: str) -> None:
        await self._optional(client, "assistant.threads.setStatus", team_id, channel_id=thread.channel_id,
                             thread_ts=thread.thread_ts, status=status)

    async def _optional(self, client: AsyncWebClient, method: str, team_id: str | None, **params: Any) -> None:
        """A call that makes the pane nicer; if Slack refuses it, the answer goes on without it."""
        try:
            await self.conversation.budget.call(client, method, team=team_id, **params)
        except SlackApiError as exc:
            log.warning("assistant: %s refused (%s)", method,
                        exc.response.get("error") if exc.response is not None else exc)


class PaneReply(StreamedReply):
    """An answer in an assistant thread; says under it which channel it read, if any."""

    read_note: str | None = None

    async def finish(self, note: str | None = None, blocks: list[dict] | None = None,
                     metadata: dict | None = None) -> None:
        if self.read_note and blocks:
            blocks = [{"type": "context", "elements": [{"type": "mrkdwn", "text": self.read_note}]}, *blocks]
        elif self.read_note:
            note = "\n\n".join(n for n in (note, f"_{self.read_note}_") if n)
        await super().finish(note, blocks, metadata)


def _joined(first: Context, then: Context) -> Context:
    return Context(first.turns + then.turns, first.speakers + then.speakers, first.dropped + then.dropped)


def _short(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
