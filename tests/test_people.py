"""People by name, and no silence while the model thinks: through the fakes, end to end."""

from __future__ import annotations

import asyncio
import io
import time
from collections import Counter

from slack_sdk.web.async_client import AsyncWebClient

from bot.delivery import STATUS_TEXT
from bot.export import ExportOptions, Filters, export
from bot.people import Mentions, People
from bot.ratelimits import RateBudget

from conftest import Harness, serve_bot
from fakes import FakeSlack, wait_until

ANN, BO = "U0123ANN1", "U0123BOB2"  # Slack-shaped ids, so an export would find them bare too


def person(name: str) -> dict:
    return {"real_name": name, "profile": {"real_name": name, "display_name": name}}


def bot_replies(h: Harness, channel: str, thread_ts: str) -> list[dict]:
    return [m for m in h.slack.thread(channel, thread_ts) if m.get("user") == h.slack.bot_user_id]


def users_info_calls(h: Harness) -> Counter[str]:
    return Counter(p["user"] for p in h.slack.calls("users.info"))


async def two_person_thread(h: Harness) -> str:
    h.slack.users.update({ANN: person("Ann Lee"), BO: person("Bo Chen")})
    root = h.slack.add_message("C1", "Checkout is down since 14:02.", user=ANN)
    h.slack.add_message("C1", f"I rolled back 812, <@{ANN}> can you watch the graphs?", user=BO, thread_ts=root)
    return root


# -- the model reads names -----------------------------------------------------------------------


async def test_a_summary_sees_two_people_and_the_bot_by_name(bot: Harness):
    root = await two_person_thread(bot)
    bot.model.reply("We rolled back.")
    await bot.mention("what now?", channel="C1", thread_ts=root, user=ANN)  # an ask first: the bot is in the thread
    await bot.calls(1)
    sent = bot.model.requests[0]["messages"]
    assert [m["content"] for m in sent[1:]] == [
        "Checkout is down since 14:02.", "I rolled back 812, @Ann Lee can you watch the graphs?", "what now?"]

    await bot.mention("summarize", channel="C1", thread_ts=root, user=BO)
    await bot.calls(2)
    transcript = bot.model.requests[1]["messages"][-1]["content"]
    assert "Ann Lee: Checkout is down since 14:02." in transcript
    assert "Bo Chen: I rolled back 812, @Ann Lee can you watch the graphs?" in transcript
    assert "flywheel: We rolled back." in transcript  # the bot under its own name, not "you"
    assert "<@" not in transcript and ANN not in transcript and BO not in transcript


async def test_the_answers_at_name_becomes_a_mention_and_a_made_up_one_does_not(bot: Harness):
    root = await two_person_thread(bot)
    # Deltas cut through the names: what is posted is decided on whole names.
    bot.model.reply(chunks=["@Bo", " Ch", "en owns the rollback; @Ann", " Lee watches. Not <@U_", "YOU>, ",
                            "not @Annabel."])
    await bot.mention("who does what?", channel="C1", thread_ts=root, user=ANN)
    [call] = await bot.calls(1)

    [reply] = bot_replies(bot, "C1", root)
    assert bot.slack.text_of(reply) == f"<@{BO}> owns the rollback; <@{ANN}> watches. Not @U_YOU, not @Annabel."
    assert call.answer.startswith("@Bo Chen owns the rollback")  # the log keeps what the model wrote


async def test_when_users_info_fails_the_ids_stand_in_and_the_answer_is_posted(bot: Harness):
    root = await two_person_thread(bot)
    bot.slack.fail("users.info", "user_not_found", times=99)
    bot.model.reply("Watch the graphs.")
    await bot.mention("summarize", channel="C1", thread_ts=root, user=ANN)
    [call] = await bot.calls(1)

    transcript = bot.model.requests[0]["messages"][-1]["content"]
    assert f"<@{ANN}>: Checkout is down since 14:02." in transcript
    assert f"<@{BO}>: I rolled back 812, <@{ANN}> can you watch the graphs?" in transcript
    assert call.status == "ok"
    assert [bot.slack.text_of(m) for m in bot_replies(bot, "C1", root)] == ["Watch the graphs."]


