"""POST /slack/events against hostile and malformed requests: never a 500, never a traceback.

The signature is checked first, on the bytes as received; only a verified body is parsed.
So an unverified request gets a 401 whatever its body or headers hold, a verified one that
is not a Slack request a 400 (or a quiet 200 / 404), and no request reaches a listener
without a valid signature.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from types import SimpleNamespace
from urllib.parse import urlencode, urlsplit

import aiohttp
import pytest

from bot.errors import ConfigError
from bot.feedback import FIX_ACTION, FIX_SHORTCUT, FIX_VIEW, VOTE_ACTION
from bot.server import web_app
from bot.urls import display_url

from conftest import SIGNING_SECRET, Harness, serve_bot
from fakes import FakeOpenAI, FakeSlack
from fakes.slack_sender import click, mention, reaction, sign


@pytest.fixture
def database_url(tmp_path) -> str:
    """Requests are answered before anything is stored: SQLite is enough here."""
    return f"sqlite:///{tmp_path / 'flywheel.db'}"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, "\n".join(f"{r.levelname} {r.name}: {r.getMessage()}" for r in bad)


async def post_raw(url: str, head: bytes, body: bytes) -> int:
    """POST with header bytes as given (aiohttp's client would refuse to send some of them)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(b"POST " + parts.path.encode() + b" HTTP/1.1\r\nHost: " + parts.netloc.encode() + b"\r\n"
                     + head + b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
                     + body)
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()
        return int(status_line.split()[1])
    finally:
        writer.close()


NESTED = b"[" * 5000
EVENT = json.dumps({"type": "event_callback", "event_id": "Ev1", "team_id": "T1",
                    "event": {"type": "app_mention", "user": "U1", "channel": "C1", "text": "<@UBOT> hi",
                              "ts": "1.000001", "event_ts": "1.000001"}}).encode()


# -- the shapes that gave a 500 and a traceback, with no secret needed ----------------------------


@pytest.mark.parametrize(("body", "content_type", "headers"), [
    pytest.param(NESTED, "application/json", {"sign": False}, id="nested-json-unsigned"),
    pytest.param(b"payload=" + NESTED, "application/x-www-form-urlencoded", {"sign": False},
                 id="nested-payload-unsigned"),
    pytest.param(b'{"a":' * 5000, "text/plain", {"sign": False}, id="nested-object-unsigned"),
    pytest.param(EVENT, "application/json", {"timestamp": "abc"}, id="timestamp-abc"),
    pytest.param(EVENT, "application/json", {"timestamp": "1.5"}, id="timestamp-1.5"),
    pytest.param(EVENT, "application/json", {"timestamp": "9" * 5000}, id="timestamp-5000-digits"),
    pytest.param(EVENT, "application/json", {"timestamp": ""}, id="timestamp-empty"),
    pytest.param(EVENT, "application/json", {"signature": "v0=\u00e9"}, id="signature-non-ascii"),
])
async def test_requests_that_gave_a_500_are_refused_without_a_traceback(
        bot: Harness, logs: pytest.LogCaptureFixture, body: bytes, content_type: str, headers: dict[str, str]):
    status, text = await bot.sender.raw(body, content_type=content_type, **headers)
    assert status == 401, text
    await bot.settle()
    assert bot.model.requests == [] and await bot.store.list_calls() == []
    no_errors_logged(logs)


async def test_a_deeply_nested_body_with_a_valid_signature_is_a_400(bot: Harness, logs: pytest.LogCaptureFixture):
    for body, content_type in [(NESTED, "application/json"), (b"payload=" + NESTED, "application/x-www-form-urlencoded"),
                               (b'{"a":' * 5000, "text/plain"),
                               (b'{"type": "event_callback", "x": ' + b"[" * 200 + b"]" * 200 + b"}",
                                "application/json")]:
        status, text = await bot.sender.raw(body, content_type=content_type)
        assert status == 400, (body[:40], text)
    no_errors_logged(logs)


@pytest.mark.parametrize("header", [b"X-Slack-Signature: v0=\xe9\xff\r\n", b"X-Slack-Request-Timestamp: 1\xe9\r\n"],
                         ids=["signature-latin-1", "timestamp-latin-1"])
