"""Slack output: turn a stream of model text into Slack messages.

Three ways to deliver one answer, all behind the same two calls,
``await reply.write(delta)`` and ``await reply.finish(note)``:

- `StreamedReply`    native streaming into a thread (chat.startStream /
                     appendStream / stopStream). A long answer continues in a
                     new message. When Slack refuses to stream, or the rate
                     budget is spent, a message is posted whole instead.
- `PostedReply`      chat.postMessage, then chat.update as text arrives
                     (top-level DMs, where there is no thread to stream into).
- `ResponseUrlReply` the slash command's response_url, when the bot may not
                     post in the channel; sent once the answer is complete.

Text is escaped and split by `slack_text.MessageSplitter`, so model output can
never ping @channel and a code block split across messages stays closed. Every
Web API call goes through the shared `RateBudget`. ``message_ts`` lists the
messages the answer occupies, for the call log.

While the model has not said a word, the thread is not silent: ``await
reply.begin()`` (the `Status` protocol) posts a *Thinking…* note if no text has
come after `STATUS_AFTER` seconds. The note becomes the answer (chat.update) or,
once the answer streams in a message of its own, is deleted: no extra message is
left behind. A fast model never causes the note, so it costs Slack calls only
when someone would otherwise wait in silence; and a note is only posted with a
chat.update slot reserved to replace it, so it never makes an answer wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, runtime_checkable

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import SlackDeliveryError
from bot.ratelimits import RateBudget, Reservation
from bot.slack_text import MessageSplitter, Piece

log = logging.getLogger(__name__)

STREAM_LIMIT = 11_000  # markdown_text may hold 12,000; room for a closing note
UPDATE_LIMIT = 3_900  # chat.update refuses more than 4,000 characters
RESPONSE_LIMIT = 11_000  # a markdown block holds 12,000 per payload
STREAM_INTERVAL = 1.0  # seconds between appendStream calls for one message
UPDATE_INTERVAL = 1.5  # seconds between chat.update calls for one message
STATUS_AFTER = 1.0  # seconds without text from the model before the thread shows a status
STATUS_TEXT = "_Thinking…_"


class Reply(Protocol):
    message_ts: list[str]

    async def write(self, delta: str) -> None: ...

    async def finish(self, note: str | None = None, blocks: list[dict] | None = None,
                     metadata: dict | None = None) -> None:
        """Complete the answer; ``blocks`` (buttons) and ``metadata`` go on its last message."""


@runtime_checkable
class Status(Protocol):
    async def begin(self) -> None:
        """The answer has been asked for: show a status until its text arrives."""


Unfinished = tuple[str, str]  # ("stream" | "status", ts): the message a crash now would leave as it is


@runtime_checkable
class Watched(Protocol):
    # Told each time the message a crash would leave unfinished changes: an open stream, or the
    # Thinking… note (None: neither), so that the next start can end it with the apology.
    watch: Callable[[Unfinished | None], None] | None


class _Output:
    """What the replies share: one answer's destination, the splitter and the budget."""

    def __init__(self, client: AsyncWebClient, budget: RateBudget, *, channel: str, thread_ts: str | None,
                 team_id: str | None, limit: int, status_after: float = STATUS_AFTER):
        self.client = client
        self.budget = budget
        self.channel = channel
        self.thread_ts = thread_ts
        self.team_id = team_id
        self.splitter = MessageSplitter(limit)
        self.message_ts: list[str] = []
        self.status_after = status_after
        self._status: asyncio.Task[None] | None = None  # the Thinking… note, waiting or being posted
        self._status_sent = False  # its post has gone out (it can no longer just be called off)
        self._placeholder: str | None = None  # the note's ts while it shows
        self._update: Reservation | None = None  # the chat.update slot that will replace the note
        self._streaming = False  # the current message is an open stream
        self.watch: Callable[[Unfinished | None], None] | None = None  # see `Watched`

    @property
    def unfinished(self) -> Unfinished | None:
        """The message a crash now would leave unfinished: an open stream, else the Thinking… note."""
        if self._streaming:
            return ("stream", self.message_ts[-1])
        if self._placeholder is not None:
            return ("status", self._placeholder)
        return None

    def _changed(self) -> None:
        if self.watch is not None:
            self.watch(self.unfinished)

    async def begin(self) -> None:
        if self._status is None and not self.message_ts:
            self._status = asyncio.get_running_loop().create_task(self._show_status())

    async def _show_status(self) -> None:
        await asyncio.sleep(self.status_after)
        # The note is shown only if the update that will turn it into the answer can be made at
        # once: chat.update has a workspace-wide budget (~50/min), and a note must never make an
        # answer wait for it. When many answers start slowly together, most go without a note.
        self._update = self.budget.reserve("chat.update", team=self.team_id, channel=self.channel)
        if self._update is None:
            return
        self._status_sent = True
        resp = None
        try:  # optional: when the budget is short the answer matters more than the note
            resp = await self._call("chat.postMessage", optional=True, thread_ts=self.thread_ts,
                                    markdown_text=STATUS_TEXT)
        except SlackApiError as exc:
            log.info("could not show the status (%s)", _error(exc))
        except Exception as exc:  # noqa: BLE001 - a courtesy: the answer goes on without it
            log.info("could not show the status (%s)", type(exc).__name__)
        if resp is None:
            self._release_update()
        else:
            self._placeholder = resp["ts"]
            self._changed()

    def _release_update(self) -> None:
        self.budget.release(self._update)
        self._update = None

    async def _status_shown(self) -> str | None:
        """Text is here: call the note off if it is not posted yet; else the ts of the note."""
        if (task := self._status) is not None:
            if not self._status_sent:
                task.cancel()  # still waiting: nothing was posted
            else:  # the post is in flight: learn its ts (if we are cancelled meanwhile, we ask again later)
                await asyncio.shield(task)
            self._status = None
        return self._placeholder

    async def _clear_status(self) -> None:
        """Remove the note (the answer has a message of its own)."""
        ts = await self._status_shown()
        self._release_update()  # the update it held is not needed
        if ts is None:
            return
        self._placeholder = None
        try:
            await self._call("chat.delete", ts=ts)
        except SlackApiError as exc:
            log.warning("could not remove the status note (%s)", _error(exc))
        self._changed()

    def _adopt_status(self) -> str | None:
        """The note becomes the answer's first message."""
        ts, self._placeholder = self._placeholder, None
        if ts is not None:
            self.message_ts.append(ts)
            self._changed()
        return ts

    async def _call(self, method: str, *, optional: bool = False, **params: Any) -> Any:
        # The note's update goes with the slot reserved for it (`_show_status`).
        reserved = self._update if method == "chat.update" and not optional else None
        return await self.budget.call(self.client, method, team=self.team_id, optional=optional,
                                      reserved=reserved, channel=self.channel, **params)

    async def _post(self, text: str, blocks: list[dict] | None = None, metadata: dict | None = None) -> None:
        """Post one whole message; if Slack counts it too long (it counts UTF-16), post it in halves."""
        try:
            resp = await self._call("chat.postMessage", thread_ts=self.thread_ts, **_content(text, blocks),
                                    **_meta(metadata))
        except SlackApiError as exc:
            if _error(exc) != "msg_too_long" or len(text) < 200:
                raise
            cut = text.rfind("\n", 0, len(text) // 2) + 1 or len(text) // 2
            await self._post(text[:cut])
            await self._post(text[cut:], blocks, metadata)
            return
        self.message_ts.append(resp["ts"])


class StreamedReply(_Output):
    """Native Slack streaming in a thread; one answer may span several messages."""

    def __init__(self, client: AsyncWebClient, budget: RateBudget, *, channel: str, thread_ts: str,
                 team_id: str | None, user_id: str | None, interval: float = STREAM_INTERVAL,
                 status_after: float = STATUS_AFTER):
        super().__init__(client, budget, channel=channel, thread_ts=thread_ts, team_id=team_id,
                         limit=STREAM_LIMIT, status_after=status_after)
        self.user_id = user_id
        self.interval = interval
        self._pending = ""  # escaped text of the current message not yet sent
        self._can_stream = True  # False once Slack refused: the rest is posted
        self._last = 0.0

    async def write(self, delta: str) -> None:
        await self._take(self.splitter.feed(delta))
        await self._progress()

    async def finish(self, note: str | None = None, blocks: list[dict] | None = None,
                     metadata: dict | None = None) -> None:
        await self._take(self.splitter.close())
        if note:
            self._pending += ("\n\n" if (self._pending or self._streaming) else "") + note
        await self._end_message(blocks, metadata)
        await self._clear_status()  # nothing was said at all: the note goes too

    async def _take(self, pieces: Iterable[Piece]) -> None:
        for piece in pieces:
            if piece.new_message and (self._pending.strip() or self._streaming):
                await self._end_message()
            self._pending += piece.text

    async def _progress(self) -> None:
        """Show the text as it arrives, as far as the rate budget allows."""
        if not self._pending.strip():
            return
        now = time.monotonic()
        if not self._streaming:
            if not self._can_stream:
                return  # posted whole when the message is complete
            await self._status_shown()  # the note, if it is being posted, goes up first
            try:
                resp = await self._call("chat.startStream", optional=True, thread_ts=self.thread_ts,
                                        markdown_text=self._pending, recipient_team_id=self.team_id,
                                        recipient_user_id=self.user_id)
            except SlackApiError as exc:
                log.warning("chat.startStream refused (%s); posting this answer instead", _error(exc))
                self._can_stream = False
                return
            if resp is None:
                return  # the budget is spent: this message is posted whole when complete
            self.message_ts.append(resp["ts"])
            self._streaming, self._pending, self._last = True, "", now
            self._changed()
            await self._clear_status()  # the answer shows: the note has done its job
        elif now - self._last >= self.interval:
            try:
                sent = await self._call("chat.appendStream", optional=True, ts=self.message_ts[-1],
                                        markdown_text=self._pending)
            except SlackApiError as exc:
                log.warning("chat.appendStream refused (%s); posting the rest instead", _error(exc))
                await self._abandon_stream()
                return
            if sent is not None:
                self._pending, self._last = "", now

    async def _end_message(self, blocks: list[dict] | None = None, metadata: dict | None = None) -> None:
        """Complete the current message with everything pending (and ``blocks`` under it)."""
        text, self._pending = self._pending, ""
        if self._streaming:
            extra: dict[str, Any] = {"markdown_text": text} if text else {}
            try:
                if blocks:
                    extra["blocks"] = blocks
                await self._call("chat.stopStream", ts=self.message_ts[-1], **extra, **_meta(metadata))
                return
            except SlackApiError as exc:
                log.warning("chat.stopStream refused (%s); posting its text instead", _error(exc))
                self._can_stream = False
            finally:  # stopped, or Slack will not take more for it: either way it is no longer open
                self._streaming = False
                self._changed()
        if text.strip():
            if len(text) <= UPDATE_LIMIT and await self._status_shown() is not None:
                ts = self._adopt_status()  # the note becomes this message
                await self._call("chat.update", ts=ts, **_content(text, blocks), **_meta(metadata))
                return
            await self._post(text, blocks, metadata)
            await self._clear_status()

    async def _abandon_stream(self) -> None:
        """Slack will not take more text for this message: close it as it is."""
        self._streaming, self._can_stream = False, False
        self._changed()
        with contextlib.suppress(SlackApiError):  # already stopped by Slack: what it shows stays
            await self._call("chat.stopStream", ts=self.message_ts[-1])


class PostedReply(_Output):
    """chat.postMessage for the first text, chat.update while it grows."""

    def __init__(self, client: AsyncWebClient, budget: RateBudget, *, channel: str, team_id: str | None,
                 thread_ts: str | None = None, interval: float = UPDATE_INTERVAL,
                 status_after: float = STATUS_AFTER):
        super().__init__(client, budget, channel=channel, thread_ts=thread_ts, team_id=team_id,
                         limit=UPDATE_LIMIT, status_after=status_after)
        self.interval = interval
        self._text = ""  # the current message as it should read
        self._shown = ""  # what Slack shows for it
        self._last = 0.0

    async def write(self, delta: str) -> None:
        for piece in self.splitter.feed(delta):
            if piece.new_message and self._text.strip():
                await self._end_message()
            self._text += piece.text
        await self._progress()

    async def finish(self, note: str | None = None, blocks: list[dict] | None = None,
                     metadata: dict | None = None) -> None:
        for piece in self.splitter.close():
            if piece.new_message and self._text.strip():
                await self._end_message()
            self._text += piece.text
        if note:
            self._text += ("\n\n" if self._text else "") + note
        await self._end_message(blocks, metadata)
        await self._clear_status()  # nothing was said at all: the note goes too

    async def _from_status(self) -> None:
        """The first text: the Thinking… note, if it shows, becomes its message."""
        if not self._shown and await self._status_shown() is not None:
            self._adopt_status()
            self._shown, self._last = STATUS_TEXT, 0.0

    async def _progress(self) -> None:
        if not self._text.strip() or self._text == self._shown:
            return
        await self._from_status()
        now = time.monotonic()
        if not self._shown:
            resp = await self._call("chat.postMessage", optional=True, thread_ts=self.thread_ts,
                                    markdown_text=self._text)
            if resp is not None:
                self.message_ts.append(resp["ts"])
                self._shown, self._last = self._text, now
        elif now - self._last >= self.interval and await self._call(
                "chat.update", optional=True, ts=self.message_ts[-1], markdown_text=self._text) is not None:
            self._shown, self._last = self._text, now

    async def _end_message(self, blocks: list[dict] | None = None, metadata: dict | None = None) -> None:
        if self._text.strip():
            await self._from_status()
        if self._text.strip() and (self._text != self._shown or blocks or metadata):
            if self._shown:
                await self._call("chat.update", ts=self.message_ts[-1], **_content(self._text, blocks),
                                 **_meta(metadata))
            else:
                await self._post(self._text, blocks, metadata)
        self._text, self._shown = "", ""


class ResponseUrlReply:
    """Deliver through a slash command's response_url (Slack allows 5 posts per command)."""

    def __init__(self, respond: Callable[..., Awaitable[Any]], *, header: str = ""):
        self.respond = respond
        self.splitter = MessageSplitter(RESPONSE_LIMIT)
        self.message_ts: list[str] = []  # response_url posts have no ts we can learn
        self._messages = [header + "\n\n" if header else ""]

    async def write(self, delta: str) -> None:
        self._take(self.splitter.feed(delta))

    async def finish(self, note: str | None = None, blocks: list[dict] | None = None,
                     metadata: dict | None = None) -> None:
        self._take(self.splitter.close())
        if note:
            self._messages[-1] += note
        for text in [m for m in self._messages if m.strip()][:5]:
            try:
                await self.respond(response_type="in_channel", text=text[:3000],
                                   blocks=[{"type": "markdown", "text": text}])
            except Exception as exc:  # noqa: BLE001 - the webhook client raises several types
                raise SlackDeliveryError(f"response_url post failed: {type(exc).__name__}") from exc

    def _take(self, pieces: Iterable[Piece]) -> None:
        for piece in pieces:
            if piece.new_message and self._messages[-1].strip():
                self._messages.append("")
            self._messages[-1] += piece.text


def _content(text: str, blocks: list[dict] | None) -> dict[str, Any]:
    """A message body: markdown text alone, or (with buttons) a markdown block and the buttons,
    with ``text`` for notifications (Slack takes markdown_text or blocks, not both)."""
    if not blocks:
        return {"markdown_text": text}
    return {"text": text[:3000], "blocks": [{"type": "markdown", "text": text}, *blocks]}


def _meta(metadata: dict | None) -> dict[str, Any]:
    return {"metadata": metadata} if metadata else {}


def _error(exc: SlackApiError) -> str | None:
    return exc.response.get("error") if exc.response is not None else None


def reply_for(client: AsyncWebClient, budget: RateBudget, *, channel: str | None, thread_ts: str | None,
              team_id: str | None, user_id: str | None = None, respond: Callable[..., Awaitable[Any]] | None = None,
              header: str = "") -> Reply:
    """The one choice of how an answer is delivered: streamed into its thread; posted in the
    conversation where there is no thread (a top-level DM); or, with no channel to post in (a
    slash command where the bot may not post), through the command's response_url."""
    if channel is None:
        assert respond is not None, "an answer with no channel goes through a response_url"
        return ResponseUrlReply(respond, header=header)
    if thread_ts:
        return StreamedReply(client, budget, channel=channel, thread_ts=thread_ts, team_id=team_id, user_id=user_id)
    return PostedReply(client, budget, channel=channel, team_id=team_id)
