"""Serving the bot: HTTP (aiohttp: POST /slack/events, GET /healthz) or Socket Mode.

On SIGTERM/SIGINT the bot stops taking new work and lets answers in flight
finish for up to `SHUTDOWN_GRACE` seconds (Heroku kills a dyno 30 s after SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

from bot.app import Flywheel

log = logging.getLogger(__name__)
SHUTDOWN_GRACE = 25.0
MAX_BODY = 1024 * 1024  # Slack's payloads are far smaller


def web_app(fw: Flywheel) -> web.Application:
    async def slack_events(request: web.Request) -> web.Response:
        bolt_request = await to_bolt_request(request)
        return await to_aiohttp_response(await fw.app.async_dispatch(bolt_request))

    async def healthz(_: web.Request) -> web.Response:
        database = await fw.store.ping()
        prompts = fw.conversation.prompts
        body = {
            "ok": database,
            "database": "ok" if database else "unreachable",
            "mode": "socket" if fw.settings.socket_mode else "http",
            "prompts": len(prompts),
            "prompt_problems": [str(p) for p in prompts.problems],
            "answers_in_flight": fw.conversation.inflight,
        }
        return web.json_response(body, status=200 if database else 503)

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/slack/events", slack_events)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(fw: Flywheel, *, socket: bool, port: int, host: str = "0.0.0.0",
                stop: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop`` is set), then shut down gracefully."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread, or Windows
            loop.add_signal_handler(sig, stop.set)
    if socket:
        handler = AsyncSocketModeHandler(fw.app, fw.settings.slack_app_token)
        await handler.connect_async()
        log.info("connected to Slack in Socket Mode")
        await stop.wait()
        await handler.disconnect_async()
    else:
        runner = web.AppRunner(web_app(fw), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("listening on http://%s:%d (POST /slack/events, GET /healthz)", host, port)
        await stop.wait()
        await site.stop()  # stop taking work first
    log.info("shutting down; %d answer(s) in flight", fw.conversation.inflight)
    if not await fw.conversation.drain(SHUTDOWN_GRACE):
        log.warning("%d answer(s) did not finish within %gs", fw.conversation.inflight, SHUTDOWN_GRACE)
    if not socket:
        await runner.cleanup()
    await fw.close()
