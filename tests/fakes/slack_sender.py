"""Send signed Slack requests (events, slash commands, interactions) into the bot's HTTP endpoint.

Signing is the bot's own :mod:`bot.signing` (the playground signs with it too), over the exact
bytes sent. Payload shapes follow /work/shared/notes/slack-platform.md §2-4.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import aiohttp

from bot.signing import USER_AGENT, sign

__all__ = ["SlackSender", "mention", "message", "new_ts", "reaction", "sign"]

BOT_USER_ID = "UBOT"
TEAM_ID = "T1"
APP_ID = "A1"
VERIFICATION_TOKEN = "legacy-verification-token"

_event_ids = itertools.count(1)
_last_ts = 0


_sign = sign  # SlackSender.raw has a ``sign`` flag that shadows the function


def new_ts() -> str:
    """A unique, increasing Slack-style ts based on the current time."""
    global _last_ts
    _last_ts = max(_last_ts + 1, int(time.time() * 1_000_000))
    return f"{_last_ts // 1_000_000}.{_last_ts % 1_000_000:06d}"


def _rich_text(text: str) -> list[dict[str, Any]]:
    """The ``rich_text`` block Slack attaches to user messages (user mentions become elements)."""
    elements: list[dict[str, Any]] = []
    for part in re.split(r"(<@[UW][A-Z0-9]+>)", text):
        if user := re.fullmatch(r"<@([UW][A-Z0-9]+)>", part):
            elements.append({"type": "user", "user_id": user.group(1)})
        elif part:
            elements.append({"type": "text", "text": part})
    section = {"type": "rich_text_section", "elements": elements}
    return [{"type": "rich_text", "block_id": uuid.uuid4().hex[:5], "elements": [section]}]


def _user_message(
    kind: str,
    text: str,
    user: str | None,
    channel: str,
    ts: str | None,
    thread_ts: str | None,
    parent_user_id: str | None,
) -> dict[str, Any]:
    ts = ts or new_ts()
    event: dict[str, Any] = {
        "type": kind,
        "user": user,
        "text": text,
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        "team": TEAM_ID,
        "client_msg_id": str(uuid.uuid4()),
        "blocks": _rich_text(text),
    }
    if user is None:
        del event["user"]
    if thread_ts:
        event["thread_ts"] = thread_ts
        event["parent_user_id"] = parent_user_id or user
    return event


def mention(
    text: str,
    *,
    user: str = "U1",
    channel: str = "C1",
    ts: str | None = None,
    thread_ts: str | None = None,
    parent_user_id: str | None = None,
) -> dict[str, Any]:
    """An ``app_mention`` event; ``"hello"`` becomes ``"<@UBOT> hello"``."""
    if f"<@{BOT_USER_ID}>" not in text:
        text = f"<@{BOT_USER_ID}> {text}"
    return _user_message("app_mention", text, user, channel, ts, thread_ts, parent_user_id)


def message(
    text: str,
    *,
    user: str | None = "U1",
    channel: str = "C1",
    channel_type: str = "channel",
    ts: str | None = None,
    thread_ts: str | None = None,
    subtype: str | None = None,
    bot_id: str | None = None,
    parent_user_id: str | None = None,
) -> dict[str, Any]:
    """A ``message`` event (``channel_type`` ``"channel"``, ``"im"``, ``"group"`` or ``"mpim"``)."""
    event = _user_message("message", text, user, channel, ts, thread_ts, parent_user_id)
    event["channel_type"] = channel_type
    if subtype is not None:
        event["subtype"] = subtype
    if bot_id is not None:
        event["bot_id"] = bot_id
        event.pop("client_msg_id")
    return event


def reaction(
    kind: str, reaction: str, *, user: str, channel: str, ts: str, item_user: str | None = BOT_USER_ID,
    channel_type: str | None = None,
) -> dict[str, Any]:
    """A ``reaction_added``/``reaction_removed`` event on message ``ts`` (👍 is ``"+1"``); newer
    payloads say the conversation's ``item.channel_type`` too."""
    if kind not in ("reaction_added", "reaction_removed"):
        raise ValueError(f"kind must be reaction_added or reaction_removed, not {kind!r}")
    event: dict[str, Any] = {
        "type": kind,
        "user": user,
        "reaction": reaction,
        "item": {"type": "message", "channel": channel, "ts": ts},
        "event_ts": new_ts(),
    }
    if item_user is not None:
        event["item_user"] = item_user
    if channel_type is not None:
        event["item"]["channel_type"] = channel_type
    return event


