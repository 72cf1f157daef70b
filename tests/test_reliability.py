"""Faults injected through the fakes: nothing duplicated, nothing lost, nothing dangerous."""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import urlencode

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.feedback import FIX_ACTION, FIX_SHORTCUT, FIX_VIEW, REGENERATE_ACTION, VOTE_ACTION
from bot.server import MAX_BODY, is_ssl_check

from conftest import SIGNING_SECRET, Harness
from fakes import wait_until
from fakes.slack_sender import mention, reaction, sign


def replies(h: Harness, channel: str, thread_ts: str) -> list[dict]:
    return [m for m in h.slack.thread(channel, thread_ts) if m.get("user") == h.slack.bot_user_id]


def texts(h: Harness, channel: str, thread_ts: str) -> list[str]:
    return [h.slack.text_of(m) for m in replies(h, channel, thread_ts)]


# -- requests Bolt alone would mishandle ------------------------------------------------------


async def test_slash_command_whose_text_says_payload_is_answered(bot: Harness):
    bot.model.reply("The payload is JSON.")
    status, _ = await bot.sender.command("/ask", "what is in the payload field?", channel_id="C5")
    assert status == 200
    [call] = await bot.calls(1)
    assert call.request_text == "what is in the payload field?"


@pytest.mark.parametrize(("body", "content_type", "expected"), [
    (b"{not json", "application/json", 400),
    (b"\xff\xfe\x00garbage", "application/json", 400),
    (b"payload=%7Bbroken", "application/x-www-form-urlencoded", 400),
    (b"[1, 2, 3]", "application/json", 400),
    (b"", "application/x-www-form-urlencoded", 400),
    (b'{"type": "event_callback", "event": {"type": "mystery_event"}}', "application/json", 200),  # dropped
    (b'{"type": "event_callback", "event_id": "Ev9", "event": {"type": "app_mention"}}', "application/json", 200),
    (b'{"type": "event_callback", "event": {"type": "reaction_added"}}', "text/plain", 200),
    (b'{"type": "url_verification", "challenge": "c-123"}', "application/json", 200),
    (b'{"item": {"channel": false}}', "application/json", 400),  # found by the fuzzer: Bolt raised
])
async def test_signed_but_malformed_requests_get_a_4xx_or_a_quiet_200(bot: Harness, body: bytes,
                                                                      content_type: str, expected: int):
    status, text = await bot.sender.raw(body, content_type=content_type)
    assert status == expected, text
    if b"url_verification" in body:
        assert json.loads(text) == {"challenge": "c-123"}
    await bot.settle()
    assert bot.model.requests == [] and bot.slack.bot_messages() == []


async def test_body_over_one_megabyte_is_refused(bot: Harness):
    status, _ = await bot.sender.raw(b'{"type": "event_callback", "x": "' + b"a" * 1_100_000 + b'"}',
                                     content_type="application/json")
    assert status == 413


@pytest.mark.parametrize("how", ["unsigned", "wrong signature", "stale", "future"])
async def test_unverified_requests_are_rejected_and_nothing_is_logged(bot: Harness, how: str):
    body = json.dumps({"type": "url_verification", "challenge": "x"}).encode()
    now = int(time.time())
    kwargs = {
        "unsigned": {"sign": False},
        "wrong signature": {"signature": sign("not-the-secret", now, body), "timestamp": now},
        "stale": {"timestamp": now - 301},
        "future": {"timestamp": now + 301},
    }[how]
    status, _ = await bot.sender.raw(body, content_type="application/json", **kwargs)
    assert status == 401
    event = mention("<@UBOT> hello")
    status, _ = await bot.sender.raw(json.dumps({"type": "event_callback", "event": event, "event_id": "Ev1"}),
                                     content_type="application/json", **kwargs)
    assert status == 401
    await bot.settle()
    assert bot.model.requests == [] and await bot.store.list_calls() == []


# What a hostile sender or a broken proxy can put in front of the endpoint. Statuses allowed:
# 200 (acknowledged), 400 (not a Slack request), 401 (not signed by Slack), 404 (Bolt: nobody
# listens to that), 413 (over 1 MB); never a 500, and nothing logged at ERROR or with a traceback.
ALLOWED = {200, 400, 401, 404, 413}
SLACK_TYPES = ["event_callback", "url_verification", "block_actions", "interactive_message", "view_submission",
               "view_closed", "shortcut", "message_action", "block_suggestion", "dialog_submission",
               "dialog_suggestion", "dialog_cancellation", "workflow_step_edit", "app_rate_limited"]
