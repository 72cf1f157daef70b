"""The fakes behave like the real services when driven through the real clients."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs

import openai
import pytest
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from fakes import FakeOpenAI, FakeSlack, SlackSender, wait_until
from fakes.slack_api import LoopbackServer
from fakes.slack_sender import mention, message, reaction, sign

SECRET = "test-signing-secret"
USER_ASKS = [{"role": "user", "content": "what is up"}]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """slack_sdk honours HTTP(S)_PROXY and ignores NO_PROXY, which would break loopback calls."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def slack():
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
def client(slack):
    return AsyncWebClient(token=slack.bot_token, base_url=slack.url)


@pytest.fixture
async def llm():
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def ai(llm):
    client = openai.AsyncOpenAI(api_key=llm.api_key, base_url=llm.url, max_retries=0, timeout=2.0)
    yield client
    await client.close()


# --------------------------------------------------------------------------- FakeSlack


async def test_auth_test_and_scopes_header(client, slack):
    response = await client.auth_test()
    assert (response["user_id"], response["bot_id"], response["team_id"]) == ("UBOT", "BBOT", "T1")
    assert "chat:write" in response.headers["x-oauth-scopes"]
    assert slack.requests[0].headers["Authorization"] == "Bearer xoxb-test-token"


async def test_wrong_token_and_unknown_method(slack, client):
    with pytest.raises(SlackApiError) as wrong:
        await AsyncWebClient(token="xoxb-nope", base_url=slack.url).auth_test()
    assert wrong.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as unknown:
        await client.api_call("no.such_method")
    assert unknown.value.response["error"] == "unknown_method"
    assert [r.failed for r in slack.requests] == [True, True]


async def test_post_message_then_replies_in_thread(client, slack):
    root = await client.chat_postMessage(channel="C1", text="root")
    assert root["message"]["bot_id"] == "BBOT"
    for text in ("one", "two"):
        await client.chat_postMessage(channel="C1", text=text, thread_ts=root["ts"])

    replies = await client.conversations_replies(channel="C1", ts=root["ts"])
    assert [m["text"] for m in replies["messages"]] == ["root", "one", "two"]
    assert replies["messages"][0]["reply_count"] == 2
    assert replies["messages"][1]["thread_ts"] == root["ts"]
    assert [m["text"] for m in slack.thread("C1", root["ts"])] == ["root", "one", "two"]
    assert slack.calls("chat.postMessage")[1] == {"channel": "C1", "text": "one", "thread_ts": root["ts"]}

    pages = [
        page["messages"]
        async for page in await client.conversations_replies(channel="C1", ts=root["ts"], limit=2)
    ]
    assert [[m["text"] for m in page] for page in pages] == [["root", "one"], ["two"]]
    with pytest.raises(SlackApiError, match="thread_not_found"):
        await client.conversations_replies(channel="C1", ts="1.000000")


async def test_ts_are_unique_increasing_and_seeding(client, slack):
    user_ts = slack.add_message("C1", "hi bot", user="U7")
    bot_ts = slack.add_message("C1", "old answer", thread_ts=user_ts, bot=True)
    posted = await client.chat_postMessage(channel="C1", text="new", thread_ts=user_ts)
    assert user_ts < bot_ts < posted["ts"]
    assert len(posted["ts"].split(".")[1]) == 6
    assert [m["text"] for m in slack.bot_messages("C1")] == ["old answer", "new"]
    assert slack.message("C1", bot_ts)["parent_user_id"] == "U7"

    history = await client.conversations_history(channel="C1")
    assert [m["text"] for m in history["messages"]] == ["hi bot"]  # replies are not top-level


async def test_history_newest_first_with_filters(client, slack):
    stamps = [slack.add_message("C2", f"m{i}") for i in range(5)]
    history = await client.conversations_history(channel="C2", oldest=stamps[0], latest=stamps[4], limit=2)
    assert [m["text"] for m in history["messages"]] == ["m3", "m2"]
    assert history["has_more"] is True
    following = await client.conversations_history(
        channel="C2",
        oldest=stamps[0],
        latest=stamps[4],
        limit=2,
        cursor=history["response_metadata"]["next_cursor"],
    )
    assert [m["text"] for m in following["messages"]] == ["m1"]