async def test_header_bytes_that_are_not_utf8_are_a_401(bot: Harness, logs: pytest.LogCaptureFixture, header: bytes):
    now = str(int(time.time())).encode()
    head = b"Content-Type: application/json\r\n" + header
    if b"Timestamp" not in header:
        head += b"X-Slack-Request-Timestamp: " + now + b"\r\n"
    else:
        head += b"X-Slack-Signature: " + sign(SIGNING_SECRET, 1, EVENT).encode() + b"\r\n"
    assert await post_raw(f"{bot.url}/slack/events", head, EVENT) == 401
    no_errors_logged(logs)


async def test_a_header_too_long_for_http_is_a_400_and_one_warning_line(bot: Harness,
                                                                        logs: pytest.LogCaptureFixture):
    status, _ = await bot.sender.raw(EVENT, content_type="application/json", signature="v0=" + "a" * 10_000)
    assert status == 400  # aiohttp's own answer: it stops reading at 8,190 bytes a line
    no_errors_logged(logs)
    assert "refused a request that is not valid HTTP (LineTooLong, 400)" in logs.messages


@pytest.mark.parametrize("timestamp", ["+%d", " %d", "%d ", "%d.0", "-%d", "\u0661%d", "%d\u0660"])
async def test_a_timestamp_that_is_not_plain_decimal_seconds_is_a_401_even_when_signed(
        bot: Harness, logs: pytest.LogCaptureFixture, timestamp: str):
    ts = timestamp % int(time.time())
    status, _ = await bot.sender.raw(b'{"type": "url_verification", "challenge": "c"}',
                                     content_type="application/json", timestamp=ts)
    assert status == 401
    no_errors_logged(logs)


# -- the signature is the only gate to Bolt ---------------------------------------------------------


@pytest.fixture
def reached(bot: Harness) -> list[dict]:
    """Every body that gets as far as Bolt's global middleware (registered through Bolt's API)."""
    bodies: list[dict] = []

    async def probe(body, next):
        bodies.append(body)
        await next()

    bot.fw.app.middleware(probe)
    return bodies


def everything_slack_sends(h: Harness) -> list[tuple[bytes, str]]:
    answer = {"type": "message", "user": "UBOT", "text": "An answer.", "ts": "1700000000.000100"}
    bodies = [
        {"type": "url_verification", "challenge": "c-1", "token": "t"},
        {"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": "Ev77",
         "event": mention(f"<@{h.slack.bot_user_id}> hello", channel="C1")},
        {"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": "Ev78",
         "event": reaction("reaction_added", "+1", user="U2", channel="C1", ts=answer["ts"])},
    ]
    forms = [
        {"command": "/ask", "text": "about the payload", "user_id": "U1", "channel_id": "C1", "team_id": "T1",
         "response_url": "https://hooks.slack.com/commands/T1/1/x", "trigger_id": "1.2.x"},
        {"payload": json.dumps(click(answer, "C1", VOTE_ACTION, "up"))},
        {"payload": json.dumps(click(answer, "C1", FIX_ACTION, "fix"))},
    ]
    return ([(json.dumps(b).encode(), "application/json") for b in bodies]
            + [(urlencode(f).encode(), "application/x-www-form-urlencoded") for f in forms])


@pytest.mark.parametrize("how", ["unsigned", "other secret", "stale", "tampered body", "signature of another body",
                                 "no timestamp"])
async def test_a_request_without_a_valid_signature_never_reaches_bolt(bot: Harness, reached: list[dict], how: str):
    now = int(time.time())
    for body, content_type in everything_slack_sends(bot):
        kwargs = {
            "unsigned": {"sign": False},
            "other secret": {"signature": sign("not-the-secret", now, body), "timestamp": now},
            "stale": {"signature": sign(SIGNING_SECRET, now - 301, body), "timestamp": now - 301},
            "tampered body": {"signature": sign(SIGNING_SECRET, now, body + b" "), "timestamp": now},
            "signature of another body": {"signature": sign(SIGNING_SECRET, now, b"{}"), "timestamp": now},
            "no timestamp": {"sign": False, "signature": sign(SIGNING_SECRET, now, body)},
        }[how]
        status, _ = await bot.sender.raw(body, content_type=content_type, **kwargs)
        assert status == 401, body[:60]
    await bot.settle()
    assert reached == []
    assert bot.model.requests == [] and bot.slack.bot_messages() == [] and bot.fw.journal.backlog == 0
    assert [r.method for r in bot.slack.requests] == []  # not even auth.test

    # The same requests, signed, do reach it (url_verification is answered by Bolt's own middleware,
    # before the probe): the probe works.
    for body, content_type in everything_slack_sends(bot):
        status, _ = await bot.sender.raw(body, content_type=content_type)
        assert status == 200, body[:60]
    await bot.settle()  # an event reaches Bolt after its acknowledgement
    assert sorted(b.get("command") or b.get("event", {}).get("type") or b["actions"][0]["action_id"]
                  for b in reached) == sorted(["app_mention", "reaction_added", "/ask", VOTE_ACTION, FIX_ACTION])