EVENT_TYPES = ["app_mention", "message", "reaction_added", "reaction_removed", "app_home_opened",
               "function_executed", "workflow_step_execute", "assistant_thread_started", "mystery"]
KEYS = ["type", "event", "event_id", "user", "channel", "ts", "text", "command", "payload", "item", "reaction",
        "actions", "action_id", "block_id", "callback_id", "view", "team", "team_id", "enterprise", "container",
        "message", "authorizations", "response_url", "response_urls", "trigger_id", "workflow_step", "function",
        "function_data", "subtype", "thread_ts", "bot_id", "channel_type", "is_enterprise_install", "challenge",
        "ssl_check", "assistant_thread", "value", "item_user", "event_ts", "state", "submission", "private_metadata"]
# Header text aiohttp's client will send (no control characters, encodable): non-ASCII included.
# (Header bytes that are not UTF-8 at all: tests/test_requests.py.)
HEADER_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)


def json_values(leaves: st.SearchStrategy) -> st.SearchStrategy:
    """JSON-able values whose objects use the keys Slack's payloads (and Bolt) use."""
    return st.recursive(
        leaves, lambda children: st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS), children, max_size=6)
        | st.builds(lambda t, d: {**d, "type": t}, st.sampled_from(SLACK_TYPES + EVENT_TYPES),
                    st.dictionaries(st.sampled_from(KEYS), children, max_size=6)),
        max_leaves=16)


LEAVES = st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.sampled_from(
    SLACK_TYPES + EVENT_TYPES + ["1", "C1", "U1", "UBOT", "T1", "1700000000.000100", "+1", "vote", "fix"])
SLACKISH = json_values(LEAVES).filter(lambda v: isinstance(v, dict))


def nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"event":' * depth + b"1" + b"}" * depth
    return b"[" * depth  # unterminated


BODIES = st.one_of(
    st.binary(max_size=300),  # anything, non-UTF-8 included
    st.binary(min_size=1, max_size=50).map(lambda b: b"{" + b + b"\xff\xfe}"),  # JSON-looking, not UTF-8
    json_values(LEAVES).map(lambda v: json.dumps(v).encode()),
    SLACKISH.map(lambda v: json.dumps(v).encode()),
    SLACKISH.map(lambda v: urlencode({"payload": json.dumps(v)}).encode()),
    st.dictionaries(st.sampled_from(["command", "text", "payload", "user_id", "channel_id", "ssl_check", "token",
                                     "team_id", "response_url", "trigger_id"]),
                    st.text(max_size=30), max_size=6).map(lambda d: urlencode(d).encode()),
    st.builds(nested, st.integers(1, 6000), st.sampled_from(["list", "object", "open"])),
    st.builds(lambda d, form: urlencode({"payload": nested(d, "list").decode()}).encode() if form
              else b'{"type": "event_callback", "event": ' + nested(d, "object") + b"}",
              st.integers(50, 3000), st.booleans()),
    st.builds(lambda n, c: b'{"type": "event_callback", "x": "' + c * n + b'"}',  # around the 1 MB limit
              st.sampled_from([10, 1_048_000, 1_048_600, 1_100_000]), st.sampled_from([b"a", b"\xc3\xa9"])),
)
CONTENT_TYPES = st.one_of(
    st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain", "",
                     "application/json; charset=utf-8", "application/x-www-form-urlencoded; charset=latin-1",
                     "multipart/form-data; boundary=x", "application/octet-stream", "*/*", "application/json;;;"]),
    HEADER_TEXT)
# How the request is signed: validly, or a hostile timestamp and/or signature.
HOSTILE_TIMESTAMPS = st.one_of(
    st.sampled_from(["abc", "1.5", "9" * 5000, "", " ", "0x10", "1e9", "NaN", "-0", "+1",
                     "\u0661\u0662\u0663", "1" * 13, "99999999999999999999"]),
    st.integers(-10**12, 10**12).map(str),
    st.sampled_from(["+%d", " %d", "%d ", "%d.0", "\u0661%d", "%d\u00a0"]).map(lambda f: f % int(time.time())),
    HEADER_TEXT)
