"""What the page calls (``/playground/api/*``): you act in the local Slack, the bot hears of it.

Each call changes the workspace, pushes the change to the pages, and delivers what Slack
would send to the bot in the background (so the call returns at once); only a modal's
submission waits for the bot, whose answer decides whether the modal stays open.
Failures answer ``{"ok": false, "error": "<reason for a person>"}`` with a 4xx/5xx status.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from aiohttp import web

from bot.manifest import manifest
from bot.playground.deliver import VERIFICATION_TOKEN, Delivery
from bot.playground.host import Host
from bot.playground.state import APP_ID, BOT_NAME, ME, MY_NAME, SLACKBOT, TEAM_DOMAIN, TEAM_NAME
from bot.playground.webapi import WebApi
from bot.playground.wire import SlackError

if TYPE_CHECKING:
    from bot.prompts import PromptSet

MAX_TEXT = 40_000
_BOT_MENTION = re.compile(r"(?<![\w@/])@" + BOT_NAME + r"\b", re.IGNORECASE)
_BROADCAST = re.compile(r"(?<![\w@/])@(here|channel|everyone)\b", re.IGNORECASE)
_TOKEN = re.compile(r"(<@[UW][A-Z0-9_]+>|<![a-z]+>)")
_COMMAND = re.compile(r"(/\S+)\s*(.*)", re.DOTALL)
REQUIRED = "Please complete this required field."


class PageError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


Handler = Callable[["PageApi", dict[str, Any]], Awaitable[dict[str, Any]]]


def _json_call(handler: Handler) -> Callable[[PageApi, web.Request], Awaitable[web.Response]]:
    """Parse the JSON body, refuse other sites, turn PageError into ``{"ok": false, "error"}``."""

    @wraps(handler)
    async def wrapper(self: PageApi, request: web.Request) -> web.Response:
        if not same_origin(request):
            return web.json_response({"ok": False, "error": "cross-origin request refused"}, status=403)
        try:
            raw = await request.text()
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise PageError("the body must be a JSON object")
            return web.json_response(await handler(self, body))
        except ValueError:
            return web.json_response({"ok": False, "error": "the body is not valid JSON"}, status=400)
        except PageError as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=exc.status)

    return wrapper


def same_origin(request: web.Request) -> bool:
    """Refuse what another web site makes a browser send here (its Origin names another host)."""
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return False
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc.lower() == request.host.lower()


def slack_text(text: str, bot_user_id: str) -> str:
    """What you typed, as Slack stores it: ``&<>`` escaped, ``@flywheel`` a mention, ``@here`` a broadcast."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _BOT_MENTION.sub(f"<@{bot_user_id}>", text)
    return _BROADCAST.sub(lambda m: f"<!{m.group(1).lower()}>", text)


def rich_text(text: str) -> list[dict[str, Any]]:
    """The ``rich_text`` block Slack attaches to a person's message."""
    elements: list[dict[str, Any]] = []
    for part in _TOKEN.split(text):
        if part.startswith("<@"):
            elements.append({"type": "user", "user_id": part[2:-1]})
        elif part.startswith("<!"):
            elements.append({"type": "broadcast", "range": part[2:-1]})
        elif part:
            plain = part.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
            elements.append({"type": "text", "text": plain})
    return [{"type": "rich_text", "block_id": uuid.uuid4().hex[:5],
             "elements": [{"type": "rich_text_section", "elements": elements}]}]


def _find_element(blocks: Any, action_id: str, block_id: str | None) -> tuple[dict, dict]:
    for block in blocks or []:
        if block_id and block.get("block_id") != block_id:
            continue
        for element in block.get("elements") or []:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return block, element
        accessory = block.get("accessory")
        if isinstance(accessory, dict) and accessory.get("action_id") == action_id:
            return block, accessory
    return {}, {}


