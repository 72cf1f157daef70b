"""Socket Mode end to end: the real `flywheel run` process, connected to FakeSlack's WebSocket.

FakeSlack fakes Slack's side (notes §10): `apps.connections.open` with the app-level token, a
`ws://` URL, `hello`, pings, envelopes in and acks out. The first tests check the fake itself
through slack_sdk's own Socket Mode client; the last ones drive the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMessage
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.delivery import STATUS_TEXT

from conftest import PROMPTS, clean_env, flywheel_process
from fakes import FakeOpenAI, FakeSlack, wait_until
from fakes.slack_sender import APP_ID, TEAM_ID, VERIFICATION_TOKEN, mention

# -- what Slack puts in the envelopes ------------------------------------------------------------


def event_callback(event: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    """The `event_callback` body the HTTP path receives; over a socket it is the envelope's payload."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": TEAM_ID,
        "context_team_id": TEAM_ID,
        "context_enterprise_id": None,
        "api_app_id": APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": TEAM_ID,
                "user_id": "UBOT",
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
    }


def slash_command(
    command: str,
    text: str,
    *,
    user_id: str = "U1",
    channel_id: str = "C1",
    response_url: str = "https://hooks.slack.com/commands/T1/1/x",
) -> dict[str, Any]:
    """A slash command's fields, as the payload of a `slash_commands` envelope."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": TEAM_ID,
        "team_domain": "flywheel-test",
        "channel_id": channel_id,
        "channel_name": "general",
        "user_id": user_id,
        "user_name": "alice",
        "command": command,
        "text": text,
        "api_app_id": APP_ID,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": "t.1",
    }


# -- FakeSlack's Socket Mode, through slack_sdk's client -------------------------------------


@asynccontextmanager
async def sdk_client(slack: FakeSlack) -> AsyncIterator[SocketModeClient]:
    """slack_sdk's aiohttp SocketModeClient (what Bolt's AsyncSocketModeHandler uses), acking
    every request: slash commands with a payload, everything else empty."""
    web = AsyncWebClient(token=slack.bot_token, base_url=slack.url)
    client = SocketModeClient(app_token=slack.app_token, web_client=web, ping_interval=0.2)

    async def ack(c: SocketModeClient, req: SocketModeRequest) -> None:
        payload = {"text": f"got {req.payload['text']}"} if req.type == "slash_commands" else None
        await c.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id, payload=payload))

    client.socket_mode_request_listeners.append(ack)
    try:
        yield client
    finally:
        await client.close()


async def test_connections_open_takes_only_the_app_token():
    async with FakeSlack() as slack:
        opened = await AsyncWebClient(base_url=slack.url).apps_connections_open(app_token=slack.app_token)
        assert opened["url"].startswith(f"ws://127.0.0.1:{slack.port}/socket?ticket=")
        for token in (slack.bot_token, "xapp-1-wrong"):
            with pytest.raises(SlackApiError) as refused:
                await AsyncWebClient(base_url=slack.url).apps_connections_open(app_token=token)
            assert refused.value.response["error"] == "invalid_auth"
        with pytest.raises(SlackApiError, match="invalid_auth"):  # and the app token is no bot token
            await AsyncWebClient(token=slack.app_token, base_url=slack.url).auth_test()
        assert [r.failed for r in slack.requests] == [False, True, True, True]


async def test_socket_says_hello_answers_pings_and_returns_acks():
    async with FakeSlack() as slack, sdk_client(slack) as client:
        hello: list[dict] = []

        async def on_message(_c: SocketModeClient, message: dict, _raw: str | None) -> None:
            if message.get("type") == "hello":
                hello.append(message)

        client.message_listeners.append(on_message)
        await client.connect()
        assert await slack.socket_connected() == 1
        await wait_until(lambda: hello)
        assert hello[0]["num_connections"] == 1 and hello[0]["connection_info"] == {"app_id": "A1"}

        empty = await slack.socket_send("events_api", event_callback(mention("hi")))
        assert empty == {"envelope_id": slack.socket_envelopes[0]["envelope_id"]}
        command = slash_command("/ask", "x")
        ack = await slack.socket_send(
            "slash_commands", command, accepts_response_payload=True, retry_attempt=1, retry_reason="timeout"
        )
        assert ack == {"envelope_id": slack.socket_envelopes[1]["envelope_id"], "payload": {"text": "got x"}}
        assert slack.socket_envelopes[1] == {
            "envelope_id": ack["envelope_id"],
            "type": "slash_commands",
            "payload": command,
            "accepts_response_payload": True,
            "retry_attempt": 1,
            "retry_reason": "timeout",
        }
        assert slack.socket_received == [empty, ack]
        # slack_sdk pings right after connecting, then once per ping_interval
        await wait_until(lambda: slack.socket_pings >= 2)


async def test_unacked_envelope_is_an_assertion_and_disconnect_makes_the_client_reconnect():
    async with FakeSlack() as slack, sdk_client(slack) as client:
        client.socket_mode_request_listeners.clear()  # a client that never acks
        seen: list[dict] = []

        async def on_message(message: WSMessage) -> None:  # raw: slack_sdk handles `disconnect` itself
            seen.append(message.json())

        client.on_message_listeners.append(on_message)
        await client.connect()
        await slack.socket_connected()
        with pytest.raises(AssertionError, match="no ack for events_api envelope"):
            await slack.socket_send("events_api", event_callback(mention("hi")), timeout=0.2)

        await slack.socket_disconnect("warning", close=False)
        await wait_until(
            lambda: slack.socket_connections == 2 and len(slack.calls("apps.connections.open")) == 2
        )
        assert await slack.socket_connected() == 1  # slack_sdk closed the old connection
        [disconnect] = [m for m in seen if m["type"] == "disconnect"]
        assert disconnect == {
            "type": "disconnect",
            "reason": "warning",
            "debug_info": disconnect["debug_info"],
        }
        await client.close()
        await slack.socket_disconnected()
    with pytest.raises(AssertionError, match="no Socket Mode client"):
        await slack.socket_send("events_api", {})


async def test_stop_says_disconnect_and_closes_the_connection():
    async with FakeSlack() as slack, sdk_client(slack) as client:
        client.auto_reconnect_enabled = client.default_auto_reconnect_enabled = False
        seen: list[WSMessage] = []

        async def on_message(message: WSMessage) -> None:
            seen.append(message)

        client.on_message_listeners.append(on_message)
        await client.connect()
        await slack.socket_connected()
        await slack.stop()
        assert [m.json()["reason"] for m in seen if m.json()["type"] == "disconnect"] == ["refresh_requested"]
        await wait_until(lambda: client.current_session.closed)


# -- the bot in Socket Mode ----------------------------------------------------------------


@asynccontextmanager
async def flywheel_run(
    slack: FakeSlack, model: FakeOpenAI, tmp_path: Path, app_token: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`flywheel run` in Socket Mode (app token, no signing secret); killed if a test leaves it running."""
    env = clean_env(
        SLACK_BOT_TOKEN=slack.bot_token,
        SLACK_APP_TOKEN=app_token,
        SLACK_API_URL=slack.url,
        OPENAI_API_KEY=model.api_key,
        OPENAI_BASE_URL=model.url,
        PROMPTS_DIR=str(PROMPTS),
        DATABASE_URL=f"sqlite:///{tmp_path / 'flywheel.db'}",
        LOG_LEVEL="DEBUG",
    )
    # at DEBUG the log outgrows a pipe read only at the end: it goes to a file (stderr_of)
    async with flywheel_process("run", cwd=tmp_path, env=env, log_file=tmp_path / "stderr.log") as proc:
        yield proc