TIMESTAMPS = HOSTILE_TIMESTAMPS | st.integers(-400, 400).map(lambda skew: str(int(time.time()) + skew))
SIGNATURES = st.one_of(
    st.sampled_from(["v0=", "v0=\u00e9", "v1=abc", "v0=" + "0" * 64, "v0=" + "g" * 64, "v0=" + "a" * 10_000,
                     "V0=", "\u00e9" * 100]),
    st.binary(min_size=32, max_size=32).map(lambda b: "v0=" + b.hex()),
    HEADER_TEXT)


@st.composite
def requests_(draw) -> tuple[bytes, str, dict]:
    body, content_type = draw(BODIES), draw(CONTENT_TYPES)
    how = draw(st.sampled_from(["valid", "valid", "unsigned", "timestamp", "signature", "both", "signed-bad-ts"]))
    kwargs: dict = {}
    if how == "unsigned":
        kwargs = {"sign": False}
    elif how == "timestamp":  # a hostile timestamp, and no signature
        kwargs = {"sign": False, "timestamp": draw(TIMESTAMPS)}
    elif how == "signature":  # a current timestamp, a hostile signature
        kwargs = {"signature": draw(SIGNATURES)}
    elif how == "both":
        kwargs = {"timestamp": draw(TIMESTAMPS), "signature": draw(SIGNATURES)}
    elif how == "signed-bad-ts":  # the right HMAC over a hostile timestamp
        ts = draw(HOSTILE_TIMESTAMPS)
        kwargs = {"timestamp": ts, "signature": sign(SIGNING_SECRET, ts, body)}
    return body, content_type, kwargs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow, HealthCheck.data_too_large])
@given(request=requests_())
async def test_fuzzed_requests_never_cause_a_500_or_an_error_in_the_logs(fuzz_bot: Harness, request,
                                                                         caplog: pytest.LogCaptureFixture):
    body, content_type, kwargs = request
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    status, _ = await fuzz_bot.sender.raw(body, content_type=content_type, **kwargs)
    assert status in ALLOWED
    if kwargs and len(body) <= MAX_BODY:  # not validly signed: refused, unless it is Slack's unsigned ssl_check
        header_too_long = any(len(str(v).encode()) > 8190 for v in kwargs.values())  # aiohttp's 400
        assert status == 401 or status == 200 and is_ssl_check(body) or status == 400 and header_too_long
    await fuzz_bot.settle()  # listeners run after the ack: wait for them to finish (or fail)
    errors = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records
              if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == []


# Signed requests for this bot's own listeners, with Slack's fields missing or of other types.
ODD = st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.sampled_from(
    ["C1", "U1", "UBOT", "1.000001", "+1", "message", "up"]) | st.dictionaries(
    st.sampled_from(["id", "ts", "channel", "type", "channel_id", "message_ts", "team_id", "values", "value"]),
    st.none() | st.integers() | st.text(max_size=5) | st.sampled_from(["C1", "1.000001", "message"]), max_size=4)
EVENT_FIELDS = ["user", "channel", "ts", "text", "thread_ts", "event_ts", "item", "reaction", "item_user", "tab",
                "channel_type", "subtype", "bot_id"]


@st.composite
def listener_requests(draw) -> tuple[str, dict]:
    def some(keys: list[str], size: int = 5) -> dict:
        return draw(st.dictionaries(st.sampled_from(keys), ODD, max_size=size))

    kind = draw(st.sampled_from(["event", "click", "shortcut", "modal"]))
    if kind == "event":
        event = {"type": draw(st.sampled_from(["app_mention", "message", "reaction_added", "reaction_removed",
                                               "app_home_opened"])), **some(EVENT_FIELDS, 6)}
        return "event", {"type": "event_callback", "team_id": "T1", "event": event,
                         "event_id": f"Ev{draw(st.integers(0, 10**9))}"}
    if kind == "click":
        action = {"action_id": draw(st.sampled_from([VOTE_ACTION, FIX_ACTION, REGENERATE_ACTION])),
                  **some(["value", "action_ts", "block_id"], 3)}
        return "form", {"type": "block_actions", "actions": [action],
                        **some(["user", "channel", "container", "message", "trigger_id", "team"])}
    if kind == "shortcut":
        return "form", {"type": "message_action", "callback_id": FIX_SHORTCUT,
                        **some(["user", "channel", "message", "trigger_id", "team"])}
    view = {"callback_id": FIX_VIEW, "type": "modal", **some(["private_metadata", "state", "id"], 3)}
    return "form", {"type": "view_submission", "view": view, **some(["user", "team", "trigger_id"], 3)}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(request=listener_requests())
