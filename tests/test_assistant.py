"""Slack's assistant pane, end to end: signed events in, fake Slack and fake model out."""

from __future__ import annotations

import asyncio
from typing import Any

import yaml

from conftest import FLYWHEEL, REPO, Harness, clean_env, serve_bot
from fakes import wait_until
from fakes.slack_sender import message, new_ts

DM = "D1"


def pane_opened(thread_ts: str, *, context_channel: str | None = None,
                kind: str = "assistant_thread_started") -> dict[str, Any]:
    """What Slack sends when someone opens the pane (or switches channels with it open)."""
    context: dict[str, Any] = {"team_id": "T1", "enterprise_id": None}
    if context_channel:
        context["channel_id"] = context_channel
    return {"type": kind, "event_ts": new_ts(),
            "assistant_thread": {"user_id": "U1", "context": context, "channel_id": DM, "thread_ts": thread_ts}}


async def open_pane(bot: Harness, *, context_channel: str | None = None) -> str:
    """Open the pane: Slack creates the thread's root message, then sends the event."""
    thread_ts = bot.slack.add_message(DM, "New chat", user=bot.slack.bot_user_id, bot=True)
    status, _ = await bot.sender.event(pane_opened(thread_ts, context_channel=context_channel))
    assert status == 200
    await wait_until(lambda: bot.slack.pane(DM, thread_ts)["prompts"])
    return thread_ts


async def ask_in_pane(bot: Harness, text: str, thread_ts: str, **kw: Any) -> dict[str, Any]:
    event = message(text, channel=DM, channel_type="im", thread_ts=thread_ts)
    event["assistant_thread"] = {"action_token": "10000.20000.abc"}  # Slack marks messages written in the pane
    bot.slack.add_message(DM, text, user="U1", ts=event["ts"], thread_ts=thread_ts)
    status, _ = await bot.sender.event(event, **kw)
    assert status == 200
    return event


def answers(bot: Harness, thread_ts: str) -> list[dict[str, Any]]:
    """The bot's messages in the thread after its greeting."""
    return [m for m in bot.slack.thread(DM, thread_ts) if m.get("bot_id") and m["ts"] != thread_ts][1:]


async def test_opening_the_pane_greets_with_suggestions_made_from_the_prompt_files(bot: Harness):
    thread_ts = await open_pane(bot)
    await bot.settle()

    prompts = bot.slack.pane(DM, thread_ts)["prompts"]
    assert 1 <= len(prompts) <= 4
    # Each suggestion is a prompt file's description, and clicking it names that prompt.
    assert prompts[0] == {"title": "Explain code, an error message, a stack trace or a concept",
                          "message": "explain [code, error message, stack trace, command or concept]"}
    assert {p["message"].split()[0] for p in prompts} <= {"explain", "review", "rewrite", "summarize"}
    [greeting] = [m for m in bot.slack.thread(DM, thread_ts) if m["ts"] != thread_ts]
    assert "How can I help?" in bot.slack.text_of(greeting)
    assert bot.model.requests == [] and await bot.store.list_calls() == []


async def test_a_question_shows_status_gets_a_title_and_is_answered_in_the_thread_once(bot: Harness):
    thread_ts = await open_pane(bot)
    bot.model.reply("Use a feature flag.", usage=(30, 5))
    event = await ask_in_pane(bot, "How do we ship the new checkout safely?", thread_ts)

    [call] = await bot.calls(1)
    await bot.settle()
    statuses = [c["status"] for c in bot.slack.calls("assistant.threads.setStatus")]
    assert statuses[0] == "is thinking…" and statuses[-1] == ""  # shown while thinking, cleared after
    assert bot.slack.pane(DM, thread_ts)["title"] == "How do we ship the new checkout safely?"
    [answer] = answers(bot, thread_ts)
    assert bot.slack.text_of(answer) == "Use a feature flag."
    assert {b["type"] for b in answer["blocks"]} >= {"context_actions", "actions"}  # vote, fix, regenerate

    assert call.trigger == "assistant" and call.status == "ok" and call.prompt_name == "ask"
    assert (call.channel_id, call.thread_ts, call.request_ts) == (DM, thread_ts, event["ts"])
    assert call.request_text == "How do we ship the new checkout safely?"
    assert await bot.store.call_for_message(DM, answer["ts"]) == call.id
    # Slack delivers the same question again (it thought the ack was late): no second answer.
    status, _ = await bot.sender.event(event, event_id=bot.sender.last_event_id, retry_num=1)
    assert status == 200
    await bot.settle()
    assert len(bot.model.requests) == 1 and len(await bot.store.list_calls()) == 1
    assert len(answers(bot, thread_ts)) == 1

    # A vote on the answer counts as on any other answer.
    await bot.react("reaction_added", "+1", user="U2", channel=DM, ts=answer["ts"])
    assert await bot.store.votes(call.id) == {"U2": 1}


async def test_a_follow_up_has_the_thread_as_context_and_keeps_the_title(bot: Harness):
    thread_ts = await open_pane(bot)
    bot.model.reply("Postgres.")
    await ask_in_pane(bot, "Which database for billing?", thread_ts)
    await bot.calls(1)
    bot.model.reply("Row locks.")
    await ask_in_pane(bot, "Why?", thread_ts)
    calls = await bot.calls(2)

    sent = bot.model.requests[1]["messages"]
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", "Which database for billing?"), ("assistant", "Postgres."), ("user", "Why?")]
    assert [c.trigger for c in calls] == ["assistant", "assistant"]
    assert [c["title"] for c in bot.slack.calls("assistant.threads.setTitle")] == ["Which database for billing?"]