@pytest.mark.parametrize("text", ["about the payload", "payload", "what is payload={}?", 'payload={"type": "x"}',
                                  "payload&payload=1"])
async def test_a_slash_command_whose_text_says_payload_is_answered_with_its_text(bot: Harness, text: str):
    bot.model.reply("Answered.")
    status, _ = await bot.sender.command("/ask", text, channel_id="C5")
    assert status == 200
    [call] = await bot.calls(1)
    assert call.request_text == text and call.status == "ok"


@pytest.mark.parametrize("secret", [None, "", "  "])
def test_http_mode_refuses_to_start_without_a_signing_secret(secret: str | None):
    fw = SimpleNamespace(settings=SimpleNamespace(slack_signing_secret=secret))
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        web_app(fw)  # type: ignore[arg-type]


# -- Slack's certificate check ---------------------------------------------------------------------


@pytest.mark.parametrize("signed", [False, True])
async def test_ssl_check_is_answered_200(bot: Harness, signed: bool):
    # Slack's certificate check arrives without signature headers (bolt-js#1397): 200, empty.
    status, text = await bot.sender.raw(b"ssl_check=1&token=legacy-verification-token",
                                        content_type="application/x-www-form-urlencoded", sign=signed)
    assert (status, text) == (200, "")


async def test_nothing_else_in_an_unsigned_ssl_check_is_read(bot: Harness, logs: pytest.LogCaptureFixture):
    for fields in ({"command": "/ask", "text": "hello", "channel_id": "C1", "user_id": "U1", "team_id": "T1"},
                   {"payload": json.dumps({"type": "block_actions", "actions": [{"action_id": "x"}]})},
                   {"payload": "[" * 200}):
        status, text = await bot.sender.raw(urlencode({"ssl_check": "1", **fields}),
                                            content_type="application/x-www-form-urlencoded", sign=False)
        assert (status, text) == (200, "")
    await bot.settle()
    assert bot.model.requests == [] and bot.slack.bot_messages() == [] and await bot.store.list_calls() == []
    no_errors_logged(logs)


@pytest.mark.parametrize("body", [b"ssl_check=0&token=x", b"ssl_check=true", b"\xffssl_check=1", b'{"ssl_check": "1"}',
                                  b"ssl_check=" + NESTED, b"ssl_check=1&token=x" + b"&pad=x" * 200])
async def test_anything_else_unsigned_is_a_401(bot: Harness, logs: pytest.LogCaptureFixture, body: bytes):
    status, _ = await bot.sender.raw(body, content_type="application/x-www-form-urlencoded", sign=False)
    assert status == 401
    no_errors_logged(logs)


# -- interactivity payloads Bolt reads without checking ---------------------------------------------
# Shapes as in bolt-python's tests/scenario_tests_async (legacy attachment buttons, dialogs, steps
# from apps, external selects, modals); the values are made up here.


def attachment_click(**changes) -> dict:
    """A legacy message-attachment button click (``interactive_message``)."""
    payload = {
        "type": "interactive_message", "callback_id": "pick_a_colour", "attachment_id": "1",
        "actions": [{"name": "colour", "type": "button", "value": "green"}],
        "team": {"id": "T1", "domain": "flywheel-test"}, "channel": {"id": "C1", "name": "general"},
        "user": {"id": "U1", "name": "alice"}, "action_ts": "1700000001.000100",
        "message_ts": "1700000000.000100", "token": "legacy-verification-token", "is_app_unfurl": False,
        "original_message": {"type": "message", "subtype": "bot_message", "text": "", "ts": "1700000000.000100",
                             "attachments": [{"id": 1, "callback_id": "pick_a_colour", "fallback": "Pick",
                                              "actions": [{"id": "1", "name": "colour", "type": "button"}]}]},
        "response_url": "https://hooks.slack.com/actions/T1/1/x", "trigger_id": "1.2.x",
    }
    return {k: v for k, v in {**payload, **changes}.items() if v is not DROP}