async def test_fuzzed_requests_to_the_listeners_never_cause_a_500_or_an_error_in_the_logs(
        fuzz_bot: Harness, request, caplog: pytest.LogCaptureFixture):
    how, body = request
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    if how == "event":
        status, _ = await fuzz_bot.sender.raw(json.dumps(body), content_type="application/json")
    else:
        status, _ = await fuzz_bot.sender.action(body)
    assert status in ALLOWED
    await fuzz_bot.settle()
    errors = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records
              if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == []


@pytest.fixture
async def fuzz_bot(bot: Harness):
    yield bot
    async with aiohttp.ClientSession() as session, session.get(f"{bot.url}/healthz") as resp:
        assert resp.status == 200, "the bot stays healthy after the fuzzing"


# -- model faults ------------------------------------------------------------------------------


async def test_model_rate_limit_and_server_errors_are_retried_with_backoff(bot: Harness):
    bot.model.reply(status=429, error="rate_limit_exceeded", headers={"retry-after-ms": "50"})
    bot.model.reply(status=500, error="server_error")
    bot.model.reply("Third time lucky.")
    event = await bot.mention("hello", channel="C1")
    [call] = await bot.calls(1, timeout=10)
    assert texts(bot, "C1", event["ts"]) == ["Third time lucky."]
    assert len(bot.model.requests) == 3 and call.status == "ok"


@pytest.mark.parametrize("bot_settings", [{"FLYWHEEL_MODEL_TIMEOUT": "1"}])
async def test_a_stalled_stream_ends_in_an_apology_and_the_bot_answers_the_next_request(bot: Harness):
    bot.model.reply(chunks=["Thinking about ", "it "], stall_after=2)
    event = await bot.mention("hello", channel="C1")
    started = time.monotonic()
    [call] = await bot.calls(1, timeout=10)
    assert time.monotonic() - started < 5
    [text] = texts(bot, "C1", event["ts"])
    assert text.startswith("Thinking about it") and "took too long" in text
    assert (call.status, call.error_type, call.answer) == ("incomplete", "ModelError.timeout", "Thinking about it ")

    bot.model.reply("Back to normal.")
    second = await bot.mention("again", channel="C1")
    await bot.calls(2)
    assert texts(bot, "C1", second["ts"]) == ["Back to normal."]


@pytest.mark.parametrize("bot_settings", [{"FLYWHEEL_MODEL_TIMEOUT": "1"}])
async def test_a_long_answer_with_steady_tokens_is_not_cut_by_the_idle_timeout(bot: Harness):
    bot.model.reply(chunks=[f"part {i} " for i in range(30)], chunk_delay=0.1)  # 3 s in all
    event = await bot.mention("go on", channel="C1")
    [call] = await bot.calls(1, timeout=10)
    assert call.status == "ok" and [t.strip() for t in texts(bot, "C1", event["ts"])] == [call.answer.strip()]


async def test_a_stream_cut_midway_keeps_what_arrived_and_marks_it_incomplete(bot: Harness):
    bot.model.reply(chunks=["The first half ", "arrived "], cut_after=2)
    event = await bot.mention("hello", channel="C1")
    [call] = await bot.calls(1)
    [text] = texts(bot, "C1", event["ts"])
    assert text.startswith("The first half arrived") and "Sorry" in text
    assert call.status == "incomplete" and call.answer == "The first half arrived "


async def test_a_malformed_model_response_ends_in_an_apology_and_an_error_row(bot: Harness):
    bot.model.reply(malformed=True)
    event = await bot.mention("hello", channel="C1")
    [call] = await bot.calls(1)
    assert "couldn't read" in texts(bot, "C1", event["ts"])[0]
    assert call.status == "error" and call.error_type == "ModelError.malformed"


async def test_refused_model_connection_ends_in_an_apology(bot: Harness):
    await bot.model.stop()
    event = await bot.mention("hello", channel="C1")
    [call] = await bot.calls(1, timeout=10)
    assert "couldn't reach the model" in texts(bot, "C1", event["ts"])[0]
    assert call.error_type == "ModelError.connection"


# -- Slack faults -------------------------------------------------------------------------------


