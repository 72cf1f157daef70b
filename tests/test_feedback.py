"""Buttons, corrections, regenerate and exclusion: the feedback that becomes datasets."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.stats import version_stats

from conftest import Harness, bot_with_prompt
from fakes.slack_sender import click, reaction, submission


def answers(h: Harness, channel: str, thread_ts: str) -> list[dict]:
    return [m for m in h.slack.thread(channel, thread_ts) if m.get("user") == h.slack.bot_user_id]


async def answered(h: Harness, text: str, reply: str, n: int = 1) -> tuple[dict, dict, Any]:
    h.model.reply(reply)
    event = await h.mention(text, channel="C1")
    calls = await h.calls(n)
    return event, answers(h, "C1", event["ts"])[-1], calls[-1]


async def until(condition, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := await condition()):
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


# -- controls under an answer --------------------------------------------------------------------


async def test_every_answer_carries_feedback_buttons_fix_and_regenerate(bot: Harness):
    _, answer, _ = await answered(bot, "hello", "Hi there.")
    blocks = answer["blocks"]
    [feedback] = [b for b in blocks if b["type"] == "context_actions"]
    assert feedback["elements"][0]["type"] == "feedback_buttons"
    [actions] = [b for b in blocks if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == ["fix", "regenerate"]
    assert bot.slack.text_of(answer) == "Hi there."


async def test_a_prompt_can_turn_the_controls_off(bot: Harness, tmp_path: Path):
    async with bot_with_prompt(bot, tmp_path, "quiet.prompty", quiet("buttons", "regenerate")) as h:
        _, answer, _ = await answered(h, "quiet hush", "Shh.")
    assert [b["type"] for b in answer["blocks"] if b["type"] != "markdown"] == ["actions"]
    [actions] = [b for b in answer["blocks"] if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == ["fix"]


def quiet(*off: str) -> str:
    """A prompt file whose ``metadata.feedback`` turns off the controls named."""
    flags = "".join(f"    {name}: false\n" for name in off)
    return (f"---\nname: quiet\ndescription: No buttons\nmetadata:\n  feedback:\n{flags}---\n"
            "system:\nBe quiet.\n\nuser:\n{{ text }}\n")


async def test_an_apology_offers_regenerate_alone_which_tries_the_same_input_again(bot: Harness):
    bot.model.reply(status=401, error="invalid_api_key")
    event = await bot.mention("hello", channel="C1")
    [failed] = await bot.calls(1)
    [apology] = answers(bot, "C1", event["ts"])
    assert failed.status == "error"
    controls = [b for b in apology["blocks"] if b["type"] != "markdown"]
    assert [(b["type"], [e["action_id"] for e in b["elements"]]) for b in controls] == [("actions", ["regenerate"])]

    bot.model.reply("Hello!")
    await bot.sender.action(click(apology, "C1", "regenerate", "regenerate"))
    calls = await bot.calls(2)
    assert calls[1].parent_call_id == failed.id and calls[1].status == "ok"
    assert bot.model.requests[-1]["messages"] == failed.messages
    assert bot.slack.text_of(answers(bot, "C1", event["ts"])[-1]).startswith("Hello!")


async def test_an_apology_offers_no_regenerate_when_the_prompt_turns_it_off(bot: Harness, tmp_path: Path):
    async with bot_with_prompt(bot, tmp_path, "quiet.prompty", quiet("regenerate")) as h:
        h.model.reply(status=401, error="invalid_api_key")
        event = await h.mention("quiet hush", channel="C1")
        await h.calls(1)
        [apology] = answers(h, "C1", event["ts"])
    assert not apology.get("blocks")


# -- votes from buttons ---------------------------------------------------------------------------


async def test_down_then_up_on_the_buttons_leaves_one_up_vote(bot: Harness):
    _, answer, call = await answered(bot, "hello", "Hi.")
    for value in ("down", "up"):
        status, _ = await bot.sender.action(click(answer, "C1", "vote", value, kind="feedback_buttons"))
        assert status == 200
    assert await until(lambda: _is(bot.store.votes(call.id), {"U2": 1}))


async def test_a_reaction_and_a_button_from_one_person_are_one_vote(bot: Harness):
    _, answer, call = await answered(bot, "hello", "Hi.")
    await bot.react("reaction_added", "+1", user="U2", channel="C1", ts=answer["ts"])
    await bot.sender.action(click(answer, "C1", "vote", "up", kind="feedback_buttons"))
    await bot.sender.action(click(answer, "C1", "vote", "down", user="U3", kind="feedback_buttons"))
    assert await until(lambda: _is(bot.store.votes(call.id), {"U2": 1, "U3": -1}))


async def test_clicking_your_vote_again_withdraws_it(bot: Harness):
    _, answer, call = await answered(bot, "hello", "Hi.")
    up = click(answer, "C1", "vote", "up", kind="feedback_buttons")
    await bot.sender.action(up)
    assert await until(lambda: _is(bot.store.votes(call.id), {"U2": 1}))
    await bot.sender.action(up)  # the same click delivered twice (same action_ts) is one click
    await bot.settle()
    assert await bot.store.votes(call.id) == {"U2": 1}
    await bot.sender.action(click(answer, "C1", "vote", "up", kind="feedback_buttons"))  # a second click
    assert await until(lambda: _is(bot.store.votes(call.id), {}))


async def test_a_button_vote_is_acknowledged_privately_as_it_is_stored(bot: Harness):
    event, answer, call = await answered(bot, "hello", "Hi.")
    up = click(answer, "C1", "vote", "up", kind="feedback_buttons")
    await bot.sender.action(up)
    [note] = await until(_ephemerals(bot))
    assert (note["channel"], note["user"], note["thread_ts"]) == ("C1", "U2", event["ts"])
    assert "Your vote on this answer: 👍" in note["text"]
    await bot.sender.action(click(answer, "C1", "vote", "up", kind="feedback_buttons"))
    [_, withdrawn] = await until(_ephemerals(bot, 2))
    assert "withdrawn" in withdrawn["text"] and await bot.store.votes(call.id) == {}


async def test_a_reaction_replaces_a_button_vote_and_removing_it_brings_nothing_back(bot: Harness):
    _, answer, call = await answered(bot, "hello", "Hi.")
    await bot.sender.action(click(answer, "C1", "vote", "up", kind="feedback_buttons"))
    assert await until(lambda: _is(bot.store.votes(call.id), {"U2": 1}))
    await bot.react("reaction_added", "-1", user="U2", channel="C1", ts=answer["ts"])
    assert await bot.store.votes(call.id) == {"U2": -1}
    [row] = await version_stats(bot.store)
    assert (row.rated, row.up, row.down, row.votes_up, row.votes_down) == (1, 0, 1, 0, 1)

    await bot.react("reaction_removed", "-1", user="U2", channel="C1", ts=answer["ts"])
    assert await bot.store.votes(call.id) == {}, "the 👍 it replaced does not come back"
    [row] = await version_stats(bot.store)
    assert (row.rated, row.votes_up, row.votes_down) == (0, 0, 0)


async def test_a_button_replaces_a_reaction_and_says_the_reaction_no_longer_counts(bot: Harness):
    _, answer, call = await answered(bot, "hello", "Hi.")
    await bot.react("reaction_added", "-1", user="U2", channel="C1", ts=answer["ts"])
    shown = {**answer, "reactions": [{"name": "-1", "users": ["U2"], "count": 1}]}  # as Slack sends it
    await bot.sender.action(click(shown, "C1", "vote", "up", kind="feedback_buttons"))
    [note] = await until(_ephemerals(bot))
    assert "👍" in note["text"] and ":-1: reaction on it no longer counts" in note["text"]
    assert await bot.store.votes(call.id) == {"U2": 1}
    await bot.react("reaction_removed", "-1", user="U2", channel="C1", ts=answer["ts"])
    assert await bot.store.votes(call.id) == {"U2": 1}, "removing a replaced reaction changes nothing"


async def test_a_late_delivered_reaction_older_than_the_button_vote_does_not_replace_it(bot: Harness):
    _, answer, call = await answered(bot, "hello", "Hi.")
    late = reaction("reaction_added", "-1", user="U2", channel="C1", ts=answer["ts"])  # Slack's time: now
    await asyncio.sleep(0.01)
    await bot.sender.action(click(answer, "C1", "vote", "up", kind="feedback_buttons"))
    assert await until(lambda: _is(bot.store.votes(call.id), {"U2": 1}))
    status, _ = await bot.sender.event(late)  # a retry that arrives after the newer click
    assert status == 200
    await bot.written()
    assert await bot.store.votes(call.id) == {"U2": 1}
    [row] = await version_stats(bot.store)
    assert (row.votes_up, row.votes_down) == (1, 0)


def _ephemerals(h: Harness, n: int = 1):
    async def found() -> list[dict]:
        notes = h.slack.calls("chat.postEphemeral")
        return notes if len(notes) >= n else []
    return found


async def _is(awaitable, expected) -> bool:
    return (await awaitable) == expected


# -- corrections -------------------------------------------------------------------------------------


async def test_fix_it_opens_a_modal_prefilled_with_the_answer_and_saving_stores_a_correction(bot: Harness):
    event, answer, call = await answered(bot, "capital of Australia?", "Sydney.")
    status, _ = await bot.sender.action(click(answer, "C1", "fix", "fix"))
    assert status == 200
    [view] = await until(_views(bot))
    assert view["callback_id"] == "fix_submit"
    assert view["blocks"][1]["element"]["initial_value"] == "Sydney."

    status, body = await bot.sender.action(submission(view, ["Canberra."]))
    assert status == 200 and body in ("", "{}")
    [correction] = await until(lambda: bot.store.corrections(call.id))
    assert (correction.text, correction.user_id) == ("Canberra.", "U2")
    def notes() -> list[dict]:
        return [m for m in answers(bot, "C1", event["ts"]) if "corrected" in bot.slack.text_of(m)]

    [note] = await until(lambda: _truthy(notes()))
    link = f"https://flywheel-test.slack.com/archives/C1/p{answer['ts'].replace('.', '')}"
    assert bot.slack.text_of(note).startswith(f"✏️ <@U2> corrected <{link}?thread_ts={event['ts']}&cid=C1|this answer>")

    # A second fix keeps the first as history, and the modal now starts from the current correction.
    await bot.sender.action(click(answer, "C1", "fix", "fix", user="U3"))
    views = await until(_views(bot, 2))
    assert views[-1]["blocks"][1]["element"]["initial_value"] == "Canberra."
    await bot.sender.action(submission(views[-1], ["Canberra, since 1913."], user="U3"))
    await until(lambda: _count(bot.store.corrections(call.id), 2))
    assert [c.text for c in await bot.store.corrections(call.id)] == ["Canberra.", "Canberra, since 1913."]


async def test_a_follow_up_sees_the_corrected_answer(bot: Harness):
    event, answer, call = await answered(bot, "capital of Australia?", "Sydney.")
    await bot.sender.action(click(answer, "C1", "fix", "fix"))
    [view] = await until(_views(bot))
    await bot.sender.action(submission(view, ["Canberra."]))
    await until(lambda: bot.store.corrections(call.id))
    bot.model.reply("Canberra has about 470,000 people.")
    await bot.message("how big is it?", channel="C1", thread_ts=event["ts"])
    await bot.calls(2)
    sent = bot.model.requests[-1]["messages"]
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", "capital of Australia?"), ("assistant", "Canberra."), ("user", "how big is it?")]


async def test_an_empty_correction_is_refused_in_the_modal(bot: Harness):
    _, answer, call = await answered(bot, "hello", "Hi.")
    await bot.sender.action(click(answer, "C1", "fix", "fix"))
    [view] = await until(_views(bot))
    status, body = await bot.sender.action(submission(view, ["   "]))
    assert status == 200 and json.loads(body)["response_action"] == "errors"
    assert await bot.store.corrections(call.id) == []


async def test_a_long_answer_is_prefilled_in_parts_and_saved_whole(bot: Harness):
    long_answer = "\n".join(f"line {i} " + "x" * 80 for i in range(100))  # ~9,000 characters
    _, answer, call = await answered(bot, "long", long_answer)
    await bot.sender.action(click(answer, "C1", "fix", "fix"))
    [view] = await until(_views(bot))
    parts = [b["element"]["initial_value"] for b in view["blocks"] if b["type"] == "input"]
    assert len(parts) == 4 and all(len(p) <= 3000 for p in parts)
    await bot.sender.action(submission(view, parts))
    [correction] = await until(lambda: bot.store.corrections(call.id))
    assert correction.text == long_answer


async def test_the_message_shortcut_fixes_answers_and_explains_on_other_messages(bot: Harness):
    event, answer, _ = await answered(bot, "hello", "Hi.")
    shortcut = {"type": "message_action", "callback_id": "fix_answer", "trigger_id": "trig-s",
                "team": {"id": "T1"}, "user": {"id": "U2", "team_id": "T1"}, "channel": {"id": "C1"},
                "message": answer, "response_url": "https://hooks.slack.com/x", "message_ts": answer["ts"]}
    assert (await bot.sender.action(shortcut))[0] == 200
    await until(_views(bot))
    human = {"type": "message", "ts": event["ts"], "text": event["text"], "user": "U1"}
    assert (await bot.sender.action({**shortcut, "message": human, "message_ts": event["ts"]}))[0] == 200
    await until(lambda: _truthy(bot.slack.ephemerals))
    assert "Only my own answers" in bot.slack.ephemerals[-1]["text"]


def _views(h: Harness, n: int = 1):
    async def check():
        views = [v for v in h.slack.views.values() if v.get("callback_id") == "fix_submit"]
        return views if len(views) >= n else None
    return check


async def _count(awaitable, n: int) -> bool:
    return len(await awaitable) == n


async def _truthy(value) -> Any:
    return value


# -- regenerate and exclusion -------------------------------------------------------------------


async def test_regenerate_posts_an_alternative_linked_to_the_original(bot: Harness):
    event, answer, first = await answered(bot, "name a color", "Blue.")
    bot.model.reply("Green.")
    status, _ = await bot.sender.action(click(answer, "C1", "regenerate", "regenerate"))
    assert status == 200
    calls = await bot.calls(2)
    second = calls[1]
    assert second.parent_call_id == first.id and second.trigger == "regenerate"
    assert second.input_hash == first.input_hash and second.prompt_version == first.prompt_version
    assert bot.model.requests[1]["messages"] == bot.model.requests[0]["messages"]
    original, again = answers(bot, "C1", event["ts"])
    assert bot.slack.text_of(original) == "Blue."
    link = f"https://flywheel-test.slack.com/archives/C1/p{answer['ts'].replace('.', '')}"
    assert bot.slack.text_of(again).startswith("Green.\n\n")
    assert f"Regenerated from [this answer]({link}?thread_ts={event['ts']}&cid=C1)" in bot.slack.text_of(again)
    assert second.answer == "Green.", "the link is not part of the logged answer"


async def test_regenerate_on_an_answer_whose_log_was_pruned_says_why_instead_of_nothing(bot: Harness):
    _, answer, _ = await answered(bot, "name a color", "Blue.")
    await bot.store.prune(datetime.now(UTC) + timedelta(days=1))  # `flywheel prune` took its row
    status, _ = await bot.sender.action(click(answer, "C1", "regenerate", "regenerate", user="U2"))
    assert status == 200
    [note] = await until(_ephemerals(bot))
    assert note["user"] == "U2" and "can't run this answer again" in note["text"]
    assert len(bot.model.requests) == 1, "no second model call"


async def test_the_exclude_reaction_keeps_an_answer_out_until_it_is_removed(bot: Harness):
    _, answer, call = await answered(bot, "hello", "Hi.")
    await bot.react("reaction_added", "+1", user="U2", channel="C1", ts=answer["ts"])
    await bot.react("reaction_added", "no_entry_sign", user="U2", channel="C1", ts=answer["ts"])
    assert (await bot.store.get_call(call.id)).excluded is True
    assert await bot.store.votes(call.id) == {"U2": 1}, "excluding is not a vote"
    await bot.react("reaction_removed", "no_entry_sign", user="U2", channel="C1", ts=answer["ts"])
    assert (await bot.store.get_call(call.id)).excluded is False


# -- App Home ----------------------------------------------------------------------------------------


async def test_opening_the_home_tab_publishes_the_figures_per_prompt(bot: Harness):
    _, answer, _ = await answered(bot, "hello", "Hi.")
    await bot.react("reaction_added", "+1", user="U2", channel="C1", ts=answer["ts"])
    status, _ = await bot.sender.event({"type": "app_home_opened", "user": "U5", "channel": "D5", "tab": "home",
                                        "event_ts": f"{time.time():.6f}"})
    assert status == 200

    async def published():
        return [c for c in bot.slack.calls("views.publish") if c["user_id"] == "U5"]

    [call] = await until(published)
    view = call["view"] if isinstance(call["view"], dict) else json.loads(call["view"])
    assert view["type"] == "home" and len(view["blocks"]) <= 100
    text = json.dumps(view)
    assert "ask" in text and "100%" in text  # one call, approved by its one vote