async def test_chat_stream_helper_builds_full_text(client, slack):
    root = await client.chat_postMessage(channel="C1", text="question")
    streamer = await client.chat_stream(
        channel="C1", thread_ts=root["ts"], recipient_team_id="T1", recipient_user_id="U1", buffer_size=10
    )
    for piece in ["Hello ", "there, ", "this is ", "a streamed ", "answer."]:
        await streamer.append(markdown_text=piece)
    feedback = [{"type": "context_actions", "elements": []}]
    await streamer.stop(blocks=feedback)

    streamed = slack.message("C1", streamer.ts)
    assert slack.text_of(streamed) == "Hello there, this is a streamed answer."
    assert streamed["streaming"] is False and streamed["blocks"] == feedback
    assert streamed["thread_ts"] == root["ts"]
    start = slack.calls("chat.startStream")[0]
    assert "markdown_text" not in start and start["chunks"][0]["type"] == "markdown_text"
    assert len(slack.calls("chat.appendStream")) >= 1


async def test_short_stream_is_start_then_stop(client, slack):
    streamer = await client.chat_stream(channel="D1", thread_ts="1700000000.000001")
    await streamer.append(markdown_text="short")
    assert slack.requests == []  # still buffered
    await streamer.stop()
    assert [r.method for r in slack.requests] == ["chat.startStream", "chat.stopStream"]
    assert slack.text_of(slack.bot_messages("D1")[0]) == "short"


async def test_stream_argument_and_state_errors(client, slack):
    with pytest.raises(SlackApiError, match="missing_recipient_team_id"):
        await client.chat_startStream(channel="C1", thread_ts="1.0")
    with pytest.raises(SlackApiError, match="missing_recipient_user_id"):
        await client.chat_startStream(channel="G1", thread_ts="1.0", recipient_team_id="T1")
    with pytest.raises(SlackApiError, match="invalid_arguments"):
        await client.api_call("chat.startStream", json={"channel": "D1", "markdown_text": "no thread"})

    started = await client.chat_startStream(channel="D1", thread_ts="1.0", markdown_text="a")
    await client.chat_appendStream(channel="D1", ts=started["ts"], markdown_text="b")
    assert slack.message("D1", started["ts"])["streaming"] is True
    await client.chat_stopStream(channel="D1", ts=started["ts"], markdown_text="c")
    assert slack.text_of(slack.message("D1", started["ts"])) == "abc"
    with pytest.raises(SlackApiError, match="message_not_in_streaming_state"):
        await client.chat_appendStream(channel="D1", ts=started["ts"], markdown_text="late")
    with pytest.raises(SlackApiError, match="message_not_found"):
        await client.chat_appendStream(channel="D1", ts="9.9", markdown_text="x")
    with pytest.raises(SlackApiError, match="msg_too_long"):
        await client.chat_startStream(channel="D1", thread_ts="1.0", markdown_text="x" * 12_001)


async def test_update_delete_and_length_limits(client, slack):
    posted = await client.chat_postMessage(channel="C1", text="draft")
    updated = await client.chat_update(channel="C1", ts=posted["ts"], text="final")
    assert updated["text"] == "final" and slack.message("C1", posted["ts"])["text"] == "final"
    with pytest.raises(SlackApiError, match="msg_too_long"):
        await client.chat_update(channel="C1", ts=posted["ts"], text="x" * 4001)
    with pytest.raises(SlackApiError, match="msg_too_long"):
        await client.chat_postMessage(channel="C1", markdown_text="x" * 12_001)
    with pytest.raises(SlackApiError, match="msg_too_long"):
        await client.chat_postMessage(channel="C1", text="x" * 40_001)
    await client.chat_delete(channel="C1", ts=posted["ts"])
    with pytest.raises(SlackApiError, match="message_not_found"):
        await client.chat_update(channel="C1", ts=posted["ts"], text="gone")


async def test_text_of_reads_markdown_text_and_blocks(client, slack):
    md = await client.chat_postMessage(channel="C1", markdown_text="**bold**")
    blocks = await client.chat_postMessage(
        channel="C1", text="fallback", blocks=[{"type": "markdown", "text": "visible"}]
    )
    assert slack.text_of(slack.message("C1", md["ts"])) == "**bold**"
    assert slack.text_of(slack.message("C1", blocks["ts"])) == "visible"


