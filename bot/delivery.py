"""Slack output: turn a stream of model text into Slack messages.

Three ways to deliver one answer, all behind the same two calls,
``await reply.write(delta)`` and ``await reply.finish(note)``:

- `StreamedReply`   native streaming into a thread (chat.startStream /
                    appendStream / stopStream); long answers continue in a
                    new message. Falls back to `PostedReply` if Slack refuses.
- `PostedReply`     chat.postMessage, then chat.update as text arrives
                    (top-level DMs, and the fallback).
- `ResponseUrlReply` the slash command's response_url, when the bot may not
                    post in the channel; sent once the answer is complete.

Text is escaped and split by `slack_text.MessageSplitter`, so model output
can never ping @channel and a code block split across messages stays closed.
``message_ts`` lists the messages the answer occupies, for the call log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import SlackDeliveryError
from bot.slack_text import MessageSplitter

log = logging.getLogger(__name__)

STREAM_LIMIT = 11_000  # markdown_text may hold 12,000; leave room for a closing note
UPDATE_LIMIT = 3_900  # chat.update refuses more than 4,000 characters
RESPONSE_LIMIT = 11_000  # a markdown block holds 12,000 per payload
STREAM_INTERVAL = 1.0  # seconds between appendStream calls for one message
UPDATE_INTERVAL = 1.5  # seconds between chat.update calls for one message


class Reply(Protocol):
    message_ts: list[str]

    async def write(self, delta: str) -> None: ...

    async def finish(self, note: str | None = None) -> None: ...


class PostedReply:
    """chat.postMessage for the first text, chat.update while it grows."""

    def __init__(self, client: AsyncWebClient, *, channel: str, thread_ts: str | None = None,
                 interval: float = UPDATE_INTERVAL):
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self.interval = interval
        self.splitter = MessageSplitter(UPDATE_LIMIT)
        self.message_ts: list[str] = []
        self._text = ""  # current message, as posted or pending
        self._sent = ""  # what Slack shows for the current message
        self._last = 0.0

    async def write(self, delta: str) -> None:
        await self._take(self.splitter.feed(delta))

    async def finish(self, note: str | None = None) -> None:
        await self._take(self.splitter.close())
        if note:
            self._text += ("\n\n" if self._text else "") + note
        await self._flush(force=True)

    async def _take(self, pieces) -> None:
        for piece in pieces:
            if piece.new_message and self._text:
                await self._flush(force=True)
                self._text, self._sent = "", ""
            self._text += piece.text
        await self._flush()

    async def _flush(self, force: bool = False) -> None:
        if not self._text.strip() or self._text == self._sent:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        if self._sent:
            await self.client.chat_update(channel=self.channel, ts=self.message_ts[-1], markdown_text=self._text)
        else:
            resp = await self.client.chat_postMessage(
                channel=self.channel, thread_ts=self.thread_ts, markdown_text=self._text
            )
            self.message_ts.append(resp["ts"])
        self._sent, self._last = self._text, now


class StreamedReply:
    """Native Slack streaming in a thread; one answer may span several messages."""

    def __init__(self, client: AsyncWebClient, *, channel: str, thread_ts: str, team_id: str | None,
                 user_id: str | None, interval: float = STREAM_INTERVAL):
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self.team_id = team_id
        self.user_id = user_id
        self.interval = interval
        self.splitter = MessageSplitter(STREAM_LIMIT)
        self.message_ts: list[str] = []
        self._raw = ""  # everything written, to replay into a fallback
        self._pending = ""  # escaped text not yet sent to the current message
        self._open = False  # a message is streaming
        self._last = 0.0
        self._fallback: PostedReply | None = None

    async def write(self, delta: str) -> None:
        self._raw += delta
        if self._fallback:
            await self._fallback.write(delta)
            return
        await self._guard(self._take(self.splitter.feed(delta)))

    async def finish(self, note: str | None = None) -> None:
        if not self._fallback:
            await self._guard(self._close(note))
        if self._fallback:
            await self._fallback.finish(note)
            self.message_ts = self._fallback.message_ts

    async def _close(self, note: str | None) -> None:
        await self._take(self.splitter.close(), final=True)
        if note:
            self._pending += ("\n\n" if (self._open or self._pending) else "") + note
        await self._stop()

    async def _take(self, pieces, final: bool = False) -> None:
        for piece in pieces:
            if piece.new_message and (self._open or self._pending):
                await self._stop()
            self._pending += piece.text
        if not final:
            await self._send()

    async def _send(self, force: bool = False) -> None:
        if not self._pending.strip():
            return
        if not self._open:
            resp = await self.client.chat_startStream(
                channel=self.channel, thread_ts=self.thread_ts, markdown_text=self._pending,
                recipient_team_id=self.team_id, recipient_user_id=self.user_id,
            )
            self.message_ts.append(resp["ts"])
            self._open, self._pending, self._last = True, "", time.monotonic()
        elif force or time.monotonic() - self._last >= self.interval:
            await self.client.chat_appendStream(channel=self.channel, ts=self.message_ts[-1],
                                                markdown_text=self._pending)
            self._pending, self._last = "", time.monotonic()

    async def _stop(self) -> None:
        """Finish the current message with whatever is pending."""
        if not self._open:
            if not self._pending.strip():
                self._pending = ""
                return
            await self._send()
        text, self._pending = self._pending, ""
        await self.client.chat_stopStream(channel=self.channel, ts=self.message_ts[-1],
                                          **({"markdown_text": text} if text else {}))
        self._open = False

    async def _guard(self, step: Awaitable[None]) -> None:
        """Run a streaming step; if Slack refuses, redo the answer with plain posts."""
        try:
            await step
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else None
            log.warning("streaming failed (%s); falling back to chat.postMessage", error)
            await self._switch_to_posts()

    async def _switch_to_posts(self) -> None:
        streamed, self.message_ts = self.message_ts, []
        for ts in streamed:  # remove the partial answer before posting it whole
            try:
                await self.client.chat_delete(channel=self.channel, ts=ts)
            except SlackApiError:
                log.warning("could not delete a partial streamed message %s", ts)
        self._fallback = PostedReply(self.client, channel=self.channel, thread_ts=self.thread_ts)
        if self._raw:
            await self._fallback.write(self._raw)


class ResponseUrlReply:
    """Deliver through a slash command's response_url (up to 5 posts)."""

    def __init__(self, respond: Callable[..., Awaitable[Any]], *, header: str = ""):
        self.respond = respond
        self.header = header
        self.splitter = MessageSplitter(RESPONSE_LIMIT)
        self.message_ts: list[str] = []  # response_url posts have no ts we can learn
        self._messages: list[str] = [""]

    async def write(self, delta: str) -> None:
        self._take(self.splitter.feed(delta))

    async def finish(self, note: str | None = None) -> None:
        self._take(self.splitter.close())
        if note:
            self._messages[-1] += ("\n\n" if self._messages[-1] else "") + note
        messages = [m for m in self._messages if m.strip()][:5]
        if self.header:
            messages = [self.header] + messages if not messages else [f"{self.header}\n\n{messages[0]}", *messages[1:]]
        for text in messages:
            try:
                await self.respond(response_type="in_channel", text=text[:3000],
                                   blocks=[{"type": "markdown", "text": text}])
            except Exception as exc:  # noqa: BLE001 - the webhook client raises several types
                raise SlackDeliveryError(f"response_url post failed: {type(exc).__name__}") from exc

    def _take(self, pieces) -> None:
        for piece in pieces:
            if piece.new_message and self._messages[-1]:
                self._messages.append("")
            self._messages[-1] += piece.text