async def test_opened_from_a_channel_its_recent_messages_are_context_and_the_answer_says_so(bot: Harness):
    bot.slack.add_message("C7", "Deploy of 812 failed: cache cold.", user="U2")
    bot.slack.add_message("C7", "Rolled back; errors gone.", user="U3")
    thread_ts = await open_pane(bot, context_channel="C7")
    assert bot.slack.pane(DM, thread_ts)["prompts"][0]["title"] == "Summarise this channel"

    bot.model.reply("812 failed on a cold cache and was rolled back.")
    await ask_in_pane(bot, "What happened here?", thread_ts)
    [call] = await bot.calls(1)

    sent = "\n".join(m["content"] for m in bot.model.requests[0]["messages"])
    assert "<@U2>: Deploy of 812 failed: cache cold.\n<@U3>: Rolled back; errors gone." in sent
    assert [c["channel"] for c in bot.slack.calls("conversations.history")] == ["C7"]
    [answer] = answers(bot, thread_ts)
    notes = [e["text"] for b in answer["blocks"] if b["type"] == "context" for e in b["elements"]]
    assert notes == ["Read the 2 most recent messages of <#C7> for this answer."]
    assert "Deploy of 812" in str(call.messages)  # what the model read is logged with the call


async def test_a_channel_the_bot_cannot_read_is_said_and_the_question_still_answered(bot: Harness):
    thread_ts = await open_pane(bot, context_channel="C8")
    bot.slack.fail("conversations.history", "not_in_channel")
    bot.model.reply("I can only answer in general.")
    await ask_in_pane(bot, "Summarise the discussion", thread_ts)
    [call] = await bot.calls(1)
    await bot.settle()

    assert call.status == "ok"
    [answer] = answers(bot, thread_ts)
    notes = [e["text"] for b in answer["blocks"] if b["type"] == "context" for e in b["elements"]]
    assert notes == ["I could not read <#C8>: I am not a member of it; invite me there and ask again."]
    assert bot.slack.calls("assistant.threads.setStatus")[-1]["status"] == ""


async def test_switching_channels_with_the_pane_open_changes_the_channel_read(bot: Harness):
    bot.slack.add_message("C9", "Standup moved to 10:00.", user="U4")
    thread_ts = await open_pane(bot, context_channel="C7")
    status, _ = await bot.sender.event(pane_opened(thread_ts, context_channel="C9",
                                                   kind="assistant_thread_context_changed"))
    assert status == 200
    bot.model.reply("Standup is at 10.")
    await ask_in_pane(bot, "When is standup?", thread_ts)
    await bot.calls(1)
    assert [c["channel"] for c in bot.slack.calls("conversations.history")] == ["C9"]
    assert "Standup moved to 10:00." in str(bot.model.requests[0]["messages"])


async def test_another_process_finds_the_channel_the_pane_was_opened_from(bot: Harness, database_url: str):
    """The pane opened on one process, the question went to another (or after a restart)."""
    bot.slack.add_message("C7", "Release train leaves Thursday.", user="U2")
    thread_ts = await open_pane(bot, context_channel="C7")
    async with serve_bot(bot.slack, bot.model, database_url) as other:
        bot.model.reply("Thursday.")
        await ask_in_pane(other, "When is the release?", thread_ts)
        [call] = await other.calls(1)
    assert call.trigger == "assistant"
    assert "Release train leaves Thursday." in str(bot.model.requests[0]["messages"])
    assert bot.slack.pane(DM, thread_ts)["title"] == "When is the release?"


async def test_a_repeated_pane_opened_event_greets_once(bot: Harness):
    thread_ts = bot.slack.add_message(DM, "New chat", user=bot.slack.bot_user_id, bot=True)
    event = pane_opened(thread_ts)
    await bot.sender.event(event)
    await bot.sender.event(event, event_id=bot.sender.last_event_id, retry_num=1)
    await bot.settle()
    assert len([m for m in bot.slack.thread(DM, thread_ts) if m["ts"] != thread_ts]) == 1


async def test_a_reply_in_an_ordinary_dm_thread_is_still_a_dm(bot: Harness):
    bot.model.reply("Hello.")
    await bot.message("hi", channel=DM, channel_type="im")
    [first] = await bot.calls(1)
    bot.model.reply("Sure.")
    await bot.message("and more?", channel=DM, channel_type="im", thread_ts=first.reply_ts)
    calls = await bot.calls(2)
    assert [c.trigger for c in calls] == ["dm", "dm"]
    assert bot.slack.calls("assistant.threads.setStatus") == []


async def _manifest(*args: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(str(FLYWHEEL), "manifest", "--url", "https://bot.example.com",
                                                *args, cwd=REPO, env=clean_env(),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return yaml.safe_load(out)


async def test_manifest_adds_the_pane_its_events_and_scopes_only_when_asked():
    plain, pane = await _manifest(), await _manifest("--assistant")
    assert "assistant_view" not in plain["features"]
    assert "assistant:write" not in plain["oauth_config"]["scopes"]["bot"]

    view = pane["features"]["assistant_view"]
    assert view["assistant_description"] and 1 <= len(view["suggested_prompts"]) <= 4
    assert all(set(p) == {"title", "message"} for p in view["suggested_prompts"])
    events = pane["settings"]["event_subscriptions"]["bot_events"]
    assert {"assistant_thread_started", "assistant_thread_context_changed", "message.im"} <= set(events)
    assert len(events) == len(set(events))
    assert {"assistant:write", "im:history", "channels:history"} <= set(pane["oauth_config"]["scopes"]["bot"])