def block_click(**changes) -> dict:
    payload = {
        "type": "block_actions", "api_app_id": "A1", "token": "t", "trigger_id": "1.2.x",
        "user": {"id": "U2", "username": "bob", "team_id": "T1"}, "team": {"id": "T1", "domain": "flywheel-test"},
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "C1"},
        "channel": {"id": "C1", "name": "general"}, "response_url": "https://hooks.slack.com/actions/T1/2/x",
        "actions": [{"action_id": "not_ours", "block_id": "b", "type": "button", "value": "v",
                     "action_ts": "1700000001.000200"}],
    }
    return {k: v for k, v in {**payload, **changes}.items() if v is not DROP}


def step_edit(**changes) -> dict:
    payload = {
        "type": "workflow_step_edit", "token": "t", "action_ts": "1700000001.000300", "callback_id": "copy_review",
        "team": {"id": "T1", "domain": "flywheel-test"}, "user": {"id": "U1", "username": "alice", "team_id": "T1"},
        "trigger_id": "1.2.x", "workflow_step": {"workflow_id": "1", "step_id": "s1", "inputs": {}, "outputs": []},
    }
    return {k: v for k, v in {**payload, **changes}.items() if v is not DROP}


def modal_submission(view: dict) -> dict:
    return {"type": "view_submission", "api_app_id": "A1", "token": "t", "trigger_id": "1.2.x",
            "team": {"id": "T1", "domain": "flywheel-test"}, "user": {"id": "U1", "username": "alice", "team_id": "T1"},
            "view": view}


def suggestion(**changes) -> dict:
    payload = {"type": "block_suggestion", "api_app_id": "A1", "token": "t", "action_id": "es_a", "block_id": "es_b",
               "value": "search", "user": {"id": "U1", "team_id": "T1"}, "team": {"id": "T1"},
               "container": {"type": "view", "view_id": "V1"}}
    return {**payload, **changes}


DROP = object()
DIALOG = {"type": "dialog_submission", "token": "t", "action_ts": "1700000001.000400", "callback_id": "d1",
          "team": {"id": "T1"}, "user": {"id": "U1", "name": "alice"}, "channel": {"id": "C1"},
          "submission": {"where": "Tokyo"}, "response_url": "https://hooks.slack.com/app/T1/3/x", "state": "s"}
MODAL = {"id": "V1", "team_id": "T1", "type": "modal", "callback_id": "not_ours", "private_metadata": "",
         "state": {"values": {}}, "hash": "h", "blocks": []}


@pytest.mark.parametrize(("payload", "expected"), [
    # As Slack sends them: nobody here listens to these, so Bolt's 404 (and one warning line).
    pytest.param(attachment_click(), 404, id="interactive_message"),
    pytest.param(block_click(), 404, id="block_actions-not-ours"),
    pytest.param(step_edit(), 404, id="workflow_step_edit"),
    pytest.param(modal_submission(MODAL), 404, id="view_submission-not-ours"),
    pytest.param(suggestion(), 404, id="block_suggestion"),
    pytest.param(DIALOG, 404, id="dialog_submission"),
    # Missing what Slack always sends, and what Bolt reads unchecked: a 400, nothing dispatched.
    pytest.param(attachment_click(actions=DROP), 400, id="interactive_message-without-actions"),
    pytest.param(attachment_click(actions=[]), 400, id="interactive_message-empty-actions"),
    pytest.param(attachment_click(actions=["colour"]), 400, id="interactive_message-action-not-an-object"),
    pytest.param(block_click(actions=[]), 400, id="block_actions-empty-actions"),
    pytest.param(block_click(actions=[{"block_id": "b", "value": "v"}]), 400, id="block_actions-without-action_id"),
    pytest.param(block_click(actions=[None]), 400, id="block_actions-action-null"),
    pytest.param(step_edit(workflow_step=DROP), 400, id="workflow_step_edit-without-workflow_step"),
    pytest.param(modal_submission({k: v for k, v in MODAL.items() if k != "type"}), 400,
                 id="view_submission-without-view-type"),
    pytest.param(suggestion(action_id=7), 400, id="block_suggestion-action_id-not-a-string"),
    pytest.param({**{k: v for k, v in DIALOG.items() if k != "response_url"}, "response_urls": "https://x"},
                 400, id="response_urls-not-a-list"),
])
async def test_interactivity_payloads_bolt_cannot_read_are_a_400_not_a_500(
        bot: Harness, logs: pytest.LogCaptureFixture, payload: dict, expected: int):
    status, text = await bot.sender.action(payload)
    assert status == expected, text
    await bot.settle()
    assert bot.slack.bot_messages() == [] and bot.model.requests == []
    no_errors_logged(logs)