class PageHost(Host, Protocol):
    """What the page's calls need of the stand-in besides :class:`~bot.playground.host.Host`."""

    api: WebApi
    delivery: Delivery
    ephemerals: dict[str, dict[str, Any]]
    model: dict
    vote_reactions: frozenset[str]

    def prompts(self) -> PromptSet:
        raise NotImplementedError

    def prompt_list(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def broken_commands(self) -> list[str]:
        raise NotImplementedError

    def response_url(self, channel: str, *, thread_ts: str | None = None, message_ts: str | None = None) -> str:
        raise NotImplementedError


class PageApi:
    def __init__(self, standin: PageHost):
        self.s = standin

    @property
    def state(self):
        return self.s.state

    # -- shapes Slack sends ----------------------------------------------------------------

    def _user(self) -> dict[str, Any]:
        return {"id": ME, "username": MY_NAME, "name": MY_NAME, "team_id": self.s.team_id}

    def _team(self) -> dict[str, Any]:
        return {"id": self.s.team_id, "domain": TEAM_DOMAIN}

    def _channel_ref(self, channel: str) -> dict[str, Any]:
        info = self.state.channels[channel]
        return {"id": channel, "name": "directmessage" if info["is_im"] else info["name"]}

    def _interaction(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "token": VERIFICATION_TOKEN, "api_app_id": APP_ID, "team": self._team(),
                "user": self._user(), "enterprise": None, "is_enterprise_install": False, **fields}

    def shortcuts(self) -> list[dict[str, Any]]:
        """The app's shortcuts, as its manifest declares them."""
        try:
            return list(manifest(self.s.prompts(), socket=True)["features"].get("shortcuts") or [])
        except Exception:  # noqa: BLE001 - the page works without them
            return []

    # -- checks ---------------------------------------------------------------------------

    def _channel(self, body: dict[str, Any]) -> str:
        channel = body.get("channel")
        if not isinstance(channel, str) or channel not in self.state.channels:
            raise PageError(f"no such channel: {channel!r}")
        return channel

    def _message(self, body: dict[str, Any], *, ephemeral: bool = False) -> tuple[str, dict[str, Any]]:
        channel = self._channel(body)
        ts = body.get("ts")
        message = self.state.get(channel, ts if isinstance(ts, str) else None)
        if message is None and ephemeral and ts in self.s.ephemerals \
                and self.s.ephemerals[ts]["channel"] == channel:
            message = self.s.ephemerals[ts]
        if message is None:
            raise PageError(f"no message {ts!r} in {channel}", 404)
        return channel, message

    # -- calls ------------------------------------------------------------------------------

    @_json_call
    async def get_state(self, body: dict[str, Any]) -> dict[str, Any]:
        st = self.state
        return {
            "ok": True,
            "me": {"id": ME, "name": MY_NAME},
            "bot": {"id": self.s.bot_user_id, "bot_id": self.s.bot_id, "name": BOT_NAME},
            "team": {"id": self.s.team_id, "name": TEAM_NAME, "domain": TEAM_DOMAIN},
            "channels": [dict(c) for c in st.channels.values()],
            "messages": {c: [st.for_page(c, m) for m in st.sorted(c)] for c in st.channels},
            "prompts": self.s.prompt_list(),
            "broken_commands": self.s.broken_commands(),
            "shortcuts": self.shortcuts(),
            "model": self.s.model,
            "home": st.home,
            "assistant_threads": sorted((dict(p) for p in st.panes.values()), key=lambda p: float(p["thread_ts"])),
        }

    @_json_call
    async def message(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(body)
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise PageError("the message is empty")
        text = text.strip()
        if len(text) > MAX_TEXT:
            raise PageError(f"the message is longer than Slack's {MAX_TEXT:,} characters")
        root = None
        if body.get("thread_ts"):
            root = self.state.root_of(channel, str(body["thread_ts"]))
            if root is None:
                raise PageError(f"no thread {body['thread_ts']!r} in {channel}", 404)
        if text.startswith("/"):
            return self._command(channel, text, root)
        said = slack_text(text, self.s.bot_user_id)
        message, parent = self.state.add(channel, user=ME, text=said, thread_ts=root, blocks=rich_text(said),
                                         client_msg_id=str(uuid.uuid4()))
        self.s.show(channel, message)
        if parent is not None:
            self.s.show(channel, parent)
        im = self.state.channels[channel]["is_im"]
        event: dict[str, Any] = {
            "type": "message", "user": ME, "text": said, "ts": message["ts"], "channel": channel,
            "event_ts": message["ts"], "team": self.s.team_id, "client_msg_id": message["client_msg_id"],
            "blocks": message["blocks"],
        }
        if root:
            event.update(thread_ts=root, parent_user_id=message.get("parent_user_id", ME))
            if self.state.pane(channel, root) is not None:  # Slack marks what is written in the pane
                event["assistant_thread"] = {"action_token": f"{time.time():.0f}.{uuid.uuid4().hex}"}
        events = []
        if not im and f"<@{self.s.bot_user_id}>" in said:  # Slack sends both: app_mention and message
            events.append({**event, "type": "app_mention"})
        events.append({**event, "channel_type": "im" if im else "channel"})
        self.s.delivery.spawn(self.s.delivery.events(*events))
        return {"ok": True, "ts": message["ts"]}

    def _command(self, channel: str, text: str, root: str | None) -> dict[str, Any]:
        match = _COMMAND.fullmatch(text)
        if match is None:
            raise PageError(f"unknown command {text.split()[0]}")
        name, rest = match.group(1), match.group(2).strip()
        try:
            prompt = self.s.prompts().by_command(name)
        except Exception:  # noqa: BLE001 - reported as an unknown command
            prompt = None
        command = prompt.command if prompt is not None else None
        if command is None and name.lower() in self.s.broken_commands():
            command = name.lower()  # its file is broken: the bot says how
        if command is None:
            raise PageError(f"unknown command {name}")
        if root is not None:  # Slack runs no app's command in a thread: Slackbot says so, only to you
            self.s.ephemeral(channel, text=f"{command} is not supported in threads. Sorry!", thread_ts=root,
                             user=SLACKBOT)
            return {"ok": True, "command": command, "refused": True}
        form = {
            "token": VERIFICATION_TOKEN, "team_id": self.s.team_id, "team_domain": TEAM_DOMAIN,
            "channel_id": channel, "channel_name": self._channel_ref(channel)["name"], "user_id": ME,
            "user_name": MY_NAME, "command": command, "text": rest, "api_app_id": APP_ID,
            "is_enterprise_install": "false", "response_url": self.s.response_url(channel),
            "trigger_id": self.s.api.issue_trigger(),
        }
        self.s.delivery.spawn(self._run_command(form, channel))
        return {"ok": True, "command": command}

    async def _run_command(self, form: dict[str, str], channel: str) -> None:
        """Deliver the command; the bot's acknowledgement, if it says something, is shown to you."""
        answered = await self.s.delivery.command(form)
        if answered is None or not answered[1].strip():
            return
        text = answered[1]
        reply: dict[str, Any] = {"text": text}
        if text.lstrip().startswith("{"):
            with contextlib.suppress(ValueError):
                reply = json.loads(text)
        words, blocks = str(reply.get("text") or ""), reply.get("blocks")
        if not (words or blocks):
            return
        if reply.get("response_type") == "in_channel":
            message, _ = self.state.add(channel, user=self.s.bot_user_id, bot=True, text=words,
                                        blocks=blocks or None)
            self.s.show(channel, message)
        else:
            self.s.ephemeral(channel, text=words, blocks=blocks)

    @_json_call
    async def reaction(self, body: dict[str, Any]) -> dict[str, Any]:
        channel, message = self._message(body)
        name = str(body.get("name") or "").strip().strip(":")
        if not name or any(c.isspace() for c in name):
            raise PageError(f"not a reaction name: {body.get('name')!r}")
        add = body.get("add")
        if not isinstance(add, bool):  # toggle
            add = not any(r["name"] == name and ME in r["users"] for r in message.get("reactions") or [])
        if not self.state.toggle_reaction(message, name, ME, add):
            return {"ok": True, "changed": False}
        if add and name.split("::")[0] in self.s.vote_reactions:
            message.pop("your_feedback", None)  # one vote per person: the reaction replaces a button vote
            self.state.changed()
        self.s.show(channel, message)
        event: dict[str, Any] = {"type": "reaction_added" if add else "reaction_removed", "user": ME,
                                 "reaction": name, "item": {"type": "message", "channel": channel,
                                                            "ts": message["ts"]},
                                 "event_ts": self.state.next_ts()}
        if message.get("user"):
            event["item_user"] = message["user"]
        self.s.delivery.spawn(self.s.delivery.events(event))
        return {"ok": True, "changed": True}

    @_json_call
    async def action(self, body: dict[str, Any]) -> dict[str, Any]:
        channel, message = self._message(body, ephemeral=True)
        action_id = body.get("action_id")
        if not isinstance(action_id, str) or not action_id:
            raise PageError("action_id is missing")
        block, element = _find_element(message.get("blocks"), action_id, body.get("block_id"))
        kind = body.get("type") or element.get("type") or "button"
        action: dict[str, Any] = {"action_id": action_id, "block_id": body.get("block_id") or block.get("block_id", ""),
                                  "type": kind, "action_ts": f"{time.time():.6f}"}
        if kind == "button":
            action["text"] = element.get("text") or {"type": "plain_text", "text": action_id, "emoji": True}
        value = body.get("value", element.get("value"))
        if value is not None:
            action["value"] = value
        ephemeral = bool(message.get("ephemeral"))
        container: dict[str, Any] = {"type": "message", "message_ts": message["ts"], "channel_id": channel,
                                     "is_ephemeral": ephemeral}
        if message.get("thread_ts"):
            container["thread_ts"] = message["thread_ts"]
        payload = self._interaction(
            "block_actions", container=container, trigger_id=self.s.api.issue_trigger(),
            channel=self._channel_ref(channel), state={"values": {}},
            response_url=self.s.response_url(channel, thread_ts=message.get("thread_ts"),
                                             message_ts=message["ts"]),
            actions=[action])
        if not ephemeral:
            payload["message"] = self.state.for_api(message)
        if kind == "feedback_buttons" and not ephemeral and value in ("up", "down"):
            # The pressed button, as Slack's client keeps it (and across a reload here): clicking
            # your choice again withdraws it, as the bot counts it.
            if message.get("your_feedback") == value:
                message.pop("your_feedback")
            else:
                message["your_feedback"] = value
            self.state.changed()
            self.s.show(channel, message)
        self.s.delivery.spawn(self.s.delivery.interaction(payload))
        return {"ok": True}

    @_json_call
    async def shortcut(self, body: dict[str, Any]) -> dict[str, Any]:
        channel, message = self._message(body)
        callback_id = body.get("callback_id")
        if callback_id not in {s.get("callback_id") for s in self.shortcuts() if s.get("type") == "message"}:
            raise PageError(f"no message shortcut {callback_id!r}")
        payload = self._interaction(
            "message_action", callback_id=callback_id, trigger_id=self.s.api.issue_trigger(),
            action_ts=f"{time.time():.6f}", channel=self._channel_ref(channel), message_ts=message["ts"],
            message=self.state.for_api(message),
            response_url=self.s.response_url(channel, thread_ts=message.get("thread_ts")))
        self.s.delivery.spawn(self.s.delivery.interaction(payload))
        return {"ok": True}

    @_json_call
    async def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        view_id = body.get("view_id")
        view = self.s.api.views.get(view_id) if isinstance(view_id, str) else None
        if view is None:
            raise PageError(f"no open view {view_id!r}", 404)
        sent = body.get("values")
        given: dict[str, Any] = sent if isinstance(sent, dict) else {}
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for block in view.get("blocks") or []:
            element = block.get("element") if block.get("type") == "input" else None
            if not isinstance(element, dict) or not block.get("block_id") or not element.get("action_id"):
                continue
            block_id, action_id = block["block_id"], element["action_id"]
            entered = given.get(block_id)
            typed = entered.get(action_id) if isinstance(entered, dict) else None
            value = str(typed) if typed is not None else element.get("initial_value")
            # Slack checks these in the client, before the app hears of the submission.
            if not value and not block.get("optional"):
                errors[block_id] = REQUIRED
            elif element.get("max_length") and len(value or "") > int(element["max_length"]):
                errors[block_id] = f"Must be {element['max_length']} characters or fewer."
            values[block_id] = {action_id: {"type": element.get("type", "plain_text_input"), "value": value or None}}
        if errors:
            return {"ok": True, "response_action": "errors", "errors": errors}
        payload = self._interaction("view_submission", trigger_id=self.s.api.issue_trigger(), response_urls=[],
                                    view={**view, "state": {"values": values}})
        answered = await self.s.delivery.interaction(payload)
        if answered is None:
            raise PageError("the bot did not take the submission (see the error above)", 502)
        text = answered[1].strip()
        try:
            answer = json.loads(text) if text.startswith("{") else {}
        except ValueError:
            answer = {}
        action = answer.get("response_action")
        try:
            if action == "errors":
                return {"ok": True, **answer}
            if action == "update":
                self.s.api.api_views_update({"view_id": view_id, "view": answer.get("view")})
            elif action == "push":
                trigger = self.s.api.issue_trigger()
                self.s.api.api_views_push({"trigger_id": trigger, "view": answer.get("view")})
            else:  # none, or clear: the modal closes
                for closing in list(self.s.api.views) if action == "clear" else [view_id]:
                    self.s.api.views.pop(str(closing), None)
                    self.s.push({"type": "view_closed", "view_id": closing})
        except SlackError as exc:
            raise PageError(f"the bot answered the submission with an invalid view ({exc.code})", 502) from exc
        return {"ok": True, **answer}

    @_json_call
    async def close_view(self, body: dict[str, Any]) -> dict[str, Any]:
        view_id = body.get("view_id")
        view = self.s.api.views.pop(view_id, None) if isinstance(view_id, str) else None
        if view is None:
            raise PageError(f"no open view {body.get('view_id')!r}", 404)
        if view.get("notify_on_close"):
            payload = self._interaction("view_closed", view=view, is_cleared=False)
            self.s.delivery.spawn(self.s.delivery.interaction(payload))
        self.s.push({"type": "view_closed", "view_id": view["id"]})
        return {"ok": True}

    @_json_call
    async def home(self, body: dict[str, Any]) -> dict[str, Any]:
        event: dict[str, Any] = {"type": "app_home_opened", "user": ME, "channel": "D_BOT", "tab": "home",
                                 "event_ts": self.state.next_ts()}
        if self.state.home is not None:
            event["view"] = self.state.home
        self.s.delivery.spawn(self.s.delivery.events(event))
        return {"ok": True}

    # -- the assistant pane ------------------------------------------------------------------

    def _context(self, body: dict[str, Any]) -> dict[str, Any]:
        """``assistant_thread.context``: the channel you are looking at (none: from the Home tab)."""
        if body.get("channel") is None:
            return {}
        return {"channel_id": self._channel(body), "team_id": self.s.team_id, "enterprise_id": None}

    def _pane_event(self, kind: str, pane: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        return {"type": kind, "event_ts": self.state.next_ts(),
                "assistant_thread": {"user_id": ME, "context": context, "channel_id": pane["channel"],
                                     "thread_ts": pane["thread_ts"]}}

    @_json_call
    async def open_pane(self, body: dict[str, Any]) -> dict[str, Any]:
        context = self._context(body)
        dm = next(c for c, info in self.state.channels.items() if info["is_im"])
        pane = self.state.open_pane(dm, user=ME, context_channel=context.get("channel_id"))
        self.s.show_pane(pane)
        self.s.show(dm, self.state.get(dm, pane["thread_ts"]) or {})
        event = self._pane_event("assistant_thread_started", pane, context)
        self.s.delivery.spawn(self.s.delivery.events(event))
        return {"ok": True, "channel": dm, "thread_ts": pane["thread_ts"]}

    @_json_call
    async def pane_context(self, body: dict[str, Any]) -> dict[str, Any]:
        thread_ts = body.get("thread_ts")
        pane = next((p for p in self.state.panes.values() if p["thread_ts"] == thread_ts), None)
        if pane is None:
            raise PageError(f"no assistant thread {thread_ts!r}", 404)
        context = self._context(body)
        if context.get("channel_id") == pane.get("context_channel"):
            return {"ok": True, "changed": False}
        pane["context_channel"] = context.get("channel_id")
        self.state.changed()
        self.s.show_pane(pane)
        event = self._pane_event("assistant_thread_context_changed", pane, context)
        self.s.delivery.spawn(self.s.delivery.events(event))
        return {"ok": True, "changed": True}

    @_json_call
    async def reset(self, body: dict[str, Any]) -> dict[str, Any]:
        self.state.reset()
        self.s.ephemerals.clear()
        self.s.push({"type": "reset"})
        return {"ok": True}