async def test_fail_switch_raises_the_error_once(client, slack):
    slack.fail("chat.postMessage", "not_in_channel")
    with pytest.raises(SlackApiError) as failed:
        await client.chat_postMessage(channel="C9", text="hi")
    assert failed.value.response["error"] == "not_in_channel"
    await client.chat_postMessage(channel="C9", text="hi")
    assert [(r.failed, r.error) for r in slack.requests] == [(True, "not_in_channel"), (False, None)]
    assert len(slack.messages("C9")) == 1


async def test_rate_limit_429_with_retry_after(client, slack):
    slack.fail("chat.postMessage", "ratelimited", status=429, headers={"Retry-After": "1"})
    with pytest.raises(SlackApiError) as limited:
        await client.chat_postMessage(channel="C1", text="hi")
    assert limited.value.response.status_code == 429
    assert limited.value.response["error"] == "ratelimited"
    assert limited.value.response.headers["Retry-After"] == "1"


async def test_delay_slows_one_response(client, slack):
    slack.delay("auth.test", 0.1)
    started = time.monotonic()
    await client.auth_test()
    assert time.monotonic() - started >= 0.1
    started = time.monotonic()
    await client.auth_test()
    assert time.monotonic() - started < 0.1


async def test_ephemeral_reactions_users_views_status(client, slack):
    ts = slack.add_message("C1", "hello", user="U2")
    ephemeral = await client.chat_postEphemeral(channel="C1", user="U2", text="only you")
    assert slack.ephemerals[0]["text"] == "only you" and ephemeral["message_ts"]
    await client.reactions_add(channel="C1", timestamp=ts, name="eyes")
    assert slack.message("C1", ts)["reactions"] == [{"name": "eyes", "users": ["UBOT"], "count": 1}]
    with pytest.raises(SlackApiError, match="already_reacted"):
        await client.reactions_add(channel="C1", timestamp=ts, name="eyes")
    await client.reactions_remove(channel="C1", timestamp=ts, name="eyes")
    assert "reactions" not in slack.message("C1", ts)  # as Slack: no empty list left behind
    assert (await client.users_info(user="U2"))["user"]["id"] == "U2"
    view = await client.views_open(
        trigger_id="t.1", view={"type": "modal", "title": {"type": "plain_text", "text": "x"}}
    )
    assert view["view"]["id"] in slack.views
    await client.assistant_threads_setStatus(channel_id="D1", thread_ts="1.0", status="is thinking...")
    assert slack.calls("assistant.threads.setStatus")[0]["status"] == "is thinking..."


async def test_response_url_records_webhook_posts(slack):
    hook = AsyncWebhookClient(slack.response_url("r1"))
    sent = await hook.send_dict({"text": "done", "response_type": "ephemeral"})
    assert (sent.status_code, sent.body) == (200, "ok")
    assert slack.responses["r1"] == [{"text": "done", "response_type": "ephemeral"}]
    slack.fail_response("r1", 500)
    assert (await hook.send(text="again")).status_code == 500
    assert slack.responses["r2"] == []


# --------------------------------------------------------------------------- FakeOpenAI


async def test_streaming_with_usage(ai, llm):
    llm.reply("Hello brave new world", usage=(12, 4))
    stream = await ai.chat.completions.create(
        model="gpt-4o-mini", messages=USER_ASKS, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello brave new world"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 16
    assert {c.model for c in chunks} == {"gpt-4o-mini"}
    assert llm.requests[0]["stream"] is True and llm.requests[0]["messages"] == USER_ASKS


async def test_exact_chunks_model_and_finish_reason(ai, llm):
    llm.reply(chunks=["a", "b", "c"], model="served-model", finish_reason="length")
    stream = await ai.chat.completions.create(model="asked", messages=USER_ASKS, stream=True)
    chunks = [chunk async for chunk in stream]
    assert [c.choices[0].delta.content for c in chunks] == ["", "a", "b", "c", None]
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].model == "served-model"
    assert all(c.usage is None for c in chunks)