async def test_many_asks_look_each_person_up_once(bot: Harness):
    bot.slack.users.update({ANN: person("Ann Lee"), BO: person("Bo Chen")})
    bot.slack.delay("users.info", 0.3, times=3)  # the first lookups are slow: the others wait for them
    for k in range(8):
        bot.model.reply(f"answer {k}")
    for k in range(8):
        await bot.mention(f"ping <@{BO}> about {k}", channel=f"C{k}", user=ANN)
    await bot.calls(8)

    assert users_info_calls(bot) == {ANN: 1, BO: 1, bot.slack.bot_user_id: 1}
    assert all("ping @Bo Chen about" in r["messages"][-1]["content"] for r in bot.model.requests)


async def test_exports_keep_ids_pseudonymised_with_names_in_the_text(bot: Harness):
    root = await two_person_thread(bot)
    bot.slack.fail("users.info", "user_not_found", times=1)  # one name missing: its id stays a mention
    bot.model.reply("Ann Lee watches the graphs.")
    await bot.mention(f"ask <@{BO}>", channel="C1", thread_ts=root, user=ANN)
    await bot.calls(1)

    for fmt in ("csv", "openai-chat", "eval"):
        out, err = io.BytesIO(), io.StringIO()
        await export(bot.store, ExportOptions(fmt, Filters(rating="any", include_unrated=True)), stdout=out,
                     stderr=err)
        text = out.getvalue().decode()
        assert "Bo Chen" in text or "Ann Lee" in text, fmt  # names are content
        assert ANN not in text and BO not in text, fmt  # ids never leave the database


# -- no silence while the model thinks -----------------------------------------------------------


async def test_a_slow_model_shows_thinking_at_once_then_one_message_with_the_answer(bot: Harness):
    bot.model.reply("Roll back first, then look.", first_token_delay=2.5)
    started = time.monotonic()
    event = await bot.mention("what should we do?", channel="C1")

    status = await wait_until(lambda: [m for m in bot_replies(bot, "C1", event["ts"])
                                       if "Thinking" in bot.slack.text_of(m)], timeout=2.0)
    assert time.monotonic() - started < 2.0, "the status shows well before the first token"
    assert status[0]["thread_ts"] == event["ts"]

    [call] = await bot.calls(1)
    await bot.settle()
    [reply] = bot_replies(bot, "C1", event["ts"])
    assert bot.slack.text_of(reply) == "Roll back first, then look."
    assert await bot.store.call_for_message("C1", reply["ts"]) == call.id
    assert not any("Thinking" in bot.slack.text_of(m) for m in bot.slack.messages("C1"))


async def test_in_a_dm_the_thinking_note_becomes_the_answer(bot: Harness):
    bot.model.reply("Hello there.", first_token_delay=2.0)
    await bot.message("hi", channel="D1", channel_type="im", user=ANN)
    note = await wait_until(lambda: [m for m in bot.slack.messages("D1") if m.get("user") == bot.slack.bot_user_id])
    assert bot.slack.text_of(note[0]) == STATUS_TEXT

    [call] = await bot.calls(1)
    [answer] = [m for m in bot.slack.messages("D1") if m.get("user") == bot.slack.bot_user_id]
    assert answer["ts"] == note[0]["ts"] and bot.slack.text_of(answer) == "Hello there."
    assert await bot.store.call_for_message("D1", answer["ts"]) == call.id


async def test_a_fast_model_costs_no_status_calls(bot: Harness):
    bot.model.reply("Quick.")
    event = await bot.mention("quick?", channel="C1")
    await bot.calls(1)
    await bot.settle()
    assert not [p for p in bot.slack.calls("chat.postMessage") if p.get("markdown_text") == STATUS_TEXT]
    assert bot.slack.calls("chat.delete") == [] and bot.slack.calls("chat.update") == []
    assert [bot.slack.text_of(m) for m in bot_replies(bot, "C1", event["ts"])] == ["Quick."]


