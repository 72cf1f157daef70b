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
import sys
from pathlib import Path
from typing import cast

from aiohttp import web

from bot.app import Prompts, create_app
from bot.cli import upgrade_schema  # the same one-line translation as `flywheel run`
from bot.errors import ConfigError
from bot.llm import LLM
from bot.playground.access import TOKEN_QUERY, Access
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
    sock = listen(host, port)
    base_url = local_url(host, sock.getsockname()[1])
    access = Access.for_host(host)

    echo = uses_echo(settings)
    prompts = Prompts(settings.prompts_dir)
    model = {"name": ECHO_MODEL if echo else settings.model, "offline": echo}
    token = "xoxb-playground-" + secrets.token_hex(8)
    secret = secrets.token_hex(16)
    stand_in = StandIn(state_path=state, signing_secret=secret, bot_token=token, prompts=prompts, model=model,
                       access=access, vote_reactions=settings.up_reactions | settings.down_reactions)
    stand_in.base_url = base_url
    bot_settings = dataclasses.replace(
        settings, slack_bot_token=token, slack_signing_secret=secret, slack_app_token=None,
        slack_api_url=stand_in.api_url, model=ECHO_MODEL if echo else settings.model,
    )
    llm = cast(LLM, EchoLLM()) if echo else None  # the echo model has the LLM's interface (duck-typed)
    fw = create_app(bot_settings, llm=llm, prompts=prompts, source="playground")
    try:
        await upgrade_schema(fw.store)
    except ConfigError:
        await fw.close()
        sock.close()
        raise
    await fw.start()
    app = web_app_with(fw, stand_in)
    lines, warning = welcome(access, base_url)
    print("\n".join(lines), flush=True)
    print("  model: " + ("the offline echo model (set OPENAI_API_KEY or OPENAI_BASE_URL for a real one)"
                         if echo else f"{settings.model} at {display_url(settings.openai_base_url) or 'OpenAI'}"),
          flush=True)
    print(f"  prompts: {settings.prompts_from} (edits apply to the next message)  ·  database: "
          f"{display_url(settings.database_url)}", flush=True)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    try:
        await serve_app(fw, app, sock=sock, stop=stop, ready=ready, drain_first=True)
    finally:
        await stand_in.close()


def listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = exc.strerror or str(exc)
        raise ConfigError([f"cannot listen on {host}:{port} ({why}): pass another --port or --host"]) from None
    return sock


def local_url(host: str, port: int) -> str:
    """The playground's URL on this machine: what the bot calls, and what it prints."""
    name = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{f'[{name}]' if ':' in name else name}:{port}"


def welcome(access: Access, base_url: str) -> tuple[list[str], str | None]:
    """What `flywheel dev` prints first (stdout), and its warning (stderr) when others can reach it."""
    if access.token is None:
        return [f"Flywheel playground: {base_url}/"], None
    with_token = f"/?{TOKEN_QUERY}={access.token}"
    lines = [f"Flywheel playground: {base_url}{with_token}"]
    if access.listens_everywhere:
        port = base_url.rpartition(":")[2]
        lines.append(f"  from other machines: http://{socket.gethostname()}:{port}{with_token} "
                     "(or this machine's IP address)")
    warning = (f"flywheel: warning: with --host {access.host or repr(access.host)} the playground is reachable "
               "from the network. Whoever has the URL above, token included, can read your conversations "
               "and post, vote and correct as you: keep it to yourself, or use --host 127.0.0.1.")
    return lines, warning


def web_app_with(fw, stand_in: StandIn) -> web.Application:
    from bot.server import web_app

    app = web_app(fw)
    stand_in.attach(app)

    async def close_pages(_: web.Application) -> None:  # open sockets would hold shutdown ~30 s
        await stand_in.close()

    app.on_shutdown.append(close_pages)
    return app
