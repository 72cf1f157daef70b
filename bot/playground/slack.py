"""A local Slack for ``flywheel dev``: the real bot talks to it, a web page shows it.

One aiohttp app serves the bot's endpoint (bot/server.py ``web_app``) and, added by
:meth:`StandIn.attach`, everything PROTOCOL.md gives to the stand-in:

- ``/api/{method}``: the Slack Web API subset the bot calls (:mod:`bot.playground.webapi`);
- ``/playground/api/*``: what the page calls (:mod:`bot.playground.page`), delivered to the bot
  as signed Slack requests (:mod:`bot.playground.deliver`);
- ``/playground/ws``: live updates for the page; ``/playground/response/{id}``: response URLs;
- ``/`` and ``/static/*``: the page itself (bot/playground/static, nothing from a CDN);

and, in front of all of them and of the bot's endpoint, the checks of :mod:`bot.playground.access`
(requests must be addressed to this machine; beyond it, carry the run's token).

The workspace (:mod:`bot.playground.state`) survives restarts in the JSON file ``state_path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

from bot.playground.access import Access
from bot.playground.deliver import Delivery
from bot.playground.page import PageApi, same_origin
from bot.playground.state import ME, State
from bot.playground.webapi import WebApi

if TYPE_CHECKING:
    from bot.prompts import PromptSet

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {
    ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css",
    ".json": "application/json", ".map": "application/json", ".svg": "image/svg+xml", ".png": "image/png",
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp",
    ".ico": "image/x-icon", ".woff2": "font/woff2", ".woff": "font/woff", ".ttf": "font/ttf",
    ".txt": "text/plain", ".md": "text/markdown", ".webmanifest": "application/manifest+json",
}
NO_PAGE = ("The Flywheel playground is running, but its page (bot/playground/static/index.html) is missing.\n"
           "The bot and the local Slack work: see bot/playground/PROTOCOL.md for the HTTP API.\n")
RESPONSE_URL_USES = 5  # Slack: 5 posts per response_url, within 30 minutes
RESPONSE_URL_SECONDS = 30 * 60
PROMPT_POLL_SECONDS = 1.0  # default: how often the prompt files are checked while a page is open
CLIENT_QUEUE = 5000  # frames waiting for one slow page; past that it is disconnected (it reloads)


class StandIn:
    def __init__(self, *, state_path: Path, signing_secret: str, bot_token: str,
                 prompts: Callable[[], PromptSet], model: dict, bot_user_id: str = "UBOT", bot_id: str = "BBOT",
                 team_id: str = "T_PLAY", static_dir: Path | None = None,
                 prompt_poll_seconds: float = PROMPT_POLL_SECONDS, access: Access | None = None,
                 vote_reactions: Collection[str] = ("+1", "thumbsup", "-1", "thumbsdown")):
        """``prompt_poll_seconds``: while a page is connected, the prompt files are read this often
        and a changed list is pushed to the pages as a ``prompts`` frame. ``access``: who may use
        it (default: requests addressed to this machine, no token). ``vote_reactions``: the
        reactions the bot counts as 👍/👎 (a new one replaces your button vote on the page too)."""
        if prompt_poll_seconds <= 0:
            raise ValueError("prompt_poll_seconds must be positive")
        self.signing_secret = signing_secret
        self.bot_token = bot_token
        self.prompts = prompts
        self.vote_reactions = frozenset(vote_reactions)
        self.model = dict(model)
        self.bot_user_id, self.bot_id, self.team_id = bot_user_id, bot_id, team_id
        self.static_dir = Path(static_dir) if static_dir is not None else STATIC_DIR
        self.prompt_poll_seconds = prompt_poll_seconds
        self.access = access if access is not None else Access()
        self.base_url = ""
        self.state = State(state_path, bot_user_id=bot_user_id, bot_id=bot_id, team_id=team_id)
        self.api = WebApi(self)
        self.delivery = Delivery(self)
        self.page = PageApi(self)
        self.ephemerals: dict[str, dict[str, Any]] = {}  # ts -> page message (this run only)
        self.response_urls: dict[str, dict[str, Any]] = {}
        self._clients: dict[web.WebSocketResponse, tuple[asyncio.Queue, asyncio.Task]] = {}
        self._watcher: asyncio.Task | None = None
        self._prompts_shown: list[list[Any]] | None = None
        self._closed = False

    @property
    def api_url(self) -> str:
        """The bot's SLACK_API_URL."""
        return self.base_url.rstrip("/") + "/api/"

    def attach(self, app: web.Application) -> None:
        """Serve the stand-in from ``app``, and put the access checks in front of every route."""
        app.middlewares.insert(0, self.access.middleware)
        app.add_routes(self.routes())

    def routes(self) -> list[web.RouteDef]:
        """The stand-in's routes alone, without the access checks: serve them with :meth:`attach`."""
        page = self.page
        return [
            web.route("*", "/api/{method}", self.api.handle),
            web.post("/playground/response/{id}", self._response_url),
            web.get("/playground/ws", self._socket),
            web.get("/playground/api/state", page.get_state),
            web.post("/playground/api/messages", page.message),
            web.post("/playground/api/reactions", page.reaction),
            web.post("/playground/api/actions", page.action),
            web.post("/playground/api/shortcuts", page.shortcut),
            web.post("/playground/api/views/submit", page.submit),
            web.post("/playground/api/views/close", page.close_view),
            web.post("/playground/api/home", page.home),
            web.post("/playground/api/assistant", page.open_pane),
            web.post("/playground/api/assistant/context", page.pane_context),
            web.post("/playground/api/reset", page.reset),
            web.get("/", self._index),
            web.get("/static/{name:.+}", self._static),
        ]

    async def close(self) -> None:
        """Save the state, close the pages' sockets, stop deliveries in flight."""
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.delivery.close()
        for ws, (_queue, writer) in list(self._clients.items()):
            writer.cancel()
            with contextlib.suppress(Exception):
                await ws.close()
        self._clients.clear()
        self.state.save()

    # -- what the page sees ----------------------------------------------------------------

    def push(self, frame: dict[str, Any]) -> None:
        """Send a frame to every connected page, in order, without waiting for slow ones."""
        text = json.dumps(frame, ensure_ascii=False)
        for ws, (queue, writer) in list(self._clients.items()):
            try:
                queue.put_nowait(text)
            except asyncio.QueueFull:
                log.warning("a playground page is not reading its updates; disconnecting it")
                writer.cancel()
                self._clients.pop(ws, None)
                asyncio.get_running_loop().create_task(ws.close())  # it reconnects and loads the state

    def show(self, channel: str, message: dict[str, Any]) -> None:
        """A message was created or changed."""
        self.push({"type": "message", "channel": channel, "message": self.state.for_page(channel, message)})

    def show_pane(self, pane: dict[str, Any]) -> None:
        """An assistant thread changed (its suggested prompts, title or status)."""
        self.push({"type": "assistant_thread", "thread": dict(pane)})

    def ephemeral(self, channel: str, *, text: str, fmt: str = "mrkdwn", blocks: list | None = None,
                  thread_ts: str | None = None, user: str | None = None) -> str:
        """Show a message only you see (not stored); returns its ts."""
        ts = self.state.next_ts()
        message: dict[str, Any] = {"type": "message", "ts": ts, "user": user or self.bot_user_id, "text": text,
                                   "format": fmt, "streaming": False, "ephemeral": True}
        if (user or self.bot_user_id) == self.bot_user_id:
            message["bot_id"] = self.bot_id
        if blocks:
            message["blocks"] = blocks
        if thread_ts:
            message["thread_ts"] = thread_ts
        self.ephemerals[ts] = {**message, "channel": channel}
        self.show(channel, message)
        return ts

    def prompt_list(self) -> list[dict[str, Any]]:
        try:
            prompts = list(self.prompts())
        except Exception:  # noqa: BLE001 - a broken prompt folder must not break the page
            log.exception("could not load the prompts")
            return []
        return [{"name": p.name, "command": p.command, "description": p.description,
                 "usage_hint": p.usage_hint, "version": p.version} for p in prompts]

    def broken_commands(self) -> list[str]:
        """The commands of prompt files that do not load. Slack keeps an app's commands, so it
        still sends them; the bot answers with what is wrong with the file."""
        try:
            prompts = self.prompts()
            named = {"/" + p.path.stem.lower() for p in prompts.problems if p.path.suffix == ".prompty"}
            return sorted(c for c in named if prompts.broken(c))
        except Exception:  # noqa: BLE001 - a broken prompt folder must not break the page
            log.exception("could not load the prompts")
            return []

    async def _watch_prompts(self) -> None:
        """Tell the pages when the prompt files change (the bot reloads them itself)."""
        while True:
            await asyncio.sleep(self.prompt_poll_seconds)
            if not self._clients:
                continue
            prompts, broken = self.prompt_list(), self.broken_commands()
            if [prompts, broken] != self._prompts_shown:
                self._prompts_shown = [prompts, broken]
                self.push({"type": "prompts", "prompts": prompts, "broken_commands": broken})

    # -- HTTP: the WebSocket -----------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        if not same_origin(request):
            return web.json_response({"ok": False, "error": "cross-origin request refused"}, status=403)
        ws = web.WebSocketResponse(heartbeat=20.0)
        await ws.prepare(request)
        if self._closed:
            await ws.close()
            return ws
        queue: asyncio.Queue = asyncio.Queue(CLIENT_QUEUE)
        writer = asyncio.get_running_loop().create_task(self._write(ws, queue))
        self._clients[ws] = (queue, writer)
        if self._prompts_shown is None:
            self._prompts_shown = [self.prompt_list(), self.broken_commands()]
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch_prompts())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT and msg.data == "ping":
                    await queue.put('{"type": "pong"}')
        finally:
            entry = self._clients.pop(ws, None)
            if entry is not None:
                entry[1].cancel()
        return ws

    @staticmethod
    async def _write(ws: web.WebSocketResponse, queue: asyncio.Queue) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while True:
                await ws.send_str(await queue.get())

    # -- HTTP: response URLs -------------------------------------------------------------------

    def response_url(self, channel: str, *, thread_ts: str | None = None, message_ts: str | None = None) -> str:
        """A new response_url for a command or an interaction in ``channel``."""
        now = time.time()
        self.response_urls = {k: v for k, v in self.response_urls.items() if now - v["at"] < RESPONSE_URL_SECONDS}
        key = uuid.uuid4().hex
        self.response_urls[key] = {"channel": channel, "thread_ts": thread_ts, "message_ts": message_ts,
                                   "at": now, "uses": 0}
        return f"{self.base_url.rstrip('/')}/playground/response/{key}"

    async def _response_url(self, request: web.Request) -> web.Response:
        target = self.response_urls.get(request.match_info["id"])
        if target is None or time.time() - target["at"] > RESPONSE_URL_SECONDS:
            return web.Response(status=404, text="expired_url")
        if target["uses"] >= RESPONSE_URL_USES:
            return web.Response(status=404, text="used_url")
        raw = await request.text()
        try:
            body = json.loads(raw)
        except ValueError:
            body = dict(parse_qsl(raw))
            with contextlib.suppress(ValueError, KeyError):
                body = json.loads(body["payload"])
        if not isinstance(body, dict):
            return web.Response(status=400, text="invalid_payload")
        target["uses"] += 1
        channel, original = target["channel"], target["message_ts"]
        if _flag(body.get("delete_original")):
            if original and self.state.get(channel, original) is not None:
                self.api.api_chat_delete({"channel": channel, "ts": original})
            elif original in self.ephemerals:
                self.ephemerals.pop(original)
                self.push({"type": "message_deleted", "channel": channel, "ts": original})
            return web.Response(text="ok")
        text, blocks = str(body.get("text") or ""), body.get("blocks")
        if not (text or blocks):
            return web.Response(status=400, text="no_text")
        if _flag(body.get("replace_original")) and original:
            message = self.state.get(channel, original)
            if message is not None:
                message.update(text=text, format="mrkdwn", blocks=blocks or [])
                self.state.changed()
                self.show(channel, message)
            elif original in self.ephemerals:
                self.ephemerals[original].update(text=text, blocks=blocks or [])
                self.show(channel, {k: v for k, v in self.ephemerals[original].items() if k != "channel"})
            return web.Response(text="ok")
        thread = body.get("thread_ts") or target["thread_ts"]
        if body.get("response_type") == "in_channel":
            thread = self.state.root_of(channel, thread) if thread else None
            message, parent = self.state.add(channel, user=self.bot_user_id, bot=True, text=text,
                                             thread_ts=thread, blocks=blocks or None)
            self.show(channel, message)
            if parent is not None:
                self.show(channel, parent)
        else:
            self.ephemeral(channel, text=text, blocks=blocks, thread_ts=thread)
        return web.Response(text="ok")

    # -- HTTP: the page's files ---------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.Response:
        index = self.static_dir / "index.html"
        if not index.is_file():
            return web.Response(text=NO_PAGE, content_type="text/plain")
        return web.Response(body=index.read_bytes(), content_type="text/html", charset="utf-8")

    async def _static(self, request: web.Request) -> web.Response:
        root = self.static_dir.resolve()
        path = (root / request.match_info["name"]).resolve()
        if not path.is_relative_to(root) or not path.is_file() or path.name.startswith("."):
            raise web.HTTPNotFound(text="not found")
        kind = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
        charset = "utf-8" if kind.startswith("text/") or kind.endswith(("json", "xml")) else None
        return web.Response(body=path.read_bytes(), content_type=kind, charset=charset)


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


__all__ = ["ME", "StandIn"]