def stderr_of(tmp_path: Path) -> bytes:
    return (tmp_path / "stderr.log").read_bytes()


def query(db: Path, sql: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return conn.execute(sql).fetchall()


def bot_replies(slack: FakeSlack, channel: str, thread_ts: str) -> list[dict[str, Any]]:
    return [
        m
        for m in slack.thread(channel, thread_ts)
        if m["ts"] != thread_ts and m.get("bot_id") == slack.bot_id
    ]


async def test_run_in_socket_mode_answers_mentions_and_commands_and_stops_on_sigterm(tmp_path: Path):
    async with (
        FakeSlack() as slack,
        FakeOpenAI() as model,
        flywheel_run(slack, model, tmp_path, slack.app_token) as proc,
    ):
        model.reply("Answered over the socket.", usage=(10, 4))
        model.reply("Hello to you too.", chunk_delay=0.05)
        try:
            await slack.socket_connected(timeout=8)
        except AssertionError:
            proc.kill()
            await proc.communicate()
            raise AssertionError(stderr_of(tmp_path).decode()) from None
        opened = [r for r in slack.requests if r.method == "apps.connections.open"]
        assert len(opened) == 2  # the start-up check of the token, then the connection
        assert all(r.headers["Authorization"] == f"Bearer {slack.app_token}" for r in opened)
        await wait_until(lambda: slack.socket_pings)  # slack_sdk pings right after connecting

        # A mention, delivered as an events_api envelope: acked empty, answered in its thread.
        event = mention("<@UBOT> hello")
        slack.add_message("C1", event["text"], ts=event["ts"])
        ack = await slack.socket_send("events_api", event_callback(event))
        assert ack == {"envelope_id": slack.socket_envelopes[-1]["envelope_id"]}
        # (a first call in a fresh process may be slow enough for the Thinking… note to show first)
        [answer] = await wait_until(
            lambda: [m for m in bot_replies(slack, "C1", event["ts"])
                     if not m["streaming"] and slack.text_of(m) != STATUS_TEXT]
        )
        assert slack.text_of(answer) == "Answered over the socket."
        assert slack.calls("chat.startStream")[0]["thread_ts"] == event["ts"]
        db = tmp_path / "flywheel.db"
        rows = await wait_until(
            lambda: query(
                db,
                "select trigger, channel_id, thread_ts, prompt_tokens, completion_tokens, status from calls",
            )
        )
        assert rows == [("mention", "C1", event["ts"], 10, 4, "ok")]

        # `/ask hello`, delivered as a slash_commands envelope: acked with no payload (nothing
        # shown privately), then a root message in the channel and the answer in its thread.
        ack = await slack.socket_send(
            "slash_commands",
            slash_command("/ask", "hello", user_id="U7", channel_id="C9"),
            accepts_response_payload=True,
        )
        assert ack == {"envelope_id": slack.socket_envelopes[-1]["envelope_id"]}
        [root] = await wait_until(lambda: slack.messages("C9"))
        assert "<@U7>" in slack.text_of(root) and "hello" in slack.text_of(root)
        await wait_until(lambda: bot_replies(slack, "C9", root["ts"]))

        proc.send_signal(signal.SIGTERM)  # mid-answer: it must finish first
        await asyncio.wait_for(proc.communicate(), 8)
        err = stderr_of(tmp_path)
        # Known, not asserted (see the report): serve() calls disconnect_async(), not close_async(),
        # so the exit logs "ERROR asyncio: Unclosed client session", and a drain longer than the
        # 10 s ping interval reconnects and takes new envelopes while shutting down.
        assert proc.returncode == 0, err.decode()
        [reply] = bot_replies(slack, "C9", root["ts"])
        assert slack.text_of(reply) == "Hello to you too." and not reply["streaming"]
        assert query(db, "select trigger, status from calls") == [("mention", "ok"), ("command", "ok")]
        await slack.socket_disconnected()
        assert slack.socket_connections == 1  # no reconnection while shutting down
        text = err.decode()
        assert "connected to Slack in Socket Mode" in text
        for secret in (slack.bot_token, slack.app_token, model.api_key):
            assert secret not in text, "secrets never reach the log, DEBUG included"


async def test_run_with_a_refused_app_token_fails_with_one_clear_line(tmp_path: Path):
    async with (
        FakeSlack() as slack,
        FakeOpenAI() as model,
        flywheel_run(slack, model, tmp_path, "xapp-1-wrong") as proc,
    ):
        await wait_until(lambda: slack.calls("apps.connections.open"), timeout=8)
        try:
            await asyncio.wait_for(proc.communicate(), 1.5)
            err = stderr_of(tmp_path)
        except TimeoutError:
            pytest.fail("`flywheel run` still running 1.5 s after Slack refused the app token")
        assert proc.returncode == 2
        text = err.decode()
        assert "flywheel: SLACK_APP_TOKEN was refused by Slack (invalid_auth)" in text
        assert "Traceback" not in text
        assert slack.socket_connections == 0