@pytest.mark.parametrize(("how", "body", "expected"), [
    # Found by the listener fuzz: each was a listener's KeyError/AttributeError at ERROR, the modal a 500.
    ("event", {"type": "event_callback", "event_id": "Ev90", "event": {"type": "app_mention", "text": "<@UBOT> hi"}},
     200),
    ("form", modal_submission({**MODAL, "callback_id": FIX_VIEW, "state": True}), 400),
    ("form", modal_submission({**MODAL, "callback_id": FIX_VIEW,
                               "state": {"values": {"part_0": {"text": {"value": 7}}}}}), 400),
    ("form", {"type": "message_action", "callback_id": FIX_SHORTCUT, "user": "U1", "trigger_id": "1.2.x",
              "channel": {"id": "C1"}, "message": {"ts": "1700000000.000100"}}, 400),
    ("form", block_click(actions=[{"action_id": VOTE_ACTION, "value": "up"}], user="U2"), 400),
    ("form", block_click(actions=[{"action_id": FIX_ACTION}], container={"channel_id": 5, "message_ts": "1.1"}),
     400),
])
async def test_requests_for_our_listeners_with_other_types_are_refused_quietly(
        bot: Harness, logs: pytest.LogCaptureFixture, how: str, body: dict, expected: int):
    if how == "event":
        status, text = await bot.sender.raw(json.dumps(body), content_type="application/json")
    else:
        status, text = await bot.sender.action(body)
    assert status == expected, text
    await bot.settle()
    assert bot.model.requests == [] and bot.slack.bot_messages() == []
    no_errors_logged(logs)


# -- GET /healthz, unauthenticated: where the bot talks to, never the credentials ----------------------


async def test_healthz_shows_the_servers_without_credentials_or_query(database_url: str):
    async with FakeSlack() as slack, FakeOpenAI() as model:
        model_url = urlsplit(model.url)
        slack_url = urlsplit(slack.url)
        overrides = {
            "OPENAI_BASE_URL": f"http://svc-user:model-pa55word@{model_url.netloc}{model_url.path}"
                               "?api-key=query-key-123&api-version=2024-06-01#frag",
            "SLACK_API_URL": f"http://proxy:slack-pa55word@{slack_url.netloc}{slack_url.path}?token=query-token-456",
        }
        async with serve_bot(slack, model, database_url, **overrides) as h, aiohttp.ClientSession() as session, \
                session.get(f"{h.url}/healthz") as resp:
            text = await resp.text()
    body = json.loads(text)
    assert body["model_server"] == f"http://{model_url.netloc}{model_url.path}"
    assert body["slack_api"].startswith(f"http://{slack_url.netloc}{slack_url.path}")
    for secret in ("svc-user", "model-pa55word", "query-key-123", "2024-06-01", "frag", "proxy", "slack-pa55word",
                   "query-token-456", "?", "@"):
        assert secret not in text


@pytest.mark.parametrize(("url", "shown"), [
    ("https://user:pass@example.openai.azure.com/openai/deployments/d1?api-key=k&api-version=v",
     "https://example.openai.azure.com/openai/deployments/d1"),
    ("https://user@api.example.com:8443/v1#x", "https://api.example.com:8443/v1"),
    ("http://:pw@[::1]:11434/v1/", "http://[::1]:11434/v1/"),
    ("https://api.openai.com/v1", "https://api.openai.com/v1"),
    ("http://user:pw@host:99999/v1", "http://host:99999/v1"),
])
def test_server_urls_are_shown_with_scheme_host_port_and_path_only(url: str, shown: str):
    assert display_url(url) == shown
