"""A loopback fake of the Slack Web API, driven through the real ``slack_sdk`` clients.

Usage::

    async with FakeSlack() as fake:
        client = AsyncWebClient(token=fake.bot_token, base_url=fake.url)
        await client.chat_postMessage(channel="C1", text="hi")
        assert fake.calls("chat.postMessage")[0]["text"] == "hi"

Wire facts it follows (see /work/shared/notes/slack-platform.md §5-6): ``slack_sdk`` sends
JSON bodies for ``chat.*``/``views.*``/``assistant.*`` and query or form params for the rest;
every answer is HTTP 200 with ``{"ok": ...}`` unless a fault is injected with :meth:`FakeSlack.fail`.

Socket Mode (notes §10) is faked too: ``apps.connections.open`` takes the app-level token
(:attr:`FakeSlack.app_token`, never the bot token) and returns a ``ws://`` URL served by the
fake; the client gets Slack's ``hello``, pings are answered, and tests deliver envelopes with
:meth:`FakeSlack.socket_send`, which waits for the client's ack::

    async with FakeSlack() as fake:
        ...  # start the bot with SLACK_APP_TOKEN=fake.app_token, SLACK_API_URL=fake.url
        await fake.socket_connected()
        ack = await fake.socket_send("slash_commands", {"command": "/ask", "text": "hi", ...},
                                     accepts_response_payload=True)
        assert ack["envelope_id"] and "payload" not in ack

Messages the fake never saw (for example the user's message behind an event a test sends)
are tolerated where the bot only *refers* to them: replying in their thread and reacting to
them both work. Methods that modify a message (``chat.update``, ``chat.delete``, the
streaming calls) need it to exist in the fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from bot.playground.wire import (
    MAX_TEXT,
    MAX_UPDATE_TEXT,
    MAX_VIEW_BLOCKS,
    SlackError,
    check_blocks,
    check_metadata,
    format_ts,
    history_page,
    message_text,
    read_params,
    replies_page,
    stream_text,
    ts_micros,
)

__all__ = ["FakeSlack", "LoopbackServer", "RecordedRequest", "SlackError"]

OAUTH_SCOPES = (
    "app_mentions:read,assistant:write,channels:history,chat:write,commands,groups:history,"
    "im:history,mpim:history,reactions:read,reactions:write,users:read"
)
# Envelope types Slack delivers over a Socket Mode connection.
SOCKET_TYPES = ("events_api", "slash_commands", "interactive")
# Keys the fake keeps on stored messages for tests but that real Slack does not return.
FAKE_ONLY_KEYS = ("streaming", "chunks", "markdown_text")


# Slack's published limits per workspace per method (chat.postMessage: per channel), for
# FakeSlack.enforce_limits (https://docs.slack.dev/apis/web-api/rate-limits).
SLACK_TIERS: dict[str, tuple[int, float]] = {
    "chat.startStream": (20, 60.0),  # Tier 2
    "chat.stopStream": (20, 60.0),  # Tier 2
    "chat.update": (50, 60.0),  # Tier 3
    "chat.delete": (50, 60.0),  # Tier 3
    "conversations.replies": (50, 60.0),  # Tier 3
    "conversations.history": (50, 60.0),  # Tier 3
    "chat.appendStream": (100, 60.0),  # Tier 4
    "users.info": (100, 60.0),  # Tier 4
    "chat.postMessage": (1, 1.0),  # about one per second per channel
}


class LoopbackServer:
    """An aiohttp server on 127.0.0.1 with an OS-chosen port.

    Subclasses implement :meth:`_routes`. Handlers that wait (delays, stalls) should wait on
    :attr:`_closing` or be cancellable: :meth:`stop` cancels every in-flight handler so no task
    outlives the server.
    """

    def __init__(self) -> None:
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._closing = asyncio.Event()

    def _routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT`` (only valid after :meth:`start`)."""
        if self.port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Bind to a free port and start serving."""
        self._closing = asyncio.Event()
        app = web.Application(middlewares=[self._track_inflight])
        app.add_routes(self._routes())
        # handler_cancellation: a client that disconnects cancels its handler (ends stalls).
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop serving; cancels handlers that are still delaying or stalling."""
        self._closing.set()
        tasks = [t for t in self._inflight if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @web.middleware
    async def _track_inflight(self, request: web.Request, handler):
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            return await handler(request)
        finally:
            self._inflight.discard(task)


@dataclass
class RecordedRequest:
    """One call the fake received (including failed ones)."""

    method: str
    params: dict[str, Any]
    headers: CIMultiDict[str]
    http_method: str = "POST"
    failed: bool = False
    error: str | None = None
    status: int = 200
    at: float = field(default_factory=time.monotonic)  # when it arrived (time.monotonic())


@dataclass
class _Fault:
    times: int
    error: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def _require(params: dict[str, Any], *names: str, error: str = "invalid_arguments") -> None:
    if any(not params.get(n) for n in names):
        raise SlackError(error)


class FakeSlack(LoopbackServer):
    """Fake Slack Web API at :attr:`url` (``http://127.0.0.1:PORT/api/``), plus Socket Mode.

    Inspect with :attr:`requests`, :meth:`calls`, :meth:`messages`, :meth:`thread`,
    :meth:`bot_messages`, :attr:`ephemerals`, :attr:`responses`; inject faults with
    :meth:`fail`, :meth:`delay` and :meth:`fail_response`; enforce Slack's rate limits with
    :meth:`enforce_limits` (calls over a limit are answered 429, see :attr:`rate_limited`).
    Socket Mode: :meth:`socket_connected`, :meth:`socket_send`, :meth:`socket_disconnect`,
    :attr:`socket_received`, :attr:`socket_envelopes`, :attr:`socket_pings`, :attr:`socket_connections`.
    """

    bot_token = "xoxb-test-token"
    app_token = "xapp-1-test-app-token"
    bot_user_id = "UBOT"
    bot_id = "BBOT"
    team_id = "T1"
    app_id = "A1"
    team_name = "Flywheel Test"
    bot_name = "flywheel"

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[RecordedRequest] = []
        self.ephemerals: list[dict[str, Any]] = []
        self.views: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.assistant_threads: dict[tuple[str, str], dict[str, Any]] = {}  # see pane()
        # The workspace's channels; None: any channel exists (a test need not declare them).
        self.channels: set[str] | None = None
        self.responses: defaultdict[str, list[Any]] = defaultdict(list)
        self._channels: defaultdict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self._clock = 1_700_000_000_000_000
        self._faults: defaultdict[str, list[_Fault]] = defaultdict(list)
        self._delays: defaultdict[str, list[_Fault]] = defaultdict(list)
        self._response_faults: defaultdict[str, list[_Fault]] = defaultdict(list)
        self._view_ids = itertools.count(1)
        # Rate limits (enforce_limits): method -> (calls, per seconds); window key -> accepted call times
        self._limits: dict[str, tuple[int, float]] = {}
        self._per_channel: frozenset[str] = frozenset()
        self._windows: dict[tuple[str, str, str], deque[float]] = {}
        # Socket Mode
        self.socket_received: list[Any] = []  # every message a client sent (JSON decoded if it was JSON)
        self.socket_envelopes: list[dict[str, Any]] = []  # every envelope socket_send delivered
        self.socket_pings = 0  # pings answered with a pong
        self.socket_connections = 0  # WebSocket connections accepted so far
        self._sockets: list[web.WebSocketResponse] = []  # open ones, oldest first
        self._socket_changed = asyncio.Event()
        self._tickets: set[str] = set()
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}

    # ------------------------------------------------------------------ server

    @property
    def url(self) -> str:
        """Base URL for ``AsyncWebClient(base_url=...)``."""
        return f"{self.base}/api/"

    def response_url(self, name: str = "r1") -> str:
        """A ``response_url`` whose POSTs are recorded in ``responses[name]``."""
        return f"{self.base}/response/{name}"

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.route("*", "/api/{method}", self._handle_api),
            web.post("/response/{name}", self._handle_response_url),
            web.get("/socket", self._handle_socket),
        ]

    async def stop(self) -> None:
        """Send open Socket Mode connections a ``disconnect`` and close them, then stop serving."""
        if self._sockets:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.socket_disconnect(), 2.0)
        for waiter in self._acks.values():
            waiter.cancel()
        await super().stop()

    # ------------------------------------------------------------------ faults

    def fail(
        self,
        method: str,
        error: str = "not_in_channel",
        *,
        times: int = 1,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Make the next ``times`` calls to ``method`` answer ``{"ok": false, "error": error}``.

        ``fail("chat.postMessage", "ratelimited", status=429, headers={"Retry-After": "1"})``
        simulates rate limiting.
        """
        self._faults[method].append(_Fault(times, error, status, dict(headers or {})))

    def enforce_limits(
        self,
        limits: dict[str, tuple[int, float]],
        *,
        per_channel: Iterable[str] = ("chat.postMessage",),
    ) -> None:
        """Rate-limit like Slack: at most ``calls`` accepted calls to ``method`` per sliding
        window of ``per`` seconds (``limits[method] = (calls, per)``), counted per workspace
        (the ``team_id`` param Bolt adds to every call; ``"T1"`` when absent) and, for methods
        in ``per_channel``, per channel too.

        A call over the limit is not executed: it is answered HTTP 429 with
        ``{"ok": false, "error": "ratelimited"}`` and ``Retry-After`` (whole seconds, at least 1,
        until the window has room), and recorded with ``status == 429`` (see
        :attr:`rate_limited`). Rejected calls do not use up the window. Methods not in
        ``limits`` are not limited; calling again replaces the limits and forgets past calls.
        """
        self._limits = dict(limits)
        self._per_channel = frozenset(per_channel)
        self._windows = {}

    @property
    def rate_limited(self) -> list[RecordedRequest]:
        """Every call answered 429, in order (rate limits or an injected 429 fault)."""
        return [r for r in self.requests if r.status == 429]

    def _over_limit(self, method: str, params: dict[str, Any]) -> int | None:
        """Count this call in its window; the Retry-After seconds when it is over the limit."""
        if method not in self._limits:
            return None
        calls, per = self._limits[method]
        channel = str(params.get("channel") or "") if method in self._per_channel else ""
        key = (method, str(params.get("team_id") or self.team_id), channel)
        window = self._windows.setdefault(key, deque())
        now = time.monotonic()
        while window and window[0] <= now - per:
            window.popleft()
        if len(window) >= calls:
            return max(1, math.ceil(window[0] + per - now))
        window.append(now)
        return None

    def delay(self, method: str, seconds: float, times: int = 1) -> None:
        """Delay the next ``times`` responses to ``method`` by ``seconds``."""
        self._delays[method].append(_Fault(times, seconds=seconds))

    def fail_response(self, name: str, status: int, times: int = 1) -> None:
        """Make the next ``times`` POSTs to ``response_url(name)`` answer HTTP ``status``."""
        self._response_faults[name].append(_Fault(times, status=status))

    @staticmethod
    def _take(queue: list[_Fault]) -> _Fault | None:
        if not queue:
            return None
        fault = queue[0]
        fault.times -= 1
        if fault.times <= 0:
            queue.pop(0)
        return fault

    # ------------------------------------------------------------------ HTTP handlers

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            params, unreadable = await read_params(request), None
        except SlackError as exc:  # a body that is not a JSON object: answered, and recorded
            params, unreadable = dict(request.query), exc.code
        record = RecordedRequest(method, params, request.headers.copy(), request.method)
        self.requests.append(record)
        headers = {"x-oauth-scopes": OAUTH_SCOPES, "x-accepted-oauth-scopes": ""}

        retry_after = self._over_limit(method, params)  # counted when the call arrives
        if retry_after is not None:
            record.status, record.failed, record.error = 429, True, "ratelimited"
            headers["Retry-After"] = str(retry_after)
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers=headers)

        delay = self._take(self._delays[method])
        if delay is not None:
            await asyncio.sleep(delay.seconds)

        fault = self._take(self._faults[method])
        if fault is not None:
            body: dict[str, Any] = {"ok": False, "error": fault.error}
            headers.update(fault.headers)
            record.status = fault.status
        elif unreadable is not None:
            body = {"ok": False, "error": unreadable}
        else:
            body = self._dispatch(method, params, request)
        if not body["ok"]:
            record.failed, record.error = True, body["error"]
        return web.json_response(body, status=record.status, headers=headers)

    def _dispatch(self, method: str, params: dict[str, Any], request: web.Request) -> dict[str, Any]:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ") or params.get("token")
        if method == "apps.connections.open":  # the one method that takes the app-level token
            if request.headers.get("Authorization") != f"Bearer {self.app_token}":
                return {"ok": False, "error": "invalid_auth"}
            return {"ok": True, **self._api_apps_connections_open(params)}
        if token != self.bot_token:
            return {"ok": False, "error": "invalid_auth"}
        implementation = getattr(self, "_api_" + method.replace(".", "_"), None)
        if implementation is None:
            return {"ok": False, "error": "unknown_method", "req_method": method}
        try:
            return {"ok": True, **implementation(params)}
        except SlackError as exc:
            return {"ok": False, "error": exc.code}
        except (TypeError, ValueError, AttributeError):  # e.g. a non-numeric ts or a malformed param
            return {"ok": False, "error": "invalid_arguments"}

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        raw = await request.text()
        try:
            self.responses[name].append(json.loads(raw))
        except ValueError:
            self.responses[name].append(raw)
        fault = self._take(self._response_faults[name])
        if fault is not None:
            return web.Response(status=fault.status, text="failed")
        return web.Response(text="ok")

    # ------------------------------------------------------------------ Socket Mode

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("ticket") not in self._tickets:
            return web.json_response({"ok": False, "error": "invalid_ticket"}, status=401)
        # autoping off: pings are answered (and counted) below; timeout bounds the close handshake.
        ws = web.WebSocketResponse(autoping=False, timeout=1.0)
        await ws.prepare(request)
        self.socket_connections += 1
        self._sockets.append(ws)
        try:
            await ws.send_json(
                {
                    "type": "hello",
                    "num_connections": len(self._sockets),
                    "debug_info": {
                        "host": f"applink-fake-{self.port}",
                        "build_number": 1,
                        "approximate_connection_time": 18060,
                    },
                    "connection_info": {"app_id": self.app_id},
                }
            )
            self._socket_changed.set()
            async for msg in ws:
                if msg.type == WSMsgType.PING:
                    self.socket_pings += 1
                    await ws.pong(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    self._socket_message(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self.socket_received.append(msg.data)
        finally:
            with contextlib.suppress(ValueError):
                self._sockets.remove(ws)
            self._socket_changed.set()
        return ws

    def _socket_message(self, raw: str) -> None:
        try:
            message: Any = json.loads(raw)
        except ValueError:
            message = raw
        self.socket_received.append(message)
        if isinstance(message, dict):
            waiter = self._acks.get(message.get("envelope_id", ""))
            if waiter is not None and not waiter.done():
                waiter.set_result(message)

    async def socket_connected(self, timeout: float = 5.0) -> int:
        """Wait until a Socket Mode client is connected; returns the number of open connections."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._sockets:
            self._socket_changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"no Socket Mode connection after {timeout}s "
                    f"(apps.connections.open calls: {len(self.calls('apps.connections.open'))}, "
                    f"connections so far: {self.socket_connections})"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._socket_changed.wait(), remaining)
        return len(self._sockets)

    async def socket_disconnected(self, timeout: float = 5.0) -> None:
        """Wait until no Socket Mode connection is open (the client closed it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._sockets:
            self._socket_changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"{len(self._sockets)} Socket Mode connection(s) still open after {timeout}s"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._socket_changed.wait(), remaining)

    async def socket_send(
        self,
        type: str,
        payload: dict[str, Any],
        *,
        retry_attempt: int = 0,
        retry_reason: str = "",
        accepts_response_payload: bool = False,
        timeout: float = 3.0,
    ) -> dict[str, Any]:
        """Deliver an envelope over the newest connection and return the client's ack.

        ``type`` is ``"events_api"`` (``payload``: the ``event_callback`` body the HTTP path
        gets), ``"slash_commands"`` (the command's fields as a dict) or ``"interactive"``
        (the interaction payload). The ack is ``{"envelope_id": ...}``, with ``"payload"`` when
        the app answered with a body. Raises AssertionError when nobody is connected or no ack
        arrives within ``timeout`` seconds (Slack would then redeliver with ``retry_attempt``).
        """
        if type not in SOCKET_TYPES:
            raise ValueError(f"type must be one of {SOCKET_TYPES}, not {type!r}")
        if not self._sockets:
            raise AssertionError("socket_send: no Socket Mode client is connected")
        envelope = {
            "envelope_id": str(uuid.uuid4()),
            "type": type,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason,
        }
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[envelope["envelope_id"]] = waiter
        try:
            self.socket_envelopes.append(envelope)
            await self._sockets[-1].send_json(envelope)
            try:
                return await asyncio.wait_for(waiter, timeout)
            except TimeoutError:
                raise AssertionError(
                    f"socket_send: no ack for {type} envelope {envelope['envelope_id']} within {timeout}s "
                    f"(last messages from the client: {self.socket_received[-3:]!r})"
                ) from None
        finally:
            del self._acks[envelope["envelope_id"]]

    async def socket_disconnect(self, reason: str = "refresh_requested", *, close: bool = True) -> None:
        """Tell every connected client to reconnect, as Slack does before closing a connection
        (``reason``: ``"warning"``, ``"refresh_requested"`` or ``"link_disabled"``); with
        ``close`` the fake then closes the connections itself."""
        for ws in list(self._sockets):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_json(
                    {
                        "type": "disconnect",
                        "reason": reason,
                        "debug_info": {"host": f"applink-fake-{self.port}"},
                    }
                )
                if close:
                    await ws.close()

    # ------------------------------------------------------------------ message store

    def _next_ts(self) -> str:
        self._clock += 100
        return format_ts(self._clock)

    def _store(
        self,
        channel: str,
        text: str,
        *,
        user: str,
        bot: bool,
        ts: str | None = None,
        thread_ts: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        if ts is None:
            ts = self._next_ts()
        else:
            self._clock = max(self._clock, ts_micros(ts))
        message: dict[str, Any] = {
            "type": "message",
            "ts": ts,
            "text": text,
            "user": user,
            "team": self.team_id,
        }
        if bot:
            message.update(user=self.bot_user_id, bot_id=self.bot_id, app_id=self.app_id)
        if thread_ts and thread_ts != ts:
            message["thread_ts"] = thread_ts
            parent = self._channels[channel].get(thread_ts)
            if parent is not None:
                message["parent_user_id"] = parent.get("user")
                replies = parent.setdefault("reply_users", [])
                if message["user"] not in replies:
                    replies.append(message["user"])
                parent.update(
                    thread_ts=thread_ts,
                    reply_count=parent.get("reply_count", 0) + 1,
                    reply_users_count=len(replies),
                    latest_reply=ts,
                )
        message.update({k: v for k, v in extra.items() if v is not None})
        message.setdefault("streaming", False)
        self._channels[channel][ts] = message
        return message

    def _delete(self, channel: str, message: dict[str, Any]) -> None:
        """As Slack: a parent with replies becomes a tombstone; a reply is taken off its parent's
        counts, and a tombstone goes with its last reply."""
        messages = self._channels[channel]
        if message.get("reply_count"):
            kept = ("type", "ts", "thread_ts", "reply_count", "reply_users", "reply_users_count", "latest_reply")
            messages[message["ts"]] = {**{k: message[k] for k in kept if k in message}, "subtype": "tombstone",
                                       "user": "USLACKBOT", "text": "This message was deleted.", "hidden": True,
                                       "streaming": False}
            return
        del messages[message["ts"]]
        parent = messages.get(message.get("thread_ts") or "")
        if parent is None or parent is message:
            return
        replies = [m for m in self.thread(channel, parent["ts"]) if m["ts"] != parent["ts"]]
        if replies:
            users = list(dict.fromkeys(m["user"] for m in replies))
            parent.update(reply_count=len(replies), reply_users=users, reply_users_count=len(users),
                          latest_reply=replies[-1]["ts"])
        elif parent.get("subtype") == "tombstone":
            del messages[parent["ts"]]
        else:
            for key in ("thread_ts", "reply_count", "reply_users", "reply_users_count", "latest_reply"):
                parent.pop(key, None)

    def add_message(
        self,
        channel: str,
        text: str,
        *,
        user: str = "U1",
        ts: str | None = None,
        thread_ts: str | None = None,
        bot: bool = False,
    ) -> str:
        """Seed a message (``bot=True``: one the bot posted) and return its ts."""
        return self._store(channel, text, user=user, bot=bot, ts=ts, thread_ts=thread_ts)["ts"]

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """All stored messages of ``channel`` (thread replies included), oldest first."""
        return sorted(self._channels[channel].values(), key=lambda m: ts_micros(m["ts"]))

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        """The stored message, or None."""
        return self._channels[channel].get(ts)

    def thread(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """Parent (if known) followed by its replies, oldest first."""
        return [m for m in self.messages(channel) if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts]

    def bot_messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Messages posted by the bot, in one channel or across all channels, oldest first."""
        channels = [channel] if channel is not None else list(self._channels)
        found = [m for c in channels for m in self.messages(c) if m.get("bot_id") == self.bot_id]
        return sorted(found, key=lambda m: ts_micros(m["ts"]))

    def calls(self, method: str) -> list[dict[str, Any]]:
        """Params of every call to ``method`` (failed ones included), in order."""
        return [r.params for r in self.requests if r.method == method]

    @staticmethod
    def text_of(message: dict[str, Any] | None) -> str:
        """What the user reads: streamed or ``markdown_text`` content, else the text of
        ``markdown``/``section``/``header`` blocks, else the plain ``text``."""
        if not message:
            return ""
        if "chunks" in message or "markdown_text" in message:
            return message.get("text", "")
        block_texts = []
        for block in message.get("blocks") or []:
            text = block.get("text")
            if isinstance(text, dict):
                text = text.get("text")
            if block.get("type") in ("markdown", "section", "header") and isinstance(text, str):
                block_texts.append(text)
        return "\n".join(block_texts) if block_texts else message.get("text", "")

    def _existing(self, params: dict[str, Any], ts_param: str = "ts") -> dict[str, Any]:
        self._channel(params)
        _require(params, ts_param, error="message_not_found")
        message = self._channels[params["channel"]].get(params[ts_param])
        if message is None:
            raise SlackError("message_not_found")
        return message

    def _channel(self, params: dict[str, Any], name: str = "channel") -> str:
        channel = params.get(name)
        if not channel or not isinstance(channel, str) or (self.channels is not None and channel not in self.channels):
            raise SlackError("channel_not_found")
        return channel

    def _public(self, message: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in message.items() if k not in FAKE_ONLY_KEYS}

    # ------------------------------------------------------------------ Web API methods

    def _api_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://flywheel-test.slack.com/",
            "team": self.team_name,
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _api_apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        ticket = str(uuid.uuid4())
        self._tickets.add(ticket)
        return {"url": f"ws://127.0.0.1:{self.port}/socket?ticket={ticket}"}

    def _api_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        self._channel(params)
        text, _ = message_text(params)
        markdown = params.get("markdown_text")
        check_blocks(params.get("blocks"))  # the fake keeps blocks as sent (no block_id added)
        check_metadata(params.get("metadata"))
        message = self._store(
            params["channel"],
            text,
            user=self.bot_user_id,
            bot=True,
            thread_ts=params.get("thread_ts"),
            blocks=params.get("blocks"),
            markdown_text=markdown,
            metadata=params.get("metadata"),
        )
        return {"channel": params["channel"], "ts": message["ts"], "message": self._public(message)}

    def _api_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._existing(params)
        if message.get("bot_id") != self.bot_id:
            raise SlackError("cant_update_message")
        if message["streaming"]:
            raise SlackError("streaming_state_conflict")
        text, markdown = params.get("text"), params.get("markdown_text")
        if markdown and (text or params.get("blocks")):
            raise SlackError("markdown_text_conflict")
        check_blocks(params.get("blocks"))
        check_metadata(params.get("metadata"))
        if len(text or "") > MAX_UPDATE_TEXT or len(markdown or "") > MAX_UPDATE_TEXT:
            raise SlackError("msg_too_long")
        if markdown is not None:
            message.update(text=markdown, markdown_text=markdown)
        elif text is not None:
            message["text"] = text
            message.pop("markdown_text", None)
        if params.get("blocks") is not None:
            message["blocks"] = params["blocks"]
        if params.get("metadata") is not None:
            message["metadata"] = params["metadata"]
        message["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        return {
            "channel": params["channel"],
            "ts": message["ts"],
            "text": message["text"],
            "message": self._public(message),
        }

    def _api_chat_delete(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._existing(params)
        if message.get("bot_id") != self.bot_id:
            raise SlackError("cant_delete_message")
        self._delete(params["channel"], message)
        return {"channel": params["channel"], "ts": message["ts"]}

    def _api_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        self._channel(params)
        _require(params, "user", error="user_not_in_channel")
        message_text(params)
        check_blocks(params.get("blocks"))
        message_ts = self._next_ts()
        self.ephemerals.append({**params, "message_ts": message_ts})
        return {"message_ts": message_ts}

    def _api_chat_getPermalink(self, params: dict[str, Any]) -> dict[str, Any]:
        self._channel(params)
        message = self._existing(params, "message_ts")
        link = f"https://flywheel-test.slack.com/archives/{params['channel']}/p{message['ts'].replace('.', '')}"
        if message.get("thread_ts") and message["thread_ts"] != message["ts"]:
            link += f"?thread_ts={message['thread_ts']}&cid={params['channel']}"
        return {"channel": params["channel"], "permalink": link}

    def _api_chat_startStream(self, params: dict[str, Any]) -> dict[str, Any]:
        self._channel(params)
        _require(params, "thread_ts")
        channel = params["channel"]
        if channel[:1] in ("C", "G"):
            _require(params, "recipient_team_id", error="missing_recipient_team_id")
            _require(params, "recipient_user_id", error="missing_recipient_user_id")
        message = self._store(
            channel,
            stream_text(params),
            user=self.bot_user_id,
            bot=True,
            thread_ts=params["thread_ts"],
            chunks=list(params.get("chunks") or []),
            streaming=True,
        )
        return {"channel": channel, "ts": message["ts"]}

    def _append(self, message: dict[str, Any], params: dict[str, Any]) -> None:
        if not message["streaming"]:
            raise SlackError("message_not_in_streaming_state")
        text = message.get("text", "") + stream_text(params)
        if len(text) > MAX_TEXT:
            raise SlackError("msg_too_long")
        message["text"] = text
        message.setdefault("chunks", []).extend(params.get("chunks") or [])

    def _api_chat_appendStream(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._existing(params)
        if not (params.get("markdown_text") or params.get("chunks")):
            raise SlackError("invalid_arguments")
        self._append(message, params)
        return {"channel": params["channel"], "ts": message["ts"]}

    def _api_chat_stopStream(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._existing(params)
        check_blocks(params.get("blocks"))
        check_metadata(params.get("metadata"))
        self._append(message, params)
        if params.get("blocks") is not None:
            message["blocks"] = params["blocks"]
        if params.get("metadata") is not None:
            message["metadata"] = params["metadata"]
        message["streaming"] = False
        return {"channel": params["channel"], "ts": message["ts"], "message": self._public(message)}

    def _api_conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        self._channel(params)
        _require(params, "ts", error="thread_not_found")
        anchor = self._channels[params["channel"]].get(params["ts"])
        if anchor is None:
            raise SlackError("thread_not_found")
        parent_ts = anchor.get("thread_ts", anchor["ts"])
        page, more, cursor = replies_page(self.thread(params["channel"], parent_ts), params)
        return self._page(page, more, cursor)

    def _api_conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        self._channel(params)
        page, more, cursor = history_page(self.messages(params["channel"]), params,
                                          include=lambda m: m.get("thread_ts", m["ts"]) == m["ts"])
        return {"pin_count": 0, **self._page(page, more, cursor)}

    def _page(self, messages: list[dict[str, Any]], more: bool, cursor: str) -> dict[str, Any]:
        return {"messages": [self._public(m) for m in messages], "has_more": more,
                "response_metadata": {"next_cursor": cursor}}

    def _react(self, params: dict[str, Any], add: bool) -> dict[str, Any]:
        self._channel(params)
        _require(params, "timestamp", error="message_not_found")
        _require(params, "name", error="invalid_name")
        message = self._channels[params["channel"]].get(params["timestamp"])
        if message is None:  # a message the fake never saw: accept, the call is recorded
            return {}
        reactions = message.get("reactions") or []
        entry = next((r for r in reactions if r["name"] == params["name"]), None)
        if add:
            if entry is not None and self.bot_user_id in entry["users"]:
                raise SlackError("already_reacted")
            if entry is None:
                entry = {"name": params["name"], "users": [], "count": 0}
                reactions.append(entry)
                message["reactions"] = reactions
            entry["users"].append(self.bot_user_id)
        else:
            if entry is None or self.bot_user_id not in entry["users"]:
                raise SlackError("no_reaction")
            entry["users"].remove(self.bot_user_id)
            if not entry["users"]:
                reactions.remove(entry)
            if not reactions:
                del message["reactions"]
        if entry is not None:
            entry["count"] = len(entry["users"])
        return {}

    def _api_reactions_add(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._react(params, add=True)

    def _api_reactions_remove(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._react(params, add=False)

    def _api_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        _require(params, "user", error="user_not_found")
        uid = params["user"]
        name = self.bot_name if uid == self.bot_user_id else uid.lower()
        canned = {
            "id": uid,
            "team_id": self.team_id,
            "name": name,
            "real_name": f"User {uid}",
            "deleted": False,
            "is_bot": uid == self.bot_user_id,
            "is_admin": False,
            "tz": "Europe/London",
            "tz_label": "Greenwich Mean Time",
            "tz_offset": 0,
            "profile": {
                "real_name": f"User {uid}",
                "display_name": name,
                "email": f"{name}@example.com",
                "team": self.team_id,
            },
        }
        return {"user": {**canned, **self.users.get(uid, {})}}

    def _save_view(self, view: Any, view_id: str | None = None, kind: str | None = None) -> dict[str, Any]:
        if not isinstance(view, dict) or not view.get("type") or (kind is not None and view["type"] != kind):
            raise SlackError("invalid_arguments")
        check_blocks(view.get("blocks") or [], MAX_VIEW_BLOCKS)
        view_id = view_id or f"V{next(self._view_ids):04d}"
        saved = {
            "id": view_id,
            "team_id": self.team_id,
            "app_id": self.app_id,
            "bot_id": self.bot_id,
            "root_view_id": view_id,
            "previous_view_id": None,
            "callback_id": "",
            "private_metadata": "",
            "external_id": "",
            "state": {"values": {}},
            "hash": f"{self._next_ts()}.fakehash",
            **view,
        }
        self.views[view_id] = saved
        return saved

    def _api_views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        _require(params, "trigger_id", "view")
        return {"view": self._save_view(params["view"], kind="modal")}

    def _api_views_publish(self, params: dict[str, Any]) -> dict[str, Any]:
        _require(params, "user_id", "view")
        return {"view": self._save_view(params["view"], kind="home")}

    def _api_views_update(self, params: dict[str, Any]) -> dict[str, Any]:
        _require(params, "view")
        view_id = params.get("view_id") or next(
            (
                v["id"]
                for v in self.views.values()
                if params.get("external_id") and v["external_id"] == params["external_id"]
            ),
            None,
        )
        if view_id not in self.views:
            raise SlackError("not_found")
        return {"view": self._save_view(params["view"], view_id)}

    def pane(self, channel_id: str, thread_ts: str) -> dict[str, Any]:
        """What the assistant pane shows for a thread: ``status``, ``title``, ``prompts`` (as last set)."""
        return self.assistant_threads.setdefault((channel_id, thread_ts), {"status": "", "title": None, "prompts": []})

    def _api_assistant_threads_setStatus(self, params: dict[str, Any]) -> dict[str, Any]:
        _require(params, "channel_id", "thread_ts")
        if "status" not in params:
            raise SlackError("invalid_arguments")
        self.pane(params["channel_id"], params["thread_ts"])["status"] = params["status"]
        return {}

    def _api_assistant_threads_setTitle(self, params: dict[str, Any]) -> dict[str, Any]:
        _require(params, "channel_id", "thread_ts", "title")
        self.pane(params["channel_id"], params["thread_ts"])["title"] = params["title"]
        return {}

    def _api_assistant_threads_setSuggestedPrompts(self, params: dict[str, Any]) -> dict[str, Any]:
        _require(params, "channel_id", "thread_ts")
        prompts = params.get("prompts")
        if not isinstance(prompts, list) or not prompts or len(prompts) > 4 or not all(
                isinstance(p, dict) and p.get("title") and p.get("message") for p in prompts):
            raise SlackError("invalid_arguments")
        self.pane(params["channel_id"], params["thread_ts"])["prompts"] = prompts
        return {}
