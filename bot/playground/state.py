"""The Playground's Slack workspace: channels, messages, reactions, threads and the Home view.

Everything here is synchronous and lives on the event loop's thread. The workspace is kept
in a JSON file (written atomically, at most every ``SAVE_DELAY`` seconds, and on close), so
restarting ``flywheel dev`` shows the same conversation. Ephemeral messages and open modals
are not kept.

Messages are stored the way Slack returns them from ``conversations.history`` plus two keys
of our own that Slack does not return: ``format`` (``markdown`` for text the bot sent as
``markdown_text``, ``mrkdwn`` for ``text``) and ``streaming``.

Assistant threads (Slack's assistant pane, one thread in the DM with the bot per chat) are kept
with what the bot set on them: suggested prompts and title (kept), status (this run only).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from bot.playground.wire import format_ts, ts_micros

log = logging.getLogger(__name__)

ME = "U_YOU"
MY_NAME = "you"
SLACKBOT = "USLACKBOT"  # Slack's own voice: says, to you alone, what it will not do
BOT_NAME = "flywheel"
APP_ID = "A_PLAY"
TEAM_NAME = "Playground"
TEAM_DOMAIN = "playground"
CHANNELS: tuple[dict[str, Any], ...] = (
    {"id": "C_GENERAL", "name": "general", "is_im": False},
    {"id": "C_RANDOM", "name": "random", "is_im": False},
    {"id": "D_BOT", "name": BOT_NAME, "is_im": True},
)
SAVE_DELAY = 0.5
STATE_FORMAT = "flywheel-playground-state"
OURS = ("format", "streaming", "your_feedback")  # kept on messages for the page, never returned by the Web API


class State:
    """The workspace as the bot and the page see it; persisted to ``path``."""

    def __init__(self, path: Path, *, bot_user_id: str, bot_id: str, team_id: str):
        self.path = Path(path)
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.team_id = team_id
        self.channels: dict[str, dict[str, Any]] = {c["id"]: dict(c) for c in CHANNELS}
        self.messages: dict[str, dict[str, dict[str, Any]]] = {c: {} for c in self.channels}
        self.home: dict[str, Any] | None = None
        self.panes: dict[tuple[str, str], dict[str, Any]] = {}  # (DM, thread_ts) -> assistant thread
        self._clock = 0
        self._dirty = False
        self._timer: asyncio.TimerHandle | None = None
        self._load()

    # -- time -------------------------------------------------------------------------

    def next_ts(self) -> str:
        """A new ts: unique, increasing, close to the wall clock."""
        self._clock = max(self._clock + 1, int(time.time() * 1_000_000))
        return format_ts(self._clock)

    # -- reading ----------------------------------------------------------------------

    def get(self, channel: str, ts: str | None) -> dict[str, Any] | None:
        return self.messages.get(channel, {}).get(ts or "")

    def sorted(self, channel: str) -> list[dict[str, Any]]:
        """Every message of the channel (thread replies included), oldest first."""
        return sorted(self.messages.get(channel, {}).values(), key=lambda m: ts_micros(m["ts"]))

    def thread(self, channel: str, parent_ts: str) -> list[dict[str, Any]]:
        """The parent (if it exists) and its replies, oldest first."""
        return [m for m in self.sorted(channel) if m["ts"] == parent_ts or m.get("thread_ts") == parent_ts]

    def root_of(self, channel: str, ts: str) -> str | None:
        """The thread a new reply to ``ts`` belongs to (a reply's ts stands for its thread)."""
        message = self.get(channel, ts)
        if message is None:
            return None
        return message.get("thread_ts") or message["ts"]

    def pane(self, channel: str, thread_ts: str | None) -> dict[str, Any] | None:
        """The assistant thread rooted at ``thread_ts`` (None: an ordinary thread or none)."""
        return self.panes.get((channel, thread_ts or ""))

    def is_reply(self, message: dict[str, Any]) -> bool:
        return bool(message.get("thread_ts")) and message["thread_ts"] != message["ts"]

    def for_api(self, message: dict[str, Any], *, metadata: bool = False) -> dict[str, Any]:
        """The message as Slack's Web API returns it (``metadata`` only when asked for)."""
        out = {k: v for k, v in message.items() if k not in OURS}
        if not metadata:
            out.pop("metadata", None)
        return out

    def for_page(self, channel: str, message: dict[str, Any]) -> dict[str, Any]:
        """The message as the page receives it (PROTOCOL.md, "Messages")."""
        out = dict(message)
        out["channel"] = channel
        out.setdefault("format", "mrkdwn")
        out.setdefault("streaming", False)
        return out

    # -- writing ----------------------------------------------------------------------

    def open_pane(self, channel: str, *, user: str, context_channel: str | None) -> dict[str, Any]:
        """A new assistant thread: Slack starts it with a message of the app's in the DM."""
        root, _ = self.add(channel, user=self.bot_user_id, bot=True, text="New chat")
        pane = {"channel": channel, "thread_ts": root["ts"], "user": user, "context_channel": context_channel,
                "title": None, "status": "", "prompts": []}
        self.panes[(channel, root["ts"])] = pane
        self.changed()
        return pane

    def add(self, channel: str, *, user: str, text: str, fmt: str = "mrkdwn", thread_ts: str | None = None,
            bot: bool = False, **extra: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Store a new message; returns it and the thread parent it changed (if any)."""
        ts = self.next_ts()
        message: dict[str, Any] = {"type": "message", "ts": ts, "user": user, "text": text, "team": self.team_id}
        if bot:
            message.update(user=self.bot_user_id, bot_id=self.bot_id, app_id=APP_ID)
        message.update({k: v for k, v in extra.items() if v is not None})
        message["format"] = fmt
        message.setdefault("streaming", False)
        parent = None
        if thread_ts and thread_ts != ts:
            parent = self.get(channel, thread_ts)
            message["thread_ts"] = thread_ts
            if parent is not None:
                message["parent_user_id"] = parent.get("user")
        self.messages[channel][ts] = message
        if parent is not None:
            self._recount(channel, parent)
        self.changed()
        return message, parent

    def delete(self, channel: str, ts: str) -> tuple[bool, dict[str, Any] | None]:
        """Delete a message. A parent with replies becomes a tombstone, as in Slack.
        Returns (removed: the message is gone rather than a tombstone, the changed parent or tombstone)."""
        message = self.messages[channel].get(ts)
        if message is None:
            return False, None
        if message.get("reply_count"):
            kept = ("type", "ts", "thread_ts", "reply_count", "reply_users", "reply_users_count", "latest_reply")
            tomb: dict[str, Any] = {k: message[k] for k in kept if k in message}
            tomb.update(subtype="tombstone", user="USLACKBOT", text="This message was deleted.", hidden=True)
            self.messages[channel][ts] = tomb
            self.changed()
            return False, tomb
        del self.messages[channel][ts]
        parent = None
        if self.is_reply(message):
            parent = self.get(channel, message["thread_ts"])
            if parent is not None:
                self._recount(channel, parent)
                if parent.get("subtype") == "tombstone" and not parent.get("reply_count"):
                    del self.messages[channel][parent["ts"]]
        self.changed()
        return True, parent

    def _recount(self, channel: str, parent: dict[str, Any]) -> None:
        replies = [m for m in self.thread(channel, parent["ts"]) if m["ts"] != parent["ts"]]
        if not replies:
            for key in ("reply_count", "reply_users", "reply_users_count", "latest_reply"):
                parent.pop(key, None)
            if parent.get("thread_ts") == parent["ts"]:
                del parent["thread_ts"]
            return
        users = list(dict.fromkeys(m.get("user") for m in replies if m.get("user")))
        parent.update(thread_ts=parent["ts"], reply_count=len(replies), reply_users=users,
                      reply_users_count=len(users), latest_reply=replies[-1]["ts"])

    def toggle_reaction(self, message: dict[str, Any], name: str, user: str, add: bool) -> bool:
        """Add or remove ``user``'s reaction; False if that changes nothing."""
        reactions = message.get("reactions") or []
        entry = next((r for r in reactions if r["name"] == name), None)
        if add:
            if entry is not None and user in entry["users"]:
                return False
            if entry is None:
                entry = {"name": name, "users": [], "count": 0}
                reactions.append(entry)
                message["reactions"] = reactions
            entry["users"].append(user)
        else:
            if entry is None or user not in entry["users"]:
                return False
            entry["users"].remove(user)
        entry["count"] = len(entry["users"])
        if not entry["users"]:
            reactions.remove(entry)
        if not reactions:
            del message["reactions"]
        self.changed()
        return True

    def reset(self) -> None:
        """Forget every message and assistant thread (the Home view stays)."""
        self.messages = {c: {} for c in self.channels}
        self.panes = {}
        self.changed()

    # -- persistence ------------------------------------------------------------------

    def changed(self) -> None:
        """Something changed: save soon (debounced)."""
        self._dirty = True
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.save()
            return
        self._timer = loop.call_later(SAVE_DELAY, self._save_later)

    def _save_later(self) -> None:
        self._timer = None
        self.save()

    def save(self) -> None:
        """Write the state file now, atomically (a temporary file renamed over it)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._dirty:
            return
        data = {
            "format": STATE_FORMAT, "version": 1, "clock": self._clock, "home": self.home,
            "channels": {c: [self._persisted(m) for m in self.sorted(c)] for c in self.channels},
            "panes": [{**p, "status": ""} for p in self.panes.values()],  # a status does not survive a restart
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
            os.replace(tmp, self.path)
            self._dirty = False
        except OSError as exc:
            log.error("could not save the playground state to %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()

    @staticmethod
    def _persisted(message: dict[str, Any]) -> dict[str, Any]:
        return {**message, "streaming": False}  # a stream does not survive a restart

    def _load(self) -> None:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error("could not read the playground state %s: %s; starting empty", self.path, exc)
            return
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
                raise ValueError("not a playground state file")
            for channel, messages in (data.get("channels") or {}).items():
                if channel in self.messages:
                    self.messages[channel] = {m["ts"]: m for m in messages if isinstance(m, dict) and "ts" in m}
            home = data.get("home")
            self.home = home if isinstance(home, dict) else None
            self.panes = {(p["channel"], p["thread_ts"]): p for p in data.get("panes") or []
                          if isinstance(p, dict) and self.get(p.get("channel", ""), p.get("thread_ts"))}
            newest = max((ts_micros(ts) for msgs in self.messages.values() for ts in msgs), default=0)
            self._clock = max(int(data.get("clock") or 0), newest)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            broken = self.path.with_name(self.path.name + ".broken")
            log.error("the playground state %s is unreadable (%s); moved to %s, starting empty",
                      self.path, exc, broken.name)
            with contextlib.suppress(OSError):
                os.replace(self.path, broken)
            self.messages = {c: {} for c in self.channels}
            self.home = None
            self.panes = {}