async def test_a_slow_model_that_fails_leaves_only_the_apology(bot: Harness):
    bot.model.reply(chunks=["partial"], first_token_delay=1.5, error_after=0)
    event = await bot.mention("break?", channel="C1")
    await wait_until(lambda: bot_replies(bot, "C1", event["ts"]), timeout=1.5)
    [call] = await bot.calls(1)
    await bot.settle()
    [reply] = bot_replies(bot, "C1", event["ts"])
    assert call.status == "error" and "Thinking" not in bot.slack.text_of(reply)
    assert bot.slack.text_of(reply).strip("_ ")


# -- the parts, alone ------------------------------------------------------------------------------


def test_mentions_wait_for_whole_names_and_leave_text_alone_without_people():
    m = Mentions({"U1": "Ann Lee", "U2": "Ann", "U3": "Jo Smith", "U4": "Jo Smith"})
    out = "".join(m.feed(d) for d in ["hi @An", "n and @Ann L", "ee, mail ann@Ann.io; @Jo Smith"]) + m.close()
    assert out == "hi <@U2> and <@U1>, mail ann@Ann.io; @Jo Smith"  # two Jo Smiths: neither is guessed
    assert Mentions({}).feed("<@U_YOU> @Ann") == "<@U_YOU> @Ann"  # nobody known: unchanged


async def test_names_are_cached_for_their_ttl_and_the_cache_is_bounded():
    now = [0.0]
    async with FakeSlack() as slack:
        slack.users.update({ANN: person("Ann Lee")})
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.url)
        people = People(RateBudget(), ttl=60, size=2, clock=lambda: now[0])
        assert await people.names(client, "T1", [ANN, ANN, None]) == {ANN: "Ann Lee"}
        assert await asyncio.gather(*(people.name(client, "T1", ANN) for _ in range(5))) == ["Ann Lee"] * 5
        assert len(slack.calls("users.info")) == 1
        now[0] = 61.0  # expired: looked up again
        await people.name(client, "T1", ANN)
        assert len(slack.calls("users.info")) == 2
        await people.names(client, "T1", ["U2", "U3"])  # two more: the oldest goes
        await people.name(client, "T1", ANN)
        assert len(slack.calls("users.info")) == 5
        assert slack.calls("users.info")[-1]["user"] == ANN


async def test_many_slow_starts_at_once_never_wait_on_the_notes_they_would_show(bot: Harness, tmp_path):
    """A Thinking… note is later turned into the answer with chat.update, whose budget is
    workspace-wide (~50 a minute). Notes are shown only while an update can be reserved for
    each, so a crowd of slow answers is not held up behind updates: the rest go without."""
    from bot.ratelimits import DEFAULT_LIMITS

    budget = RateBudget({**DEFAULT_LIMITS, "chat.startStream": (0, 60.0), "chat.update": (2, 60.0)})
    bot.model.default_reply(lambda question: f"About {question}.", first_token_delay=1.5)
    async with serve_bot(bot.slack, bot.model, f"sqlite:///{tmp_path / 'notes.db'}", budget=budget) as h:
        events = await asyncio.gather(*(h.mention(f"q{k}", channel=f"C{k}") for k in range(6)))
        rows = await h.calls(6, timeout=8)
        await h.settle()
    assert {r.status for r in rows} == {"ok"}
    notes = [p for p in bot.slack.calls("chat.postMessage") if p.get("markdown_text") == STATUS_TEXT]
    assert 1 <= len(notes) <= 2, "one note per update that could be reserved"
    for k, event in enumerate(events):
        [reply] = bot_replies(bot, f"C{k}", event["ts"])
        assert bot.slack.text_of(reply).startswith("About") and "Thinking" not in bot.slack.text_of(reply)