async def test_non_streaming_echo_by_default(ai, llm):
    completion = await ai.chat.completions.create(model="gpt-4o-mini", messages=USER_ASKS)
    assert completion.choices[0].message.content == "echo: what is up"
    assert completion.usage.prompt_tokens == 3 and completion.usage.completion_tokens == 4
    assert [m.id async for m in ai.models.list()] == ["gpt-4o-mini", "gpt-4o"]


async def test_server_errors_map_to_openai_exceptions(ai, llm):
    llm.reply(status=500)
    with pytest.raises(openai.InternalServerError):
        await ai.chat.completions.create(model="m", messages=USER_ASKS)
    llm.reply(status=429, error="rate_limit_exceeded", headers={"retry-after": "0"})
    with pytest.raises(openai.RateLimitError) as limited:
        await ai.chat.completions.create(model="m", messages=USER_ASKS, stream=True)
    assert limited.value.code == "rate_limit_exceeded"


async def test_client_retries_after_rate_limit(ai, llm):
    llm.reply(status=429, error="rate_limit_exceeded", headers={"retry-after-ms": "10"})
    llm.reply("after retry")
    completion = await ai.with_options(max_retries=1).chat.completions.create(model="m", messages=USER_ASKS)
    assert completion.choices[0].message.content == "after retry" and len(llm.requests) == 2


async def test_wrong_key_is_authentication_error(llm):
    async with openai.AsyncOpenAI(api_key="sk-wrong", base_url=llm.url, max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as denied:
            await bad.chat.completions.create(model="m", messages=USER_ASKS)
    assert denied.value.code == "invalid_api_key"
    assert set(denied.value.body) == {"message", "type", "param", "code"}


async def test_stall_is_caught_by_client_timeout(ai, llm):
    llm.reply("one two three", stall_after=1)
    received = []
    with pytest.raises(openai.APITimeoutError):
        stream = await ai.with_options(timeout=0.2).chat.completions.create(
            model="m", messages=USER_ASKS, stream=True
        )
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content)
    assert received == ["", "one"]


async def test_stalled_handler_does_not_outlive_stop():
    fake = await FakeOpenAI().__aenter__()
    fake.reply("never", stall_after=0)
    async with openai.AsyncOpenAI(api_key=fake.api_key, base_url=fake.url, max_retries=0) as client:
        stream = await client.chat.completions.create(model="m", messages=USER_ASKS, stream=True)
        assert await wait_until(lambda: fake._inflight)
        started = time.monotonic()
        await fake.__aexit__(None, None, None)
        assert time.monotonic() - started < 0.5 and not fake._inflight
        with pytest.raises(openai.APIError):
            _ = [chunk async for chunk in stream]


async def test_cut_connection_raises(ai, llm):
    llm.reply("one two three", cut_after=2)
    received = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in await ai.chat.completions.create(model="m", messages=USER_ASKS, stream=True):
            received.append(chunk.choices[0].delta.content)
    assert received == ["", "one", " two"]


async def test_malformed_stream_line_raises_json_error(ai, llm):
    llm.reply("x", malformed=True)
    with pytest.raises(json.JSONDecodeError):  # the SDK does not wrap it in an openai error
        _ = [
            chunk
            async for chunk in await ai.chat.completions.create(model="m", messages=USER_ASKS, stream=True)
        ]


# --------------------------------------------------------------------------- SlackSender


