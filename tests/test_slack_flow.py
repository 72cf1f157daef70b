"""Scenarios through the real HTTP endpoint: signed Slack requests in, fake Slack and model out."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import time

import aiohttp
import pytest

from conftest import PROMPTS, Harness, bot_with_prompt, serve_bot
from fakes import wait_until
from fakes.slack_sender import mention

ASK_VERSION = hashlib.sha256((PROMPTS / "ask.prompty").read_bytes()).hexdigest()


def bot_replies(h: Harness, channel: str, thread_ts: str) -> list[dict]:
    return [m for m in h.slack.thread(channel, thread_ts) if m.get("user") == h.slack.bot_user_id]


# -- mentions ------------------------------------------------------------------------------


async def test_mention_gets_one_streamed_answer_in_its_thread_and_one_logged_call(bot: Harness):
    bot.model.reply("Deploys go out at **4pm** on weekdays.", usage=(42, 9))
    event = await bot.mention("when do deploys go out?", channel="C1")

    [call] = await bot.calls(1)
    await bot.settle()
    replies = bot_replies(bot, "C1", event["ts"])
    assert len(replies) == 1
    assert "Deploys go out at **4pm** on weekdays." in bot.slack.text_of(replies[0])
    assert bot.slack.calls("chat.startStream"), "the answer is streamed"
    assert len(bot.model.requests) == 1

    sent = bot.model.requests[0]["messages"]
    assert sent[0]["role"] == "system" and sent[0]["content"].strip()
    assert sent[-1] == {"role": "user", "content": "when do deploys go out?"}
    assert all("<@UBOT>" not in m["content"] for m in sent)

    assert call.prompt_name == "ask" and call.prompt_version == ASK_VERSION
    assert call.model == "gpt-5.4-mini" and call.trigger == "mention" and call.status == "ok"
    assert call.source == "slack" and call.model_resolved == "gpt-5.4-mini"  # real traffic, and who answered
    assert call.messages == sent
    assert call.answer == "Deploys go out at **4pm** on weekdays."
    assert (call.prompt_tokens, call.completion_tokens) == (42, 9)
    assert call.latency_ms is not None and call.ttft_ms is not None and 0 <= call.ttft_ms <= call.latency_ms
    assert call.cost_usd == (42 * 0.75 + 9 * 4.50) / 1_000_000
    assert (call.channel_id, call.request_ts, call.thread_ts) == ("C1", event["ts"], event["ts"])
    assert call.user_id == "U1" and call.team_id == "T1"
    assert await bot.store.call_for_message("C1", replies[0]["ts"]) == call.id


async def test_mention_inside_a_thread_sends_the_earlier_messages_as_context_in_order(bot: Harness):
    root = bot.slack.add_message("C1", "We need to pick a database for the billing service.", user="U1")
    bot.slack.add_message("C1", "Postgres has JSONB & row locks.", user="U2", thread_ts=root)
    bot.slack.add_message("C1", "SQLite is simpler to run.", user="U3", thread_ts=root)

    await bot.mention("which one should we pick?", channel="C1", thread_ts=root)
    await bot.calls(1)

    sent = bot.model.requests[0]["messages"]
    assert [m["content"] for m in sent[1:]] == [
        "We need to pick a database for the billing service.",
        "Postgres has JSONB & row locks.",
        "SQLite is simpler to run.",
        "which one should we pick?",
    ]
    assert {m["role"] for m in sent[1:]} == {"user"}
    assert len(bot_replies(bot, "C1", root)) == 1


async def test_first_word_routes_to_a_named_prompt(bot: Harness):
    await bot.mention("summarize The deploy failed twice because the cache was cold.", channel="C1")
    [call] = await bot.calls(1)
    assert call.prompt_name == "summarize"
    assert "The deploy failed twice because the cache was cold." in bot.model.requests[0]["messages"][-1]["content"]


async def test_summarize_mentioned_in_a_thread_summarises_that_thread(bot: Harness):
    root = bot.slack.add_message("C1", "Incident: checkout 500s since 14:02.", user="U1")
    bot.slack.add_message("C1", "Rolled back release 812, errors gone.", user="U2", thread_ts=root)

    await bot.mention("summarize", channel="C1", thread_ts=root)
    [call] = await bot.calls(1)

    sent = bot.model.requests[0]["messages"]
    assert call.prompt_name == "summarize"
    # summarize templates the thread as a transcript that keeps who said what, by display name
    transcript = sent[-1]["content"]
    assert "u1: Incident: checkout 500s since 14:02." in transcript
    assert "u2: Rolled back release 812, errors gone." in transcript
    assert "summar" in transcript.lower()


# -- thread follow-ups and DMs ----------------------------------------------------------------


async def test_plain_follow_up_in_a_thread_the_bot_answered_is_answered_with_the_conversation(bot: Harness):
    bot.model.reply("Use Postgres.")
    first = await bot.mention("which database?", channel="C1")
    await bot.calls(1)

    bot.model.reply("Because of row locks.")
    await bot.message("why?", channel="C1", thread_ts=first["ts"])
    calls = await bot.calls(2)

    assert calls[1].trigger == "thread" and calls[1].prompt_name == "ask"
    sent = bot.model.requests[1]["messages"]
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", "which database?"), ("assistant", "Use Postgres."), ("user", "why?"),
    ]
    assert [bot.slack.text_of(m) for m in bot_replies(bot, "C1", first["ts"])] == [
        "Use Postgres.", "Because of row locks."]


async def test_plain_message_in_a_thread_the_bot_never_joined_is_ignored(bot: Harness):
    root = bot.slack.add_message("C1", "lunch?", user="U1")
    await bot.message("tacos", channel="C1", thread_ts=root, user="U2")
    await bot.message("top-level chatter", channel="C1", user="U2")
    await bot.settle()
    assert bot.model.requests == []
    assert bot.slack.bot_messages() == []


async def test_direct_message_is_answered_in_the_conversation(bot: Harness):
    bot.model.reply("Hi! Ask me anything.")
    event = await bot.message("hello bot", channel="D1", channel_type="im")
    [call] = await bot.calls(1)
    [answer] = bot.slack.bot_messages("D1")
    assert bot.slack.text_of(answer) == "Hi! Ask me anything."
    assert answer.get("thread_ts", answer["ts"]) == answer["ts"]  # in the conversation, not a thread
    assert call.trigger == "dm" and call.request_ts == event["ts"]


async def test_mention_and_its_message_twin_get_one_answer(bot: Harness):
    event = await bot.mention("hello", channel="C1")
    twin = dict(event, type="message", channel_type="channel")
    await bot.sender.event(twin)
    await bot.calls(1)
    await bot.settle()
    assert len(bot.model.requests) == 1
    assert len(bot_replies(bot, "C1", event["ts"])) == 1


async def test_retried_delivery_is_answered_once(bot: Harness):
    event = await bot.mention("hello", channel="C1")
    status, _ = await bot.sender.event(event, event_id=bot.sender.last_event_id, retry_num=1)
    assert status == 200
    await bot.calls(1)
    await bot.settle()
    assert len(bot.model.requests) == 1


async def test_bot_messages_and_edits_are_not_answered(bot: Harness):
    root = bot.slack.add_message("C1", "hi", user="U1")
    await bot.mention("first", channel="C1", thread_ts=root)
    await bot.calls(1)
    await bot.message("from another bot", channel="C1", thread_ts=root, bot_id="BOTHER")
    await bot.message("edited", channel="C1", thread_ts=root, subtype="message_changed")
    await bot.settle()
    assert len(bot.model.requests) == 1


# -- slash commands --------------------------------------------------------------------------


async def test_slash_command_acks_fast_and_answers_in_the_thread_of_a_root_message(bot: Harness):
    bot.model.reply("Hello to you too.")
    started = time.monotonic()
    status, body = await bot.sender.command("/ask", "hello", user_id="U7", channel_id="C9")
    elapsed = time.monotonic() - started
    assert status == 200 and elapsed < 3.0

    [call] = await bot.calls(1)
    [root] = [m for m in bot.slack.messages("C9") if m.get("thread_ts", m["ts"]) == m["ts"]]
    assert "<@U7>" in bot.slack.text_of(root) and "hello" in bot.slack.text_of(root)
    [answer] = bot_replies(bot, "C9", root["ts"])[1:]  # the root itself is the bot's too
    assert bot.slack.text_of(answer) == "Hello to you too."
    assert (call.trigger, call.thread_ts, call.user_id) == ("command", root["ts"], "U7")
    assert bot.model.requests[0]["messages"][-1]["content"] == "hello"


async def test_slash_command_answer_comes_through_response_url_when_the_bot_cannot_post(bot: Harness):
    bot.model.reply("Answer via webhook.")
    bot.slack.fail("chat.postMessage", "not_in_channel")
    status, _ = await bot.sender.command("/ask", "hello", channel_id="C9",
                                         response_url=bot.slack.response_url("r1"))
    assert status == 200
    [call] = await bot.calls(1)
    await wait_until(lambda: bot.slack.responses["r1"])
    [posted] = bot.slack.responses["r1"]
    assert posted["response_type"] == "in_channel"
    assert "Answer via webhook." in posted["blocks"][0]["text"] and "hello" in posted["blocks"][0]["text"]
    assert call.status == "ok"


async def test_slash_command_with_empty_text_gets_the_usage_hint_privately_and_no_model_call(bot: Harness):
    status, body = await bot.sender.command("/summarize", "  ")
    assert status == 200
    assert "Usage: `/summarize" in body
    await bot.settle()
    assert bot.model.requests == [] and bot.slack.calls("chat.postMessage") == []


# -- votes -----------------------------------------------------------------------------------


async def test_reactions_are_one_vote_per_person_and_removal_withdraws(bot: Harness):
    event = await bot.mention("hello", channel="C1")
    [call] = await bot.calls(1)
    [answer] = bot_replies(bot, "C1", event["ts"])

    await bot.react("reaction_added", "+1::skin-tone-2", user="U2", channel="C1", ts=answer["ts"])
    await bot.react("reaction_added", "-1", user="U3", channel="C1", ts=answer["ts"])
    assert await _votes(bot, call.id, {"U2": 1, "U3": -1})

    await bot.react("reaction_removed", "+1::skin-tone-2", user="U2", channel="C1", ts=answer["ts"])
    assert await _votes(bot, call.id, {"U3": -1})

    await bot.react("reaction_added", "+1", user="U4", channel="C1", ts=event["ts"])  # the human's message
    await bot.react("reaction_added", "tada", user="U4", channel="C1", ts=answer["ts"])  # not a vote
    await bot.settle()
    assert await bot.store.votes(call.id) == {"U3": -1}


async def _votes(bot: Harness, call_id: int, expected: dict[str, int], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await bot.store.votes(call_id) == expected:
            return True
        await asyncio.sleep(0.02)
    raise AssertionError(f"votes are {await bot.store.votes(call_id)}, expected {expected}")


# -- failures and health ---------------------------------------------------------------------


async def test_failed_model_call_ends_in_an_apology_in_the_thread_and_an_error_row(bot: Harness):
    bot.model.reply(status=401, error="invalid_api_key")
    event = await bot.mention("hello", channel="C1")
    [call] = await bot.calls(1)
    [reply] = bot_replies(bot, "C1", event["ts"])
    assert "Sorry" in bot.slack.text_of(reply)
    assert call.status == "error" and call.error_type == "ModelError.auth"
    assert bot.model.api_key not in (call.error_message or "")


async def test_healthz_reports_the_database(bot: Harness):
    async with aiohttp.ClientSession() as session, session.get(f"{bot.url}/healthz") as resp:
        body = await resp.json()
    assert resp.status == 200 and body["ok"] is True and body["database"] == "ok"
    assert body["prompts"] >= 2 and body["prompt_problems"] == [] and body["prompt_warnings"] == []
    assert (body["mode"], body["model"], body["answers_in_flight"]) == ("http", "gpt-5.4-mini", 0)
    assert bot.model.api_key not in str(body) and bot.slack.bot_token not in str(body)


async def test_unsigned_request_is_rejected_and_nothing_happens(bot: Harness):
    status, _ = await bot.sender.raw(b'{"type":"event_callback"}', content_type="application/json", sign=False)
    assert status == 401
    await bot.settle()
    assert bot.model.requests == [] and await bot.store.list_calls() == []


# -- more than one process, prompts that change, long answers ------------------------------------


async def test_the_bot_learns_who_it_is_once_not_on_every_request(bot: Harness):
    """Bolt would call auth.test for each request until one answered; a burst paid it 50 times."""
    events = await asyncio.gather(*(bot.mention(f"question {k}", channel="C1") for k in range(10)))
    await bot.calls(10)
    assert len(bot.slack.calls("auth.test")) == 1
    assert all(bot_replies(bot, "C1", e["ts"]) for e in events)


async def test_a_mention_is_acknowledged_before_anything_waits_on_slack(bot: Harness):
    """Slack wants its 200 within 3 s. Who the bot is (auth.test) was not learnt at start-up
    here, and Slack is slow to say: the mention is acknowledged at once and answered after."""
    bot.slack.delay("auth.test", 3.0)
    started = time.monotonic()
    event = await bot.mention("hello", channel="C1")
    acknowledged = time.monotonic() - started
    assert acknowledged < 1.5, f"the acknowledgement waited {acknowledged:.1f} s for auth.test"
    await bot.calls(1, timeout=10)
    assert bot_replies(bot, "C1", event["ts"])


async def test_an_acknowledged_mention_is_answered_when_slack_refused_auth_test_once(bot: Harness):
    """Slack cannot deliver it again (it has its 200): who the bot is is asked again."""
    bot.slack.fail("auth.test", "internal_error")
    event = await bot.mention("hello", channel="C1")
    [call] = await bot.calls(1, timeout=10)
    assert call.status == "ok" and bot_replies(bot, "C1", event["ts"])
    assert len(bot.slack.calls("auth.test")) == 2


async def test_two_processes_on_one_database_answer_an_event_once(bot: Harness, database_url: str):
    async with serve_bot(bot.slack, bot.model, database_url) as second:
        event = mention("<@UBOT> hello", channel="C1")
        bot.slack.add_message("C1", event["text"], ts=event["ts"])
        results = await asyncio.gather(bot.sender.event(event, event_id="Ev1"),
                                       second.sender.event(event, event_id="Ev1"))
        assert [status for status, _ in results] == [200, 200]
        await bot.calls(1)
        await wait_until(lambda: second.fw.conversation.inflight == 0)
        await bot.settle()
    assert len(bot.model.requests) == 1
    assert len(bot_replies(bot, "C1", event["ts"])) == 1


async def test_a_new_prompt_file_is_live_at_the_next_message(bot: Harness, tmp_path):
    prompts = tmp_path / "prompts"
    shutil.copytree(PROMPTS, prompts)
    async with serve_bot(bot.slack, bot.model, f"sqlite:///{tmp_path / 'x.db'}",
                         PROMPTS_DIR=str(prompts)) as h:
        (prompts / "standup.prompty").write_text(
            "---\nname: standup\ndescription: Stand-up update\nmetadata:\n  slack:\n    command: /standup\n"
            "---\nsystem:\nWrite a stand-up update.\n\nuser:\n{{ text }}\n")
        await h.mention("standup fixed the flaky test", channel="C1")
        [call] = await h.calls(1)
        assert call.prompt_name == "standup"
        assert bot.model.requests[0]["messages"][0]["content"] == "Write a stand-up update."
        status, _ = await h.sender.command("/standup", "shipped billing export")
        assert status == 200
        calls = await h.calls(2)
        assert calls[1].prompt_name == "standup" and calls[1].trigger == "command"


async def test_a_broken_prompt_says_privately_where_it_is_broken_instead_of_vanishing(bot: Harness, tmp_path):
    broken = ("---\nname: standup\ndescription: Stand-up update\nmodel:\n  options: {temperature: 7}\n"
              "metadata:\n  slack:\n    command: /standup\n---\nsystem:\nWrite a stand-up update.\n\nuser:\n{{ text }}\n")
    async with bot_with_prompt(bot, tmp_path, "standup.prompty", broken) as h:
        status, body = await h.sender.command("/standup", "shipped billing export", user_id="U7")
        assert status == 200
        assert "standup.prompty:5: " in body and "temperature" in body and "broken" in body
        assert str(tmp_path) not in body, "no absolute path beyond the prompts folder"

        event = await h.mention("standup fixed the flaky test", channel="C1", user="U7")
        await h.settle()
        [note] = h.slack.calls("chat.postEphemeral")
        assert (note["channel"], note["user"]) == ("C1", "U7")
        assert "standup.prompty:5: " in note["text"] and str(tmp_path) not in note["text"]
        assert bot.model.requests == [], "not answered by `ask` instead"
        assert bot_replies(h, "C1", event["ts"]) == [] and await h.store.list_calls() == []

        await h.mention("standups are at ten, right?", channel="C1", user="U7")
        [call] = await h.calls(1)
        assert call.prompt_name == "ask", "a word that only starts like a broken prompt is a question"


async def test_a_long_answer_spans_several_messages_and_a_vote_on_any_of_them_counts(bot: Harness):
    paragraph = "word " * 199 + "end.\n\n"
    bot.model.reply(paragraph * 30)  # ~30,000 characters
    event = await bot.mention("write a lot", channel="C1")
    [call] = await bot.calls(1)
    replies = bot_replies(bot, "C1", event["ts"])
    assert len(replies) >= 3
    assert all(len(bot.slack.text_of(m)) <= 12_000 for m in replies)
    assert "".join(bot.slack.text_of(m) for m in replies).split() == (paragraph * 30).split()
    await bot.react("reaction_added", "+1", user="U2", channel="C1", ts=replies[-1]["ts"])
    assert await _votes(bot, call.id, {"U2": 1})


async def test_model_output_never_pings_the_channel(bot: Harness):
    bot.model.reply("Heads up <!channel> and <!here|here> and <!subteam^S123|@oncall>, also @everyone!")
    event = await bot.mention("ping everyone", channel="C1")
    [call] = await bot.calls(1)
    [reply] = bot_replies(bot, "C1", event["ts"])
    text = bot.slack.text_of(reply)
    assert "<!" not in text and "@everyone" not in text
    assert call.answer.startswith("Heads up <!channel>")  # the log keeps what the model said


async def test_slack_escapes_in_a_message_reach_the_model_as_the_user_typed_them(bot: Harness):
    await bot.mention("is 1 &lt; 2 &amp;&amp; 3 &gt; 2?", channel="C1")  # as Slack sends "is 1 < 2 && 3 > 2?"
    [call] = await bot.calls(1)
    assert bot.model.requests[0]["messages"][-1]["content"] == "is 1 < 2 && 3 > 2?"
    assert call.request_text == "is 1 < 2 && 3 > 2?"


async def test_a_mention_in_a_thread_slack_cannot_find_is_answered_without_its_history(
        bot: Harness, caplog: pytest.LogCaptureFixture):
    """The thread's first message was deleted before the bot read the thread (Slack answers
    conversations.replies with thread_not_found): the question is still answered, without an
    error in the log. (Found by the listener fuzz test.)"""
    bot.model.reply("Answered anyway.")
    event = mention(f"<@{bot.slack.bot_user_id}> what did we decide?", channel="C1", thread_ts="1700000000.000100")
    status, _ = await bot.sender.event(event)  # Slack never had the thread's first message
    assert status == 200
    [call] = await bot.calls(1)
    assert call.status == "ok" and call.answer == "Answered anyway."
    assert bot.model.requests[0]["messages"][-1] == {"role": "user", "content": "what did we decide?"}
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []
    assert any("not found; answering without its history" in r.getMessage() for r in caplog.records)