@pytest.mark.parametrize("error", ["unknown_method", "not_allowed_token_type", "missing_scope"])
async def test_when_slack_refuses_streaming_the_answer_is_posted(bot: Harness, error: str):
    bot.slack.fail("chat.startStream", error, times=99)
    bot.model.reply("Posted instead.")
    event = await bot.mention("hello", channel="C1")
    [call] = await bot.calls(1)
    assert texts(bot, "C1", event["ts"]) == ["Posted instead."]
    assert call.status == "ok" and call.reply_ts == replies(bot, "C1", event["ts"])[0]["ts"]


async def test_streaming_state_conflict_midway_posts_the_rest_without_losing_text(bot: Harness):
    words = [f"w{i} " for i in range(40)]
    bot.model.reply(chunks=words, chunk_delay=0.06)
    bot.slack.fail("chat.appendStream", "streaming_state_conflict", times=99)
    event = await bot.mention("hello", channel="C1")
    await bot.calls(1, timeout=10)
    assert " ".join(texts(bot, "C1", event["ts"])).split() == "".join(words).split()


async def test_slack_429_and_5xx_are_retried(bot: Harness):
    bot.slack.fail("chat.startStream", "ratelimited", status=429, headers={"Retry-After": "1"})
    bot.slack.fail("chat.stopStream", "internal_error", status=503)
    bot.model.reply("Arrived anyway.")
    event = await bot.mention("hello", channel="C1")
    [call] = await bot.calls(1, timeout=15)
    assert texts(bot, "C1", event["ts"]) == ["Arrived anyway."] and call.status == "ok"


async def test_msg_too_long_from_slack_splits_the_message(bot: Harness):
    bot.slack.fail("chat.startStream", "unknown_method", times=99)
    bot.slack.fail("chat.postMessage", "msg_too_long")
    bot.model.reply("para one.\n\n" * 100)
    event = await bot.mention("hello", channel="C1")
    await bot.calls(1)
    assert " ".join(texts(bot, "C1", event["ts"])).split() == ("para one.\n\n" * 100).split()
    assert len(replies(bot, "C1", event["ts"])) == 2


async def test_when_no_way_to_post_works_the_error_is_logged_not_dropped(bot: Harness):
    bot.slack.fail("chat.startStream", "channel_not_found", times=99)
    bot.slack.fail("chat.postMessage", "channel_not_found", times=99)
    await bot.mention("hello", channel="C1")
    [call] = await bot.calls(1)
    assert call.status == "error" and call.error_type == "SlackApiError"
    assert "channel_not_found" in call.error_message


# -- votes arriving out of order, and outages --------------------------------------------------


async def test_a_late_retry_of_a_reaction_cannot_undo_its_removal(bot: Harness):
    event = await bot.mention("hello", channel="C1")
    [call] = await bot.calls(1)
    [answer] = replies(bot, "C1", event["ts"])
    added = reaction("reaction_added", "+1", user="U2", channel="C1", ts=answer["ts"])
    removed = reaction("reaction_removed", "+1", user="U2", channel="C1", ts=answer["ts"])
    assert (await bot.sender.event(added))[0] == 200
    assert (await bot.sender.event(removed))[0] == 200
    assert (await bot.sender.event(added, retry_num=1))[0] == 200  # Slack's retry, arriving late
    await bot.written()
    assert await bot.store.votes(call.id) == {}


# -- shutdown -----------------------------------------------------------------------------------


async def test_shutdown_lets_answers_finish_then_interrupts_the_rest_with_a_row_each(bot: Harness):
    bot.model.reply("Quick one.")
    quick = await bot.mention("quick", channel="C1")
    await bot.calls(1)
    bot.model.reply(chunks=["Slow ", "answer "], stall_after=2)
    slow = await bot.mention("slow", channel="C1")
    await wait_until(lambda: bot.fw.conversation.inflight == 1 and bot.slack.calls("chat.startStream")[1:])
    interrupted = await bot.fw.conversation.shutdown(grace=0.3)
    assert interrupted == 1
    calls = await bot.store.list_calls()
    assert [c.status for c in calls] == ["ok", "incomplete"]
    assert calls[1].error_type == "Interrupted" and calls[1].answer == "Slow answer "
    [text] = texts(bot, "C1", slow["ts"])
    assert text.startswith("Slow answer") and "restarted" in text
    assert texts(bot, "C1", quick["ts"]) == ["Quick one."]


# -- context that does not fit ----------------------------------------------------------------