class Capture(LoopbackServer):
    """Records what arrives at /slack/events and verifies it like Bolt would."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.verifier = SignatureVerifier(SECRET)

    def _routes(self):
        return [web.post("/slack/events", self._handle)]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((dict(request.headers), body))
        if not self.verifier.is_valid_request(body, dict(request.headers)):
            return web.json_response({"error": "invalid request"}, status=401)
        return web.Response(text="")


@pytest.fixture
async def capture():
    async with Capture() as server:
        yield server


@pytest.fixture
async def sender(capture):
    async with SlackSender(f"{capture.base}/slack/events", SECRET) as s:
        yield s


def test_sign_matches_slack_sdk():
    body = b'{"type":"event_callback"}'
    assert sign(SECRET, 1700000000, body) == SignatureVerifier(SECRET).generate_signature(
        timestamp="1700000000", body=body
    )


async def test_event_envelope_is_signed(sender, capture):
    event = mention("hello", thread_ts="1700000000.000001")
    assert await sender.event(event, event_id="Ev1", retry_num=1) == (200, "")
    headers, body = capture.received[0]
    envelope = json.loads(body)
    assert envelope["type"] == "event_callback" and envelope["event_id"] == "Ev1"
    assert envelope["api_app_id"] == "A1" and envelope["authorizations"][0]["user_id"] == "UBOT"
    assert envelope["event"]["text"] == "<@UBOT> hello" and envelope["event"]["parent_user_id"] == "U1"
    assert headers["X-Slack-Retry-Num"] == "1" and headers["X-Slack-Retry-Reason"] == "http_timeout"
    assert headers["Content-Type"] == "application/json"


async def test_command_and_action_bodies(sender, capture):
    assert (await sender.command("/ask", "what now?", response_url="http://x/r"))[0] == 200
    form = {k: v[0] for k, v in parse_qs(capture.received[0][1].decode()).items()}
    assert form["command"] == "/ask" and form["text"] == "what now?" and form["response_url"] == "http://x/r"
    assert {"token", "team_id", "team_domain", "channel_id", "channel_name", "user_id", "user_name",
            "api_app_id", "is_enterprise_install", "trigger_id"} <= set(form)  # fmt: skip

    assert (await sender.action({"type": "block_actions", "actions": []}))[0] == 200
    payload = parse_qs(capture.received[1][1].decode())["payload"][0]
    assert json.loads(payload)["type"] == "block_actions"


async def test_raw_requests_for_bad_signatures(sender, capture):
    assert (await sender.raw("{}", content_type="application/json", sign=False))[0] == 401
    assert (await sender.raw("{}", content_type="application/json", signature="v0=bad"))[0] == 401
    stale = int(time.time()) - 301
    assert (await sender.raw("{}", content_type="application/json", timestamp=stale))[0] == 401
    assert (await sender.raw("{}", content_type="application/json"))[0] == 200
    assert "X-Slack-Signature" not in capture.received[0][0]


def test_event_helpers_shapes():
    msg = message("hi", channel="D1", channel_type="im", subtype="bot_message", bot_id="B9")
    assert (msg["type"], msg["channel_type"], msg["subtype"], msg["bot_id"]) == (
        "message",
        "im",
        "bot_message",
        "B9",
    )
    assert msg["ts"] == msg["event_ts"] and "thread_ts" not in msg
    added = reaction("reaction_added", "+1", user="U1", channel="C1", ts="1.000001")
    assert (
        added["item"] == {"type": "message", "channel": "C1", "ts": "1.000001"}
        and added["item_user"] == "UBOT"
    )
    first, second = mention("a"), mention("b")
    assert first["ts"] < second["ts"]
    with pytest.raises(ValueError):
        reaction("reaction_changed", "+1", user="U1", channel="C1", ts="1.0")


# --------------------------------------------------------------------------- wait_until and Bolt


async def test_wait_until_returns_value_or_fails():
    assert await wait_until(lambda: [1]) == [1]
    with pytest.raises(AssertionError, match="still falsy"):
        await wait_until(list, timeout=0.05)


async def test_all_fakes_together_with_bolt(slack, llm, ai):
    """A minimal Bolt app: a mention is answered with the LLM's reply, in the thread."""
    from slack_bolt.async_app import AsyncApp

    app = AsyncApp(client=AsyncWebClient(token=slack.bot_token, base_url=slack.url), signing_secret=SECRET)

    @app.event("app_mention")
    async def answer(event, say):
        completion = await ai.chat.completions.create(
            model="m", messages=[{"role": "user", "content": event["text"]}]
        )
        await say(text=completion.choices[0].message.content, thread_ts=event["ts"])

    runner = web.AppRunner(app.web_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
        async with SlackSender(url, SECRET) as bot_sender:
            event = mention("ping")
            assert (await bot_sender.event(event))[0] == 200
            replies = await wait_until(lambda: slack.bot_messages("C1"))
    finally:
        await runner.cleanup()
    assert slack.text_of(replies[0]) == "echo: <@UBOT> ping" and replies[0]["thread_ts"] == event["ts"]
    assert slack.calls("chat.postMessage")[0]["team_id"] == "T1"  # Bolt adds team_id to every call