def click(message: dict[str, Any], channel: str, action_id: str, value: str, *, user: str = "U2",
          kind: str = "button") -> dict[str, Any]:
    """The block_actions payload Slack sends when someone clicks under a message."""
    return {
        "type": "block_actions", "api_app_id": "A1", "token": "t", "trigger_id": f"trig-{time.time_ns()}",
        "user": {"id": user, "username": user.lower(), "team_id": "T1"}, "team": {"id": "T1"},
        "channel": {"id": channel}, "message": message, "response_url": "https://hooks.slack.com/actions/x",
        "container": {"type": "message", "message_ts": message["ts"], "channel_id": channel,
                      "is_ephemeral": False, "thread_ts": message.get("thread_ts")},
        "actions": [{"action_id": action_id, "block_id": "b1", "value": value, "type": kind,
                     "action_ts": new_ts()}],
    }


def submission(view: dict[str, Any], parts: list[str], *, user: str = "U2") -> dict[str, Any]:
    """The view_submission payload of a modal whose inputs ``part_0``, ``part_1``… hold ``parts``."""
    values = {f"part_{i}": {"text": {"type": "plain_text_input", "value": p}} for i, p in enumerate(parts)}
    return {"type": "view_submission", "api_app_id": "A1", "team": {"id": "T1"},
            "user": {"id": user, "team_id": "T1"}, "trigger_id": "trig",
            "view": {**view, "id": "V1", "state": {"values": values}}}


class SlackSender:
    """Posts signed requests to the bot's ``/slack/events`` URL; every method returns ``(status, body)``.

    Pass an ``aiohttp.ClientSession`` to reuse one; otherwise the sender opens its own and
    :meth:`close` (or ``async with``) closes it.
    """

    def __init__(self, url: str, signing_secret: str, session: aiohttp.ClientSession | None = None):
        self.url = url
        self.signing_secret = signing_secret
        self._session = session
        self._owns_session = session is None
        self.last_event_id: str | None = None

    async def __aenter__(self) -> SlackSender:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if the sender created it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def raw(
        self,
        body: bytes | str,
        *,
        content_type: str,
        sign: bool = True,
        timestamp: int | str | None = None,
        signature: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        """Post ``body`` as is. ``sign=False`` omits the signature headers unless
        ``timestamp``/``signature`` are given; explicit values override computed ones."""
        data = body.encode() if isinstance(body, str) else body
        if timestamp is None and sign:
            timestamp = int(time.time())
        request_headers = {"Content-Type": content_type, "User-Agent": USER_AGENT}
        if timestamp is not None:
            request_headers["X-Slack-Request-Timestamp"] = str(timestamp)
        if signature is None and sign:
            signature = _sign(self.signing_secret, timestamp, data)
        if signature is not None:
            request_headers["X-Slack-Signature"] = signature
        request_headers.update(headers or {})
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.post(self.url, data=data, headers=request_headers) as response:
            return response.status, await response.text()

    async def event(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        team_id: str = TEAM_ID,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        authorizations_user: str | None = BOT_USER_ID,
    ) -> tuple[int, str]:
        """Deliver ``event`` in an ``event_callback`` envelope; ``retry_num`` marks a redelivery."""
        self.last_event_id = event_id = event_id or f"Ev{next(_event_ids):08d}{uuid.uuid4().hex[:4].upper()}"
        envelope: dict[str, Any] = {
            "token": VERIFICATION_TOKEN,
            "team_id": team_id,
            "context_team_id": team_id,
            "context_enterprise_id": None,
            "api_app_id": APP_ID,
            "event": event,
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "is_ext_shared_channel": False,
        }
        if authorizations_user is not None:
            envelope["authorizations"] = [
                {
                    "enterprise_id": None,
                    "team_id": team_id,
                    "user_id": authorizations_user,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ]
        headers = {}
        if retry_num is not None:
            headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason}
        return await self.raw(json.dumps(envelope), content_type="application/json", headers=headers)

    async def command(
        self,
        command: str,
        text: str,
        *,
        user_id: str = "U1",
        user_name: str = "alice",
        channel_id: str = "C1",
        channel_name: str = "general",
        team_id: str = TEAM_ID,
        response_url: str = "https://hooks.slack.com/commands/T1/1/x",
        trigger_id: str = "t.1",
    ) -> tuple[int, str]:
        """Post a slash command (form-encoded, every field Slack sends)."""
        form = {
            "token": VERIFICATION_TOKEN,
            "team_id": team_id,
            "team_domain": "flywheel-test",
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user_name,
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": trigger_id,
        }
        return await self.raw(urlencode(form), content_type="application/x-www-form-urlencoded")

    async def action(self, payload: dict[str, Any]) -> tuple[int, str]:
        """Post an interactivity payload (``payload=<url-encoded JSON>``)."""
        body = urlencode({"payload": json.dumps(payload)})
        return await self.raw(body, content_type="application/x-www-form-urlencoded")
