"""Serving the bot: HTTP (aiohttp: POST /slack/events, GET /healthz) or Socket Mode.

On SIGTERM/SIGINT the bot stops taking new work (new requests get a 503, so Slack
delivers them again, to another process if there is one) and lets the work it accepted
finish for up to FLYWHEEL_SHUTDOWN_GRACE seconds (default 25: Heroku kills a dyno 30 s
after SIGTERM); what is still running then is interrupted with an apology and its row.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hashlib
import hmac
import json
import logging
import re
import signal
import socket as _socket
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any
from urllib.parse import parse_qs, parse_qsl

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError

from bot.app import Flywheel
from bot.errors import ConfigError
from bot.urls import display_url

log = logging.getLogger(__name__)
SHUTDOWN_CLEANUP = 3.0  # seconds interrupted answers get to post their apology and keep their row
JOURNAL_FLUSH = 1.0  # seconds the journal gets to write its backlog before the process exits
TOKEN_ERRORS = {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired",
                "not_allowed_token_type", "missing_scope", "invalid_token"}
MAX_BODY = 1024 * 1024  # Slack's payloads are far smaller


def web_app(fw: Flywheel) -> web.Application:
    secret = (fw.settings.slack_signing_secret or "").encode()
    if not secret.strip():
        raise ConfigError(["SLACK_SIGNING_SECRET is not set: HTTP mode cannot verify Slack's requests without it."])

    async def slack_events(request: web.Request) -> web.Response:
        if fw.stopping:  # not acknowledged: Slack delivers it again
            return _reject(503, "shutting down")
        fw.traffic.arrived()
        raw = await request.read()  # over MAX_BODY: aiohttp answers 413
        # The signature first, on the bytes as received: nothing an unverified sender wrote
        # (headers or body) is parsed, and none of it can reach Bolt.
        if not signature_is_valid(secret, raw, request.headers.get("X-Slack-Request-Timestamp"),
                                  request.headers.get("X-Slack-Signature")):
            if is_ssl_check(raw):  # Slack's certificate check comes unsigned: 200, nothing else read
                return web.Response(status=200)
            return _reject(401, "invalid request")
        parsed = parse_slack_body(raw, request.content_type)
        if isinstance(parsed, str):
            log.warning("refused a signed request that is not one Slack sends: %s", parsed)
            return _reject(400, parsed)
        if parsed.get("ssl_check") == "1":
            return web.Response(status=200)
        # Bolt gets the body parsed here, as a dict, because its own parser (parse_body in
        # slack_bolt/request/internals.py) takes any form body containing the substring
        # "payload" for interactivity: "/ask about the payload" became {} and was lost.
        # AsyncBoltRequest takes a dict only with mode="socket_mode"; otherwise the mode only
        # decides whether Bolt's RequestVerification skips the request (and what a lazy
        # listener's copy carries). That check is off anyway (request_verification_enabled=False
        # in bot/app.py): the one above, on the raw bytes, is the only one, and nothing reaches
        # Bolt without passing it.
        try:  # Bolt reads ids out of the body here, outside its own error handling
            bolt_request = AsyncBoltRequest(body=parsed, query=request.query_string,
                                            headers=dict(request.headers), mode="socket_mode")
        except (TypeError, AttributeError, KeyError, ValueError, IndexError) as exc:
            log.warning("refused a signed request Bolt cannot read (%s)", type(exc).__name__)
            return _reject(400, "body is not a Slack request")
        if acknowledged_first(parsed):
            fw.conversation.accept(functools.partial(dispatch_later, fw, bolt_request))
            return web.Response(status=200)
        return await to_aiohttp_response(await fw.app.async_dispatch(bolt_request))

    async def healthz(_: web.Request) -> web.Response:
        database = await fw.store.ping()
        prompts = fw.conversation.prompts
        settings = fw.settings
        body = {
            "ok": database,
            "database": "ok" if database else "unreachable",
            "mode": "socket" if settings.socket_mode else "http",
            "model": settings.model,
            # Unauthenticated: where, never how (no user:password@, no ?api-key=…).
            "model_server": display_url(settings.openai_base_url or "https://api.openai.com/v1"),
            "slack_api": display_url(settings.slack_api_url),
            "prompts": len(prompts),
            "prompts_dir": str(settings.prompts_dir),
            "prompts_from": settings.prompts_origin,  # PROMPTS_DIR, working directory or shipped
            "prompt_problems": [str(p) for p in prompts.problems],
            "prompt_warnings": [str(w) for w in prompts.warnings],
            "answers_in_flight": fw.conversation.inflight,
            # Votes, corrections and call rows kept on local disk, not yet in the database.
            "backlog": {"pending": fw.journal.backlog, "oldest_seconds": fw.journal.oldest_seconds,
                        "refused": fw.journal.dead},
        }
        return web.json_response(body, status=200 if database else 503)

    app = web.Application(client_max_size=MAX_BODY, handler_args={"logger": _http_log})
    app.router.add_post("/slack/events", slack_events)
    app.router.add_get("/healthz", healthz)
    return app


# Events whose listener keeps something before Slack may be told it arrived (a vote goes to the
# journal first: if that fails, Slack must deliver it again).
KEPT_BEFORE_ACK = frozenset({"reaction_added", "reaction_removed"})
AUTHORIZE_TRIES = 5  # a delivery acknowledged while Slack cannot tell who the bot is: tries, 2 s apart


def acknowledged_first(body: dict[str, Any]) -> bool:
    """Whether Slack gets its 200 before Bolt sees the delivery. Events qualify: Slack only
    wants to know they arrived (Bolt acknowledges them with an empty 200 whatever the
    listener does), and their work (an answer: claim, model, posts) all comes after. Slash
    commands, clicks and modals do not: their listener writes the response."""
    event = body.get("event")
    return (body.get("type") == "event_callback" and isinstance(event, dict)
            and event.get("type") not in KEPT_BEFORE_ACK)


_dispatching_later: ContextVar[bool] = ContextVar("dispatching_later", default=False)


def _not_bolts_unhandled_warning(record: logging.LogRecord) -> bool:
    """Bolt's "Unhandled request" for a delivery we dispatch late says nothing ours does not
    (the event type), suggests Bolt code to a reader who writes prompt files, and would make
    every such event two warnings. Clicks and commands still get Bolt's."""
    return not (_dispatching_later.get() and str(record.msg).startswith("Unhandled request"))


