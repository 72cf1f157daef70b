"""`flywheel dev`: the real bot against a local Slack stand-in, with a page that looks like Slack.

One aiohttp app on one port holds the bot's own endpoint (POST /slack/events, GET /healthz,
exactly as `flywheel run` serves them) and the stand-in (the Web API the bot calls, the page,
its live socket). The stand-in delivers what you do on the page to the bot's endpoint as
signed Slack requests, so everything between Slack and the database is the production path.

With no model configured, the offline echo model answers (and says so on every answer);
with OPENAI_API_KEY or OPENAI_BASE_URL set, the configured model does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import socket
from pathlib import Path

from aiohttp import web

from bot.app import Prompts, create_app
from bot.cli import _upgrade as upgrade  # the same one-line translation as `flywheel run`
from bot.errors import ConfigError
from bot.playground.echo import ECHO_MODEL, EchoLLM
from bot.playground.slack import StandIn
from bot.server import serve_app
from bot.settings import Settings
from bot.urls import display_url

log = logging.getLogger(__name__)
DEFAULT_STATE = Path(".flywheel-playground.json")


def uses_echo(settings: Settings) -> bool:
    return not settings.openai_api_key and not settings.openai_base_url


async def playground(settings: Settings, *, host: str, port: int, state: Path,
                     stop: asyncio.Event | None = None, ready: asyncio.Event | None = None) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise ConfigError([f"cannot listen on {host}:{port} ({exc.strerror}): pass another --port"]) from None
    base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{sock.getsockname()[1]}"

    echo = uses_echo(settings)
    prompts = Prompts(settings.prompts_dir)
    model = {"name": ECHO_MODEL if echo else settings.model, "offline": echo}
    token = "xoxb-playground-" + secrets.token_hex(8)
    secret = secrets.token_hex(16)
    stand_in = StandIn(state_path=state, signing_secret=secret, bot_token=token, prompts=prompts, model=model)
    stand_in.base_url = base_url
    bot_settings = dataclasses.replace(
        settings, slack_bot_token=token, slack_signing_secret=secret, slack_app_token=None,
        slack_api_url=stand_in.api_url, model=ECHO_MODEL if echo else settings.model,
    )
    fw = create_app(bot_settings, llm=EchoLLM() if echo else None, prompts=prompts)
    try:
        await upgrade(fw.store)
    except ConfigError:
        await fw.close()
        sock.close()
        raise
    await fw.start()
    app = web_app_with(fw, stand_in)
    print(f"Flywheel playground: {base_url}/", flush=True)
    print("  model: " + ("the offline echo model (set OPENAI_API_KEY or OPENAI_BASE_URL for a real one)"
                         if echo else f"{settings.model} at {display_url(settings.openai_base_url) or 'OpenAI'}"),
          flush=True)
    print(f"  prompts: {settings.prompts_dir}/ (edits apply to the next message)  ·  database: "
          f"{display_url(settings.database_url)}", flush=True)
    try:
        await serve_app(fw, app, sock=sock, stop=stop, ready=ready, drain_first=True)
    finally:
        await stand_in.close()


def web_app_with(fw, stand_in: StandIn) -> web.Application:
    from bot.server import web_app

    app = web_app(fw)
    app.add_routes(stand_in.routes())

    async def close_pages(_: web.Application) -> None:  # open sockets would hold shutdown ~30 s
        await stand_in.close()

    app.on_shutdown.append(close_pages)
    return app