async def test_a_thread_too_long_for_the_context_drops_the_oldest_messages_with_a_note(bot: Harness):
    root = bot.slack.add_message("C1", "message 0 " + "x" * 9_000, user="U1")
    for i in range(1, 15):
        bot.slack.add_message("C1", f"message {i} " + "x" * 9_000, user="U2", thread_ts=root)
    await bot.mention("what did we decide?", channel="C1", thread_ts=root)
    [call] = await bot.calls(1)
    sent = bot.model.requests[0]["messages"]
    assert sum(len(m["content"]) for m in sent) <= 110_000
    assert "oldest messages of this conversation were left out" in sent[1]["content"]
    assert sent[2]["content"].startswith("message ") and sent[-2]["content"].startswith("message 14 ")
    assert sent[-1]["content"] == "what did we decide?" and call.status == "ok"


async def test_when_the_model_says_the_context_is_too_long_older_messages_are_left_out_and_it_retries(
        bot: Harness):
    root = bot.slack.add_message("C1", "first", user="U1")
    for i in range(1, 8):
        bot.slack.add_message("C1", f"reply {i}", user="U2", thread_ts=root)
    bot.model.reply(status=400, error="context_length_exceeded")
    bot.model.reply("Fits now.")
    event = await bot.mention("summary please", channel="C1", thread_ts=root)
    [call] = await bot.calls(1)
    first, second = (r["messages"] for r in bot.model.requests)
    assert len(second) < len(first)
    assert "left out to fit the context" in second[1]["content"]
    assert second[-2]["content"] == "reply 7"
    assert texts(bot, "C1", root)[-1] == "Fits now." and call.status == "ok"
    assert call.messages == second and call.request_ts == event["ts"]


async def test_a_user_text_longer_than_the_context_is_cut_with_a_note(bot: Harness):
    bot.model.reply("That is a lot of y.")
    status, _ = await bot.sender.command("/ask", "y" * 150_000, channel_id="C5")
    assert status == 200
    [call] = await bot.calls(1)
    last = bot.model.requests[0]["messages"][-1]["content"]
    assert len(last) < 90_000 and last.endswith("it is too long for the model.)")
    assert call.status == "ok"


# -- output safety and long answers, end to end ------------------------------------------------------

DANGEROUS = ["<!channel>", "<!here>", "<!everyone>", "<!subteam^S0123|@oncall>", "@here", "@channel",
             "@everyone", "<https://evil.example|https://good.example>", "<!date^1392734382^x|y>", "&", "<", ">"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.one_of(st.sampled_from(DANGEROUS), st.text(max_size=12)), min_size=1, max_size=12),
       cuts=st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=5))
async def test_no_bot_message_ever_carries_a_broadcast_or_group_mention(safety_bot: Harness, parts: list[str],
                                                                        cuts: list[int]):
    answer = " ".join(parts)
    chunks, i = [], 0
    while i < len(answer):  # deliver the answer in arbitrary pieces
        step = cuts[len(chunks) % len(cuts)]
        chunks.append(answer[i:i + step])
        i += step
    safety_bot.model.reply(chunks=chunks or [" "])
    before = len(await safety_bot.store.list_calls())
    await safety_bot.mention("say it", channel="C7")
    await safety_bot.calls(before + 1)
    for message in safety_bot.slack.bot_messages("C7"):
        posted = safety_bot.slack.text_of(message)
        assert "<!" not in posted and "<http" not in posted
        lowered = posted.lower()
        for word in ("@here", "@channel", "@everyone"):
            assert word not in lowered, posted


@pytest.fixture
async def safety_bot(bot: Harness):
    return bot


async def test_a_50000_character_answer_with_code_arrives_whole_within_every_slack_limit(bot: Harness):
    block = "Here is the next step.\n\n```python\n" + "\n".join(
        f"    value_{i} = compute({i}) & mask  # <step {i}>" for i in range(60)) + "\n```\n\n"
    answer = block * 20
    assert len(answer) > 50_000
    bot.model.reply(answer)
    event = await bot.mention("write the whole migration", channel="C1")
    [call] = await bot.calls(1, timeout=60)
    messages = texts(bot, "C1", event["ts"])
    assert len(messages) >= 5 and call.status == "ok"
    for text in messages:
        assert len(text) <= 12_000
        assert text.count("```") % 2 == 0, "no code fence is left open"
    # Reassembled (fences added at the breaks removed, entities unescaped) it is the model's answer.
    joined = "\n".join(messages).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    assert [line for line in joined.splitlines() if line.strip() and not line.startswith("```")] == [
        line for line in answer.splitlines() if line.strip() and not line.startswith("```")]