logging.getLogger("slack_bolt").addFilter(_not_bolts_unhandled_warning)


async def dispatch_later(fw: Flywheel, request: AsyncBoltRequest) -> None:
    """Bolt's dispatch of a delivery Slack has its 200 for already. Nothing can ask Slack to send
    it again now, so if Slack could not be asked who the bot is (auth.test) at start-up, that
    is tried again here a few times before Bolt needs it."""
    for attempt in range(AUTHORIZE_TRIES):
        try:
            await fw.identity.authorize()
            break
        except (SlackApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            if attempt == AUTHORIZE_TRIES - 1:
                log.error("a Slack event was acknowledged but cannot be handled: Slack does not say who "
                          "the bot is (%s)", type(exc).__name__)
                return
            await asyncio.sleep(2.0)
    _dispatching_later.set(True)  # this task's own context: our warning below replaces Bolt's
    response = await fw.app.async_dispatch(request)
    if response.status == 404:  # the manifest subscribes to something no listener takes
        log.warning("no listener for a Slack event of type %s; it was acknowledged and is dropped",
                    (request.body.get("event") or {}).get("type"))
    elif response.status != 200:
        log.warning("an acknowledged Slack event was not handled (%d)", response.status)


def signature_is_valid(secret: bytes, raw: bytes, timestamp: str | None, signature: str | None,
                       now: float | None = None) -> bool:
    """Slack's request signature (``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{body}``), on the
    raw bytes, sent within 5 minutes of ``now``. Whatever the headers hold, the answer is
    True or False: a timestamp that is not plain decimal seconds, or a signature that is not
    ASCII, is False (slack_sdk's SignatureVerifier raised on those, and on bodies that are
    not UTF-8)."""
    if not timestamp or not signature or not _TIMESTAMP.fullmatch(timestamp) or not signature.isascii():
        return False
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > MAX_SKEW:
        return False
    expected = hmac.new(secret, b"v0:" + timestamp.encode() + b":" + raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(b"v0=" + expected.encode(), signature.encode())


def is_ssl_check(raw: bytes) -> bool:
    """Slack's certificate check (``ssl_check=1&token=…``, form-encoded, unsigned: Slack sends it
    when a slash command's URL is saved). Only that one field is looked at."""
    if len(raw) > 1024:  # Slack's is about 40 bytes
        return False
    fields = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return fields.get("ssl_check") == ["1"]


def parse_slack_body(raw: bytes, content_type: str) -> dict[str, Any] | str:
    """The body Slack sent, as a dict; or a short reason why it is not one (a 400)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "body is not UTF-8"
    if content_type == "application/json" or text.lstrip().startswith("{"):
        body = _json(text)
        if body is None:
            return "body is not valid JSON"
    else:
        fields = dict(parse_qsl(text, keep_blank_values=True))
        body = fields
        if "payload" in fields:  # interactivity: the JSON lives in the payload field
            body = _json(fields["payload"])
            if body is None:
                return "payload is not valid JSON"
    if not isinstance(body, dict) or not body:
        return "body is not a Slack request"
    if _nested_deeper_than(body, MAX_DEPTH):
        return f"body is nested more than {MAX_DEPTH} levels deep"
    for key, kinds in _SHAPES.items():  # what Bolt's middleware reads without checking
        if key in body and not isinstance(body[key], kinds):
            return f"{key} has the wrong type"
    event = body.get("event")
    if isinstance(event, dict):
        for key, kinds in _EVENT_SHAPES.items():
            if key in event and not isinstance(event[key], kinds):
                return f"event.{key} has the wrong type"
    if not all(isinstance(a, dict) for a in body.get("authorizations") or ()):
        return "authorizations has the wrong type"
    return _interactivity_problem(body) or body


def _json(text: str) -> Any:
    """``text`` parsed, or None if it is not JSON (nested too deep for the parser included)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _nested_deeper_than(value: dict[str, Any], limit: int) -> bool:
    """Whether lists and objects nest more than ``limit`` levels (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _interactivity_problem(body: dict[str, Any]) -> str | None:
    """What Bolt reads out of an interactivity payload without checking that it is there
    (slack_bolt/request/payload_utils.py, listener_matcher/builtins.py, logger/messages.py:
    each is read for every request, while Bolt builds a middleware's arguments or looks for
    a listener). Slack always sends these; a payload without them carries no action anyone
    took, so it gets a 400 rather than Bolt's KeyError, a traceback and a 500."""
    kind = body.get("type")
    actions = body.get("actions")
    if kind == "block_actions" and "actions" in body or kind == "interactive_message" and "callback_id" in body:
        if not actions or not isinstance(actions[0], dict):
            return f"{kind} without actions"
        if kind == "block_actions" and "action_id" not in actions[0]:
            return "block_actions without an action_id"
    view = body.get("view")
    if kind == "view_submission" and isinstance(view, dict) and "callback_id" in view and "type" not in view:
        return "view_submission without view.type"
    if kind == "workflow_step_edit" and "callback_id" in body and not isinstance(body.get("workflow_step"), dict):
        return "workflow_step_edit without workflow_step"
    if kind == "block_suggestion" and not isinstance(body.get("action_id", ""), str):
        return "action_id has the wrong type"
    if kind in _INTERACTIVE:
        for path, kinds in _PAYLOAD_SHAPES:
            if _wrong_type(body, path, kinds):
                return ".".join(map(str, path)) + " has the wrong type"
    return None


def _wrong_type(node: Any, path: tuple[str, ...], kinds: tuple[type, ...]) -> bool:
    """Whether a value at ``path`` ("*": every item of an object or list) is there with another
    type. A missing value is no problem: whatever reads it reads it with .get()."""
    if not path:
        return not isinstance(node, kinds)
    key, rest = path[0], path[1:]
    if key == "*":
        items = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        return any(_wrong_type(item, rest, kinds) for item in items)
    return isinstance(node, dict) and key in node and _wrong_type(node[key], rest, kinds)


# What the listeners (handlers/actions.py, bot/feedback.py) read out of an interactivity payload,
# trusting Slack's types: a click, a shortcut or a modal with other types is a 400, not a
# listener's AttributeError (and, before the ack, Bolt's 500).
_INTERACTIVE = {"block_actions", "interactive_message", "message_action", "shortcut", "view_submission",
                "view_closed", "block_suggestion", "dialog_submission", "dialog_cancellation",
                "dialog_suggestion", "workflow_step_edit"}
_STR, _OBJECT, _NONE = (str,), (dict,), type(None)
_PAYLOAD_SHAPES: list[tuple[tuple[str, ...], tuple[type, ...]]] = [
    (("user",), _OBJECT), (("user", "id"), _STR), (("user", "team_id"), _STR),
    (("team",), (dict, _NONE)), (("channel",), (dict, _NONE)), (("channel", "id"), _STR),
    (("container", "channel_id"), _STR), (("container", "message_ts"), _STR), (("message", "ts"), _STR),
    (("trigger_id",), _STR), (("actions", "*"), _OBJECT), (("actions", "*", "value"), (str, _NONE)),
    (("actions", "*", "action_ts"), _STR), (("view", "private_metadata"), _STR), (("view", "state"), _OBJECT),
    (("view", "state", "values"), _OBJECT), (("view", "state", "values", "*"), _OBJECT),
    (("view", "state", "values", "*", "*"), _OBJECT), (("view", "state", "values", "*", "*", "value"), (str, _NONE)),
]
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # epoch seconds, as Slack sends them
MAX_SKEW = 60 * 5  # seconds: Slack's rule for a request's age (replays)
MAX_DEPTH = 100  # levels of lists and objects; Slack's deepest payloads have about 15
_SHAPES: dict[str, tuple[type, ...]] = {
    "type": (str,), "event": (dict,), "team": (dict, str), "user": (dict, str), "channel": (dict, str),
    "enterprise": (dict, str, type(None)), "container": (dict,), "authorizations": (list,),
    "actions": (list,), "view": (dict,), "message": (dict,), "event_id": (str,), "team_id": (str,),
    "api_app_id": (str,), "is_enterprise_install": (bool, str), "command": (str,), "text": (str,),
    "enterprise_id": (str, type(None)), "user_id": (str,), "channel_id": (str,), "function_data": (dict,),
    "bot_access_token": (str,), "assistant_thread": (dict,),
}
_EVENT_SHAPES: dict[str, tuple[type, ...]] = {
    "type": (str,), "subtype": (str, type(None)), "user": (str, dict), "bot_id": (str, type(None)),
    "channel": (str, dict), "text": (str,), "ts": (str,), "thread_ts": (str,), "item": (dict,),
    "reaction": (str,), "message": (dict,), "assistant_thread": (dict,), "team": (str,),
    "event_ts": (str,), "channel_type": (str,), "bot_profile": (dict,),
}


class _NotHttp(logging.Filter):
    """aiohttp logs a request it cannot even parse as HTTP (a header line over 8 KB, a broken
    request line…) at ERROR, with its parser's traceback, then answers 400 itself. That is the
    sender's doing, not a fault here: one warning line instead. Everything else aiohttp logs
    for this endpoint (an exception escaping a handler: a bug) keeps its ERROR and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        level = logging.WARNING if record.levelno >= logging.WARNING else logging.DEBUG
        log.log(level, "refused a request that is not valid HTTP (%s, %s)", type(exc).__name__, exc.code)
        return False


_http_log = logging.getLogger("bot.server.http")  # aiohttp's server log, for this endpoint's connections
_http_log.addFilter(_NotHttp())


def _reject(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


async def check_tokens(fw: Flywheel, *, socket: bool) -> None:
    """Fail fast, with one line each, on tokens Slack refuses; only warn if Slack is unreachable."""
    checks: list[tuple[str, str, Callable[..., Awaitable[Any]], dict[str, Any]]] = [
        ("SLACK_BOT_TOKEN", "OAuth & Permissions > Bot User OAuth Token", fw.identity.learn, {})]
    if socket:
        checks.append(("SLACK_APP_TOKEN", "Basic Information > App-Level Tokens (scope connections:write)",
                       fw.client.apps_connections_open, {"app_token": fw.settings.slack_app_token}))
    problems = []
    for name, where, method, kwargs in checks:
        try:
            await method(**kwargs)
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else str(exc)
            if error in TOKEN_ERRORS:
                problems.append(f"{name} was refused by Slack ({error}): copy it again from {where}.")
            else:
                log.warning("checking %s with Slack failed (%s); starting anyway", name, error)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("could not reach Slack at %s to check %s (%s); starting anyway",
                        display_url(fw.settings.slack_api_url), name, type(exc).__name__)
    if problems:
        raise ConfigError(problems)


def settle_heap() -> None:
    """Everything made so far (modules, the app, prompts: ~86,000 objects) lives as long as the
    process: move it out of the garbage collector's sight (gc.freeze). Otherwise every full
    collection walks it all again, a ~50 ms pause (measured) during which nothing is acknowledged."""
    gc.collect()
    gc.freeze()


def _on_signals(stop: asyncio.Event | None) -> asyncio.Event:
    """An event set by SIGTERM/SIGINT (or the caller)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread, or Windows
            loop.add_signal_handler(sig, stop.set)
    return stop


async def serve(fw: Flywheel, *, socket: bool, port: int, host: str = "0.0.0.0",
                stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop`` is set), then shut down gracefully."""
    settle_heap()
    if not socket:
        sock = _socket.socket()
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        await serve_app(fw, web_app(fw), sock=sock, stop=stop)
        return
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    stop = _on_signals(stop)
    handler = AsyncSocketModeHandler(fw.app, fw.settings.slack_app_token)
    connecting = asyncio.create_task(handler.connect_async())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if connecting.done():
        log.info("connected to Slack in Socket Mode")
        await stopping
    else:  # asked to stop while still connecting
        connecting.cancel()
    fw.stopping = True
    await handler.close_async()  # no reconnecting while answers finish
    await _finish(fw)


async def serve_app(fw: Flywheel, app: web.Application, *, sock: _socket.socket,
                    stop: asyncio.Event | None = None, ready: asyncio.Event | None = None,
                    drain_first: bool = False) -> None:
    """Serve an aiohttp app holding the bot's endpoint on ``sock`` until stopped, then drain.

    Normally the listener closes first (no new work) and answers in flight finish after;
    with ``drain_first`` (the playground, whose Slack stand-in those answers talk to on this
    same port) the answers finish first."""
    stop = _on_signals(stop)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    host, port = sock.getsockname()[:2]
    log.info("listening on http://%s:%d (POST /slack/events, GET /healthz)", host, port)
    if ready is not None:
        ready.set()
    await stop.wait()
    if drain_first:
        await _finish(fw)
        await site.stop()
    else:
        fw.stopping = True  # stop taking work first
        await site.stop()
        assert runner.server is not None
        runner.server.pre_shutdown()  # and close keep-alive connections once their request is done
        await _finish(fw)
    await runner.cleanup()


async def _finish(fw: Flywheel) -> None:
    grace = fw.settings.shutdown_grace
    log.info("shutting down; %d answer(s) in flight", fw.conversation.inflight)
    if late := await fw.conversation.shutdown(grace, SHUTDOWN_CLEANUP):
        log.warning("%d answer(s) did not finish within %gs and were interrupted", late, grace)
    await fw.close(journal_flush=JOURNAL_FLUSH)
