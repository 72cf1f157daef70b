"""The Playground's local Slack, driven with the real bot in one aiohttp app, as `flywheel dev` runs them.

The test plays the page: it calls ``/playground/api/*`` over HTTP and reads the live updates
from ``/playground/ws``; the stand-in delivers signed requests to the bot's real endpoint and
serves the Web API the bot calls. The model is the loopback FakeOpenAI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient
from yarl import URL

from bot.app import Flywheel, Prompts, create_app
from bot.playground.access import TOKEN_HEADER, Access
from bot.playground.run import local_url, welcome
from bot.playground.slack import StandIn
from bot.server import web_app
from bot.settings import Settings

from conftest import PROMPTS
from fakes import FakeOpenAI, wait_until

SECRET = "playground-test-secret-0123456789"
TOKEN = "xoxb-playground-test"
ME = "U_YOU"
GENERAL = "C_GENERAL"


@dataclass
class Play:
    fw: Flywheel
    standin: StandIn
    model: FakeOpenAI
    http: aiohttp.ClientSession
    frames: list[dict[str, Any]] = field(default_factory=list)

    async def post(self, path: str, body: dict[str, Any] | None = None, *, status: int = 200) -> dict[str, Any]:
        async with self.http.post(f"/playground/api/{path}", json=body or {}) as resp:
            data = await resp.json()
            assert resp.status == status, data
            return data

    async def state(self) -> dict[str, Any]:
        async with self.http.get("/playground/api/state") as resp:
            assert resp.status == 200
            return await resp.json()

    async def say(self, text: str, channel: str = GENERAL, thread_ts: str | None = None) -> dict[str, Any]:
        body = {"channel": channel, "text": text, **({"thread_ts": thread_ts} if thread_ts else {})}
        return await self.post("messages", body)

    def messages(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Every message as the page knows it from the socket (the latest frame wins)."""
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for frame in self.frames:
            if frame["type"] == "message":
                seen[(frame["channel"], frame["message"]["ts"])] = frame["message"]
            elif frame["type"] == "message_deleted":
                seen.pop((frame["channel"], frame["ts"]), None)
            elif frame["type"] == "reset":
                seen.clear()
        return seen

    def answers(self, channel: str, thread_ts: str | None) -> list[dict[str, Any]]:
        """The bot's finished messages in a thread (None: at the top level), oldest first."""
        found = [m for (c, _), m in self.messages().items() if c == channel and m.get("bot_id")
                 and not m["streaming"] and not m.get("ephemeral") and m.get("thread_ts") == thread_ts
                 and m["ts"] != thread_ts]
        return sorted(found, key=lambda m: float(m["ts"]))

    async def answered(self, channel: str, thread_ts: str | None, n: int = 1) -> list[dict[str, Any]]:
        """Wait for ``n`` answers with their buttons, and for the calls to be logged."""
        await wait_until(lambda: len([m for m in self.answers(channel, thread_ts) if m.get("blocks")]) >= n)
        await self.calls(n)
        return self.answers(channel, thread_ts)

    async def calls(self, n: int) -> list[Any]:
        for _ in range(250):
            rows = await self.fw.store.list_calls()
            if len(rows) >= n and self.fw.conversation.inflight == 0:
                return rows
            await asyncio.sleep(0.02)
        raise AssertionError(f"expected {n} logged calls")

    async def votes(self, call_id: int, expected: dict[str, int]) -> None:
        """Wait until the bot has stored ``expected`` as the votes on a call."""
        for _ in range(250):
            if await self.fw.store.votes(call_id) == expected:
                return
            await asyncio.sleep(0.02)
        assert await self.fw.store.votes(call_id) == expected

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == kind]


def bot_settings(api_url: str, model: FakeOpenAI, tmp_path: Path, prompts: Path = PROMPTS) -> Settings:
    return Settings.parse({
        "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": api_url,
        "OPENAI_API_KEY": model.api_key, "OPENAI_BASE_URL": model.url, "FLYWHEEL_MODEL": "gpt-5.4-mini",
        "FLYWHEEL_MODEL_TIMEOUT": "5", "DATABASE_URL": f"sqlite:///{tmp_path / 'flywheel.db'}",
        "PROMPTS_DIR": str(prompts), "FLYWHEEL_JOURNAL_DIR": str(tmp_path / "journal"),
    })


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[tuple[web.AppRunner, str, socket.socket]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        yield runner, f"http://127.0.0.1:{sock.getsockname()[1]}", sock
    finally:
        await runner.cleanup()


@pytest.fixture
async def play(tmp_path: Path) -> AsyncIterator[Play]:
    async with FakeOpenAI() as model:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        holder: dict[str, Flywheel] = {}
        standin = StandIn(state_path=tmp_path / "playground.json", signing_secret=SECRET, bot_token=TOKEN,
                          prompts=lambda: holder["fw"].conversation.prompts,
                          model={"name": "gpt-5.4-mini", "offline": False})
        standin.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        prompts = tmp_path / "prompts"  # a copy: a test may add a file
        shutil.copytree(PROMPTS, prompts)
        fw = holder["fw"] = create_app(bot_settings(standin.api_url, model, tmp_path, prompts), source="playground")
        await fw.store.upgrade()
        await fw.start()
        app = web_app(fw)
        standin.attach(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        async with aiohttp.ClientSession(standin.base_url) as http:
            ws = await http.ws_connect("/playground/ws")
            result = Play(fw=fw, standin=standin, model=model, http=http)

            async def read() -> None:
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        result.frames.append(json.loads(msg.data))

            reader = asyncio.create_task(read())
            try:
                yield result
            finally:
                await fw.conversation.drain(5)
                await standin.delivery.idle()
                await standin.close()
                await ws.close()
                reader.cancel()
                await runner.cleanup()
                await fw.close()


# -- conversations ---------------------------------------------------------------------------------


async def test_a_mention_gets_a_streamed_answer_in_its_thread(play: Play):
    reply = "Deploys go out at 4pm on weekdays, once every check on main has passed."
    play.model.reply(reply, chunk_delay=0.04)
    sent = await play.say("@Flywheel when do deploys go out?")
    ts = sent["ts"]

    [answer] = await play.answered(GENERAL, ts)
    assert answer["text"] == reply and answer["format"] == "markdown" and answer["user"] == "UBOT"
    versions = [f["message"] for f in play.of_type("message") if f["message"]["ts"] == answer["ts"]]
    assert versions[0]["streaming"] is True and versions[-1]["streaming"] is False
    assert len(versions[0]["text"]) < len(reply), "the first frame arrives while the answer streams"
    kinds = [b["type"] for b in answer["blocks"]]
    assert "context_actions" in kinds and "actions" in kinds
    if "metadata" in answer:  # the bot's answer says which prompt version and model wrote it
        assert answer["metadata"]["event_payload"]["prompt"] == "ask"
        assert len(answer["metadata"]["event_payload"]["version"]) == 64

    state = await play.state()
    [mine] = [m for m in state["messages"][GENERAL] if m["ts"] == ts]
    assert mine["text"] == "<@UBOT> when do deploys go out?" and mine["user"] == ME
    assert mine["reply_count"] == 1 and mine["thread_ts"] == ts
    [call] = await play.calls(1)  # app_mention and its message twin: answered once
    assert call.trigger == "mention" and call.user_id == ME and call.team_id == "T_PLAY"
    assert play.model.requests[-1]["messages"][-1] == {"role": "user", "content": "when do deploys go out?"}


async def test_a_thread_follow_up_and_a_dm_are_answered(play: Play):
    play.model.reply("Postgres.")
    root = (await play.say("@flywheel which database for billing?"))["ts"]
    await play.answered(GENERAL, root)

    play.model.reply("Because of row locks.")
    await play.say("why that one?", thread_ts=root)
    answers = await play.answered(GENERAL, root, 2)
    assert [a["text"] for a in answers] == ["Postgres.", "Because of row locks."]
    sent = play.model.requests[-1]["messages"]
    assert [m["role"] for m in sent[1:]] == ["user", "assistant", "user"]
    assert sent[2]["content"] == "Postgres."

    play.model.reply("Hi, you.")
    await play.say("hello there", channel="D_BOT")
    await wait_until(lambda: any(a["text"] == "Hi, you." for a in play.answers("D_BOT", None)))
    calls = await play.calls(3)
    assert calls[-1].trigger == "dm" and calls[-1].channel_id == "D_BOT"


async def test_slash_commands_show_the_request_answer_in_its_thread_and_hint_usage(play: Play):
    play.model.reply("A flywheel stores energy.")
    assert await play.say("/ask what is a flywheel?") == {"ok": True, "command": "/ask"}
    await wait_until(lambda: [m for m in play.answers(GENERAL, None) if "asked `/ask`" in m["text"]])
    [root] = [m for m in play.answers(GENERAL, None) if "asked `/ask`" in m["text"]]
    assert "<@U_YOU>" in root["text"] and "what is a flywheel?" in root["text"]
    [answer] = await play.answered(GENERAL, root["ts"])
    assert answer["text"] == "A flywheel stores energy."

    requests = len(play.model.requests)
    assert (await play.say("/summarize"))["command"] == "/summarize"
    [hint] = await wait_until(lambda: [f["message"] for f in play.of_type("message")
                                       if f["message"].get("ephemeral")])
    assert hint["text"].startswith("Usage: `/summarize") and hint["channel"] == GENERAL
    state = await play.state()
    assert all(not m.get("ephemeral") for m in state["messages"][GENERAL])
    assert len(play.model.requests) == requests, "no model call for a usage hint"

    assert await play.post("messages", {"channel": GENERAL, "text": "/nope x"}, status=400) == {
        "ok": False, "error": "unknown command /nope"}
    assert (await play.post("messages", {"channel": GENERAL, "text": "/"}, status=400))["error"] == "unknown command /"
    # Slack runs no app's command in a thread: Slackbot says so, to you alone; nothing is delivered.
    refused = await play.post("messages", {"channel": GENERAL, "text": "/ask x", "thread_ts": root["ts"]})
    assert refused == {"ok": True, "command": "/ask", "refused": True}
    [said] = await wait_until(lambda: [f["message"] for f in play.of_type("message")
                                       if f["message"].get("user") == "USLACKBOT"])
    assert said["ephemeral"] and said["thread_ts"] == root["ts"]
    assert said["text"] == "/ask is not supported in threads. Sorry!"
    await play.standin.delivery.idle()
    assert len(play.model.requests) == requests and not play.of_type("error")


async def test_a_broken_prompts_command_and_mention_get_told_privately_where_it_is_broken(play: Play, tmp_path: Path):
    (tmp_path / "prompts" / "standup.prompty").write_text(
        "---\nname: standup\ndescription: Stand-up update\nmodel:\n  options: {temperature: 7}\n"
        "metadata:\n  slack:\n    command: /standup\n---\nsystem:\nWrite a stand-up update.\n\nuser:\n{{ text }}\n")
    assert (await play.state())["broken_commands"] == ["/standup"]
    assert await play.say("/standup shipped it") == {"ok": True, "command": "/standup"}
    [note] = await wait_until(lambda: [f["message"] for f in play.of_type("message") if f["message"].get("ephemeral")])
    assert "standup.prompty:5: " in note["text"] and str(tmp_path) not in note["text"]

    ts = (await play.say("@flywheel standup fixed the flaky test"))["ts"]
    notes = await wait_until(lambda: [f["message"] for f in play.of_type("message") if f["message"].get("ephemeral")
                                      and "standup.prompty:5: " in f["message"]["text"]][1:])
    assert notes[0]["channel"] == GENERAL
    await play.fw.conversation.drain(5)
    assert play.answers(GENERAL, ts) == [] and play.model.requests == []


async def test_response_urls_post_in_the_channel_or_to_you_five_times(play: Play):
    url = play.standin.response_url(GENERAL).removeprefix(play.standin.base_url)
    async with play.http.post(url, json={"response_type": "in_channel", "text": "for everyone"}) as resp:
        assert (resp.status, await resp.text()) == (200, "ok")
    async with play.http.post(url, json={"text": "only for you"}) as resp:
        assert resp.status == 200
    await wait_until(lambda: [m for m in play.answers(GENERAL, None) if m["text"] == "for everyone"])
    await wait_until(lambda: [f for f in play.of_type("message")
                              if f["message"].get("ephemeral") and f["message"]["text"] == "only for you"])
    for expected in (200, 200, 200, 404):
        async with play.http.post(url, json={"text": "again"}) as resp:
            assert resp.status == expected
    async with play.http.post("/playground/response/nope", json={"text": "x"}) as resp:
        assert resp.status == 404


# -- feedback -------------------------------------------------------------------------------------


async def test_a_thumbs_up_reaction_and_the_feedback_buttons_are_one_vote(play: Play):
    play.model.reply("Hi.")
    ts = (await play.say("@flywheel hello"))["ts"]
    [answer] = await play.answered(GENERAL, ts)
    [call] = await play.calls(1)

    assert (await play.post("reactions", {"channel": GENERAL, "ts": answer["ts"], "name": "+1", "add": True}))["ok"]
    await wait_until(lambda: play.messages()[(GENERAL, answer["ts"])].get("reactions"))
    assert play.messages()[(GENERAL, answer["ts"])]["reactions"] == [{"name": "+1", "users": [ME], "count": 1}]
    await play.votes(call.id, {ME: 1})

    [feedback] = [b for b in answer["blocks"] if b["type"] == "context_actions"]
    click = {"channel": GENERAL, "ts": answer["ts"], "action_id": "vote", "block_id": feedback["block_id"],
             "value": "down", "type": "feedback_buttons"}
    assert (await play.post("actions", click))["ok"]
    await play.votes(call.id, {ME: -1})  # the latest signal is the vote


async def test_the_pressed_feedback_button_is_the_stored_vote_and_survives_a_reload(play: Play):
    play.model.reply("Hi.")
    ts = (await play.say("@flywheel hello"))["ts"]
    [answer] = await play.answered(GENERAL, ts)
    [call] = await play.calls(1)
    [feedback] = [b for b in answer["blocks"] if b["type"] == "context_actions"]
    up = {"channel": GENERAL, "ts": answer["ts"], "action_id": "vote", "block_id": feedback["block_id"],
          "value": "up", "type": "feedback_buttons"}

    def shown() -> dict[str, Any]:
        return play.messages()[(GENERAL, answer["ts"])]

    async def reloaded() -> dict[str, Any]:
        [m] = [m for m in (await play.state())["messages"][GENERAL] if m["ts"] == answer["ts"]]
        return m

    assert (await play.post("actions", up))["ok"]
    await play.votes(call.id, {ME: 1})
    assert shown()["your_feedback"] == "up" and (await reloaded())["your_feedback"] == "up"
    [ack] = await wait_until(lambda: [f["message"] for f in play.of_type("message") if f["message"].get("ephemeral")])
    assert "Your vote on this answer: 👍" in ack["text"] and ack["thread_ts"] == ts

    await play.post("reactions", {"channel": GENERAL, "ts": answer["ts"], "name": "-1", "add": True})
    await play.votes(call.id, {ME: -1})
    assert "your_feedback" not in shown() and "your_feedback" not in await reloaded(), "one vote, shown once"
    await play.post("reactions", {"channel": GENERAL, "ts": answer["ts"], "name": "-1", "add": False})
    await play.votes(call.id, {})
    assert "your_feedback" not in await reloaded() and not (await reloaded()).get("reactions")
    assert "your_feedback" not in play.standin.state.for_api(play.standin.state.get(GENERAL, answer["ts"]))


async def test_fix_it_opens_a_modal_and_saving_stores_a_correction(play: Play):
    play.model.reply("Sydney.")
    ts = (await play.say("@flywheel capital of Australia?"))["ts"]
    [answer] = await play.answered(GENERAL, ts)
    [call] = await play.calls(1)
    [actions] = [b for b in answer["blocks"] if b["type"] == "actions"]
    await play.post("actions", {"channel": GENERAL, "ts": answer["ts"], "action_id": "fix",
                                "block_id": actions["block_id"], "value": "fix", "type": "button"})
    [frame] = await wait_until(lambda: play.of_type("view"))
    view = frame["view"]
    assert view["callback_id"] == "fix_submit" and view["id"]
    assert view["blocks"][1]["element"]["initial_value"] == "Sydney."

    # Slack's client refuses an empty required field; the bot refuses a blank one.
    empty = await play.post("views/submit", {"view_id": view["id"], "values": {"part_0": {"text": ""}}})
    assert empty["response_action"] == "errors" and "part_0" in empty["errors"]
    blank = await play.post("views/submit", {"view_id": view["id"], "values": {"part_0": {"text": "   "}}})
    assert blank["response_action"] == "errors" and "Write the answer" in blank["errors"]["part_0"]
    assert not play.of_type("view_closed")

    saved = await play.post("views/submit", {"view_id": view["id"], "values": {"part_0": {"text": "Canberra."}}})
    assert saved["ok"] and "response_action" not in saved
    [closed] = await wait_until(lambda: play.of_type("view_closed"))
    assert closed["view_id"] == view["id"]
    for _ in range(250):
        if await play.fw.store.corrections(call.id):
            break
        await asyncio.sleep(0.02)
    [correction] = await play.fw.store.corrections(call.id)
    assert (correction.text, correction.user_id) == ("Canberra.", ME)
    [note] = await wait_until(lambda: [m for m in play.answers(GENERAL, ts) if "corrected" in m["text"]])
    link = f"{play.standin.base_url}/archives/{GENERAL}/p{answer['ts'].replace('.', '')}?thread_ts={ts}&cid={GENERAL}"
    assert note["text"].startswith(f"✏️ <@{ME}> corrected <{link}|this answer>")
    await play.post("views/submit", {"view_id": view["id"], "values": {}}, status=404)


async def test_the_message_shortcut_opens_the_fix_modal_only_on_answers(play: Play):
    play.model.reply("Hi.")
    ts = (await play.say("@flywheel hello"))["ts"]
    [answer] = await play.answered(GENERAL, ts)
    state = await play.state()
    assert {"callback_id": "fix_answer", "type": "message"}.items() <= state["shortcuts"][0].items()

    await play.post("shortcuts", {"channel": GENERAL, "ts": ts, "callback_id": "fix_answer"})
    [note] = await wait_until(lambda: [f["message"] for f in play.of_type("message")
                                       if f["message"].get("ephemeral")])
    assert "Only my own answers" in note["text"]
    await play.post("shortcuts", {"channel": GENERAL, "ts": answer["ts"], "callback_id": "fix_answer"})
    await wait_until(lambda: play.of_type("view"))


async def test_regenerate_posts_a_second_answer_linked_to_the_first(play: Play):
    play.model.reply("First take.")
    ts = (await play.say("@flywheel name a colour"))["ts"]
    [answer] = await play.answered(GENERAL, ts)
    [actions] = [b for b in answer["blocks"] if b["type"] == "actions"]
    play.model.reply("Second take.")
    await play.post("actions", {"channel": GENERAL, "ts": answer["ts"], "action_id": "regenerate",
                                "block_id": actions["block_id"], "value": "regenerate"})
    answers = await play.answered(GENERAL, ts, 2)
    link = f"{play.standin.base_url}/archives/{GENERAL}/p{answer['ts'].replace('.', '')}?thread_ts={ts}&cid={GENERAL}"
    assert [a["text"] for a in answers] == ["First take.", f"Second take.\n\n_🔄 Regenerated from [this answer]({link})._"]
    first, second = sorted(await play.calls(2), key=lambda c: c.id)
    assert second.parent_call_id == first.id


async def test_the_home_tab_is_published_to_the_page(play: Play):
    assert (await play.post("home"))["ok"]
    [frame] = await wait_until(lambda: play.of_type("home"))
    assert frame["view"]["type"] == "home" and frame["view"]["blocks"]
    assert (await play.state())["home"]["id"] == frame["view"]["id"]


# -- the assistant pane -----------------------------------------------------------------------------


def pane_frames(play: Play, thread_ts: str) -> list[dict[str, Any]]:
    return [f["thread"] for f in play.of_type("assistant_thread") if f["thread"]["thread_ts"] == thread_ts]


async def test_opening_the_pane_from_a_channel_starts_an_assistant_thread_with_suggestions(play: Play):
    opened = await play.post("assistant", {"channel": GENERAL})
    dm, thread_ts = opened["channel"], opened["thread_ts"]
    assert dm == "D_BOT"

    # The bot hears assistant_thread_started, greets in the thread and sets its suggestions.
    await wait_until(lambda: [p for p in pane_frames(play, thread_ts) if p["prompts"]])
    [pane] = (await play.state())["assistant_threads"]
    assert (pane["channel"], pane["thread_ts"], pane["context_channel"]) == (dm, thread_ts, GENERAL)
    assert 1 <= len(pane["prompts"]) <= 4
    assert pane["prompts"][0] == {"title": "Summarise this channel",
                                  "message": "summarize the recent messages of this channel"}
    [greeting] = await wait_until(lambda: play.answers(dm, thread_ts))
    assert "How can I help?" in greeting["text"] and "<#C_GENERAL>" in greeting["text"]
    assert play.model.requests == [] and not play.of_type("error")

    # Switching channel with the pane open: the bot hears it, and the suggestions follow the context.
    assert await play.post("assistant/context", {"thread_ts": thread_ts, "channel": "D_BOT"}) == {
        "ok": True, "changed": True}
    await wait_until(lambda: pane_frames(play, thread_ts)[-1]["prompts"][0]["title"] != "Summarise this channel")
    assert (await play.state())["assistant_threads"][0]["context_channel"] == "D_BOT"
    assert await play.post("assistant/context", {"thread_ts": thread_ts, "channel": "D_BOT"}) == {
        "ok": True, "changed": False}
    assert (await play.post("assistant/context", {"thread_ts": "1.0", "channel": GENERAL}, status=404))["error"]


async def test_a_question_in_the_pane_is_answered_there_with_status_and_title(play: Play):
    await play.say("The release train leaves on Thursdays.")  # in #general, where the pane is opened
    opened = await play.post("assistant", {"channel": GENERAL})
    dm, thread_ts = opened["channel"], opened["thread_ts"]
    await wait_until(lambda: [p for p in pane_frames(play, thread_ts) if p["prompts"]])

    play.model.reply("On Thursdays.", first_token_delay=0.3)
    await play.say("When does the release train leave?", channel=dm, thread_ts=thread_ts)
    [_greeting, answer] = await play.answered(dm, thread_ts)
    assert answer["text"] == "On Thursdays."
    kinds = [b["type"] for b in answer["blocks"]]
    assert "context_actions" in kinds  # the same feedback buttons as everywhere
    [call] = await play.calls(1)
    assert (call.trigger, call.source, call.channel_id, call.thread_ts) == ("assistant", "playground", dm, thread_ts)
    assert "The release train leaves on Thursdays." in json.dumps(play.model.requests[-1]["messages"])

    # The pane showed the status while the model thought, then the title; the status is gone after.
    shown = pane_frames(play, thread_ts)
    statuses = [p["status"] for p in shown]
    assert "is thinking…" in statuses and statuses[-1] == ""
    [pane] = (await play.state())["assistant_threads"]
    assert pane["title"] == "When does the release train leave?" and pane["status"] == ""


async def test_the_pane_opened_from_home_and_its_threads_survive_a_restart(play: Play, tmp_path: Path):
    opened = await play.post("assistant", {})
    thread_ts = opened["thread_ts"]
    [pane] = await wait_until(lambda: [p for p in pane_frames(play, thread_ts) if p["prompts"]])
    assert pane["context_channel"] is None
    assert all(p["title"] != "Summarise this channel" for p in pane["prompts"])
    assert (await play.post("assistant", {"channel": "C_NOPE"}, status=400))["error"] == "no such channel: 'C_NOPE'"

    play.standin.state.save()
    again = StandIn(state_path=tmp_path / "playground.json", signing_secret=SECRET, bot_token=TOKEN,
                    prompts=list, model={})
    [kept] = again.state.panes.values()
    assert kept["prompts"] == pane["prompts"] and kept["thread_ts"] == thread_ts

    await play.post("reset")
    assert (await play.state())["assistant_threads"] == []


# -- safety and errors ---------------------------------------------------------------------------------


async def test_everything_the_bot_posts_is_escaped(play: Play):
    play.model.reply("<!channel> ship it & tell <!here> and @everyone <!subteam^S1> <https://x.example|click>")
    ts = (await play.say("@flywheel announce it"))["ts"]
    await play.answered(GENERAL, ts)
    play.model.reply("Done.")
    await play.say("/ask <!channel> please")
    await wait_until(lambda: len([a for a in play.answers(GENERAL, None) if "asked" in a["text"]]) == 1)
    await play.calls(2)
    await play.standin.delivery.idle()
    state = await play.state()
    posted = [m for c in state["messages"].values() for m in c if m.get("bot_id")]
    assert len(posted) >= 3
    for message in posted:
        everything = json.dumps(message)
        for token in ("<!channel>", "<!here>", "<!subteam", "<https://", "@everyone"):
            assert token not in everything, message
    assert "&lt;!channel&gt;" in json.dumps(posted)


async def test_a_delivery_the_bot_refuses_shows_an_error(play: Play):
    play.standin.signing_secret = "not-the-bot-secret"
    await play.say("@flywheel hello")
    error = (await wait_until(lambda: play.of_type("error")))[0]
    assert "HTTP 401" in error["message"] and "signing secret" in error["message"]
    assert await play.fw.store.list_calls() == []


async def test_the_web_api_checks_the_token_and_speaks_slack(play: Play):
    async def call(method: str, token: str | None = TOKEN, **params: Any) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with play.http.post(f"/api/{method}", data=params, headers=headers) as resp:
            assert resp.status == 200
            return await resp.json()

    assert await call("auth.test", token=None) == {"ok": False, "error": "not_authed"}
    assert await call("auth.test", token="xoxb-wrong") == {"ok": False, "error": "invalid_auth"}
    assert await call("chat.postMessage", token="xoxb-wrong", channel=GENERAL, text="x") == {
        "ok": False, "error": "invalid_auth"}
    me = await call("auth.test")
    assert (me["ok"], me["user_id"], me["bot_id"], me["team_id"]) == (True, "UBOT", "BBOT", "T_PLAY")
    assert (await call("chat.fly"))["error"] == "unknown_method"
    assert (await call("chat.postMessage", channel="C_NOPE", text="x"))["error"] == "channel_not_found"
    assert (await call("chat.postMessage", channel=GENERAL))["error"] == "no_text"
    assert (await call("views.open", trigger_id="made-up", view='{"type": "modal"}'))["error"] == "invalid_trigger_id"

    client = AsyncWebClient(token=TOKEN, base_url=play.standin.api_url)
    root = (await client.chat_postMessage(channel=GENERAL, text="root"))["ts"]
    replies = [(await client.chat_postMessage(channel=GENERAL, text=f"r{i}", thread_ts=root))["ts"] for i in range(4)]
    assert replies == sorted(replies) and root < replies[0]
    seen, cursor, pages = [], None, 0
    while True:
        page = await client.conversations_replies(channel=GENERAL, ts=replies[1], limit=2, cursor=cursor)
        seen += [m["text"] for m in page["messages"]]
        pages += 1
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            break
    assert seen == ["root", "r0", "r1", "r2", "r3"] and pages == 3
    history = await client.conversations_history(channel=GENERAL, limit=1)
    assert [m["text"] for m in history["messages"]] == ["root"] and history["messages"][0]["reply_count"] == 4
    stream = await client.chat_startStream(channel=GENERAL, thread_ts=root, recipient_team_id="T_PLAY",
                                           recipient_user_id=ME, markdown_text="a")
    assert (await call("chat.update", channel=GENERAL, ts=stream["ts"], text="b"))["error"] == \
        "streaming_state_conflict"
    await client.chat_appendStream(channel=GENERAL, ts=stream["ts"], chunks=[{"type": "markdown_text", "text": "b"}])
    await client.chat_stopStream(channel=GENERAL, ts=stream["ts"], markdown_text="c")
    assert play.messages()[(GENERAL, stream["ts"])]["text"] == "abc"
    assert (await call("chat.appendStream", channel=GENERAL, ts=stream["ts"], markdown_text="d"))["error"] == \
        "message_not_in_streaming_state"
    await client.chat_delete(channel=GENERAL, ts=replies[0])
    assert {"type": "message_deleted", "channel": GENERAL, "ts": replies[0]} in play.frames


async def test_the_page_refuses_other_web_sites(play: Play):
    async with play.http.post("/playground/api/reset", headers={"Origin": "https://evil.example"}) as resp:
        assert resp.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await play.http.ws_connect("/playground/ws", headers={"Origin": "https://evil.example"})


def _every_route(standin: StandIn) -> list[tuple[str, str]]:
    """(method, path) of each stand-in route, its placeholders filled in, and the bot's own."""
    key = standin.response_url(GENERAL).rpartition("/")[2]
    fill = {"{method}": "chat.postMessage", "{id}": key, "{name:.+}": "app.js"}
    routes = []
    for route in standin.routes():
        path = route.path
        for placeholder, value in fill.items():
            path = path.replace(placeholder, value)
        routes.append(("POST" if route.method == "*" else route.method, path))
    return [*routes, ("POST", "/slack/events"), ("GET", "/healthz"), ("GET", "/no/such/page")]


async def test_a_page_that_rebinds_its_name_to_this_machine_is_refused_on_every_route(play: Play):
    """DNS rebinding: evil.example's page, once its name points at 127.0.0.1, is the playground's
    own origin for the browser (Origin and Host agree), but its requests still name evil.example."""
    port = URL(play.standin.base_url).port
    evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}",
            "Authorization": f"Bearer {TOKEN}"}  # even with the bot's token
    ts = (await play.say("mine"))["ts"]
    await wait_until(lambda: play.fw.conversation.inflight == 0)
    before = await play.state()
    bodies = {"/playground/api/messages": {"channel": GENERAL, "text": "@flywheel sent by evil.example"},
              "/playground/api/reactions": {"channel": GENERAL, "ts": ts, "name": "-1", "add": True},
              "/api/chat.postMessage": {"channel": GENERAL, "text": "posted by evil.example"}}
    routes = _every_route(play.standin)
    assert len(routes) >= 17
    for method, path in routes:
        async with play.http.request(method, path, json=bodies.get(path, {"text": "x"}), headers=evil) as resp:
            assert resp.status == 403, (method, path, resp.status, await resp.text())
            assert "this machine" in await resp.text()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await play.http.ws_connect("/playground/ws", headers=evil)
    assert refused.value.status == 403
    assert await play.state() == before and not [f for f in play.frames if "evil.example" in json.dumps(f)]
    for name in ("127.0.0.1", "localhost", "[::1]", "LocalHost."):  # this machine, by any of its names
        async with play.http.get("/playground/api/state", headers={"Host": f"{name}:{port}"}) as resp:
            assert resp.status == 200, name


async def test_beyond_this_machine_every_request_needs_the_runs_token(tmp_path: Path):
    access = Access.for_host("0.0.0.0")  # as `flywheel dev --host 0.0.0.0`; the test listens on loopback
    assert access.token and len(access.token) >= 32 and Access.for_host("0.0.0.0").token != access.token
    assert access.token not in repr(access)
    standin = StandIn(state_path=tmp_path / "s.json", signing_secret=SECRET, bot_token=TOKEN, prompts=list,
                      model={"name": "echo", "offline": True}, access=access)
    app = web.Application()
    standin.attach(app)
    async with serve(app) as (_, url, _):
        standin.base_url = url
        port = URL(url).port
        lan = {"Host": f"192.168.1.20:{port}"}  # another machine, by this one's address (only the header)
        async with aiohttp.ClientSession(url) as http:
            for where in ({}, lan):
                for method, path in _every_route(standin):
                    if path == "/slack/events" or path.startswith(("/api/", "/playground/response/")):
                        continue  # these check a secret of their own (below)
                    for given in ({}, {TOKEN_HEADER: "wrong"}):
                        async with http.request(method, path, json={}, headers={**where, **given}) as resp:
                            assert resp.status == 403, (method, path, resp.status)
                async with http.get("/?token=wrong", headers=where, allow_redirects=False) as resp:
                    assert resp.status == 403 and "?token=" in await resp.text()
                with pytest.raises(aiohttp.WSServerHandshakeError):
                    await http.ws_connect("/playground/ws", headers=where)
            # A script may send the token as a header; routes with a secret of their own need none.
            async with http.get("/playground/api/state", headers={**lan, TOKEN_HEADER: access.token}) as resp:
                assert resp.status == 200 and (await resp.json())["ok"]
            async with http.post("/api/auth.test", headers={**lan, "Authorization": f"Bearer {TOKEN}"}) as resp:
                assert (await resp.json())["ok"]
            # Rebinding is refused, token or not.
            async with http.get("/playground/api/state",
                                headers={"Host": f"evil.example:{port}", TOKEN_HEADER: access.token}) as resp:
                assert resp.status == 403

        # The printed URL: the token becomes a cookie and leaves the address bar.
        async with aiohttp.ClientSession(url, cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with browser.get(f"/?token={access.token}", allow_redirects=False) as resp:
                assert (resp.status, resp.headers["Location"]) == (303, "/")
                cookie = resp.cookies[f"flywheel_playground_{port}"]
                assert cookie.value == access.token and cookie["httponly"] and cookie["samesite"] == "Strict"
            async with browser.get("/") as resp:
                assert resp.status == 200 and "<html" in (await resp.text()).lower()
            ws = await browser.ws_connect("/playground/ws")
            async with browser.post("/playground/api/messages", json={"channel": GENERAL, "text": "hi"}) as resp:
                assert resp.status == 200
            assert json.loads((await ws.receive(timeout=3)).data)["message"]["text"] == "hi"
            await ws.close()
    await standin.delivery.idle()
    await standin.close()


@pytest.mark.parametrize(("host", "token"), [
    ("127.0.0.1", False), ("localhost", False), ("::1", False), ("127.0.0.2", False),
    ("0.0.0.0", True), ("::", True), ("", True), ("192.168.1.20", True), ("devbox.lan", True),
])
def test_only_a_loopback_host_goes_without_a_token(host: str, token: bool):
    assert (Access.for_host(host).token is not None) is token


def test_what_dev_prints_on_this_machine_and_beyond_it():
    lines, warning = welcome(Access.for_host("127.0.0.1"), local_url("127.0.0.1", 3000))
    assert (lines, warning) == (["Flywheel playground: http://127.0.0.1:3000/"], None)
    assert local_url("::1", 3000) == "http://[::1]:3000" and local_url("::", 3000) == "http://[::1]:3000"

    lan = Access.for_host("192.168.1.20")
    lines, warning = welcome(lan, local_url("192.168.1.20", 3000))
    assert lines == [f"Flywheel playground: http://192.168.1.20:3000/?token={lan.token}"]
    assert warning and "reachable from the network" in warning and "--host 127.0.0.1" in warning
    assert lan.host_allowed("192.168.1.20:3000") and not lan.host_allowed("10.0.0.1:3000")

    everywhere = Access.for_host("0.0.0.0")
    lines, warning = welcome(everywhere, local_url("0.0.0.0", 3000))
    assert lines[0] == f"Flywheel playground: http://127.0.0.1:3000/?token={everywhere.token}"
    assert "from other machines" in lines[1] and f":3000/?token={everywhere.token}" in lines[1]
    assert warning and "--host 0.0.0.0" in warning


# -- the workspace across restarts -----------------------------------------------------------------------


async def test_the_conversation_survives_a_restart(play: Play, tmp_path: Path):
    play.model.reply("Still here.")
    ts = (await play.say("@flywheel remember me"))["ts"]
    await play.answered(GENERAL, ts)
    await play.post("reactions", {"channel": GENERAL, "ts": ts, "name": "tada", "add": True})
    await play.post("home")
    await wait_until(lambda: play.of_type("home"))
    saved = tmp_path / "playground.json"
    await wait_until(lambda: saved.exists() and "tada" in saved.read_text(), timeout=3)  # saved soon, not only on close
    await play.standin.close()

    again = StandIn(state_path=tmp_path / "playground.json", signing_secret=SECRET, bot_token=TOKEN,
                    prompts=lambda: play.fw.conversation.prompts, model={"name": "echo", "offline": True})
    app = web.Application()
    again.attach(app)
    async with serve(app) as (_, url, _), aiohttp.ClientSession() as http:
        again.base_url = url
        async with http.get(f"{url}/playground/api/state") as resp:
            state = await resp.json()
    await again.close()
    texts = [(m["user"], m["text"]) for m in state["messages"][GENERAL]]
    assert texts == [(ME, "<@UBOT> remember me"), ("UBOT", "Still here.")]
    [mine] = [m for m in state["messages"][GENERAL] if m["ts"] == ts]
    assert mine["reply_count"] == 1 and mine["reactions"][0]["name"] == "tada"
    assert all(m["streaming"] is False for m in state["messages"][GENERAL])
    assert state["home"]["type"] == "home" and state["model"] == {"name": "echo", "offline": True}
    assert again.state.next_ts() > state["messages"][GENERAL][-1]["ts"]


async def test_reset_forgets_the_messages(play: Play):
    play.model.reply("Hi.")
    ts = (await play.say("@flywheel hello"))["ts"]
    await play.answered(GENERAL, ts)
    assert (await play.post("reset"))["ok"]
    await wait_until(lambda: play.frames[-1] == {"type": "reset"})
    assert (await play.state())["messages"][GENERAL] == []
    assert await play.post("reactions", {"channel": GENERAL, "ts": ts, "name": "+1"}, status=404)


async def test_the_page_is_served_from_its_folder_with_its_content_types(tmp_path: Path):
    static = tmp_path / "static"
    static.mkdir()
    standin = StandIn(state_path=tmp_path / "s.json", signing_secret=SECRET, bot_token=TOKEN,
                      prompts=list, model={"name": "echo", "offline": True}, static_dir=static)
    app = web.Application()
    standin.attach(app)
    async with serve(app) as (_, url, _), aiohttp.ClientSession(url) as http:
        async with http.get("/") as resp:
            assert resp.status == 200 and resp.content_type == "text/plain"
            assert "index.html" in await resp.text()
        (static / "index.html").write_text("<!doctype html><title>Flywheel</title>")
        (static / "app.js").write_text("export {};")
        (static / "style.css").write_text("body{}")
        for path, kind in [("/", "text/html"), ("/static/app.js", "text/javascript"),
                           ("/static/style.css", "text/css")]:
            async with http.get(path) as resp:
                assert (resp.status, resp.content_type) == (200, kind)
        for path in ("/static/missing.js", "/static/..%2Fs.json", "/static/%2E%2E/s.json"):
            async with http.get(path) as resp:
                assert resp.status == 404, path
    await standin.close()


async def test_the_page_hears_when_a_prompt_file_changes(tmp_path: Path):
    prompts_dir = tmp_path / "prompts"
    shutil.copytree(PROMPTS, prompts_dir)
    standin = StandIn(state_path=tmp_path / "s.json", signing_secret=SECRET, bot_token=TOKEN,
                      prompts=Prompts(prompts_dir), model={"name": "echo", "offline": True},
                      prompt_poll_seconds=0.05)
    app = web.Application()
    standin.attach(app)
    async with serve(app) as (_, url, _), aiohttp.ClientSession(url) as http:
        async with http.get("/playground/api/state") as resp:
            [before] = [p for p in (await resp.json())["prompts"] if p["name"] == "ask"]
        ws = await http.ws_connect("/playground/ws")
        await asyncio.sleep(0.1)
        with (prompts_dir / "ask.prompty").open("a") as f:
            f.write("\nAlways answer in one sentence.\n")
        # Told within a fraction of the default interval (1 s): the interval given is the one used.
        frame = json.loads((await ws.receive(timeout=0.6)).data)
        assert frame["type"] == "prompts"
        [after] = [p for p in frame["prompts"] if p["name"] == "ask"]
        assert after["version"] != before["version"] and after["command"] == "/ask"
        await standin.close()
        assert (await ws.receive(timeout=3)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    with pytest.raises(ValueError, match="prompt_poll_seconds"):
        StandIn(state_path=tmp_path / "s.json", signing_secret=SECRET, bot_token=TOKEN, prompts=list,
                model={}, prompt_poll_seconds=0)


async def test_the_page_shows_thinking_while_the_model_is_slow_and_the_model_reads_names(play: Play):
    play.model.reply("Done: @you owns it.", first_token_delay=2.0)
    ts = (await play.say("@flywheel who owns the rollout?"))["ts"]
    note = await wait_until(lambda: [m for (c, _), m in play.messages().items() if c == GENERAL
                                     and m.get("thread_ts") == ts and "Thinking" in m["text"]], timeout=1.8)
    assert note[0]["user"] == "UBOT"

    [answer] = await play.answered(GENERAL, ts)
    assert answer["text"] == f"Done: <@{ME}> owns it."  # the page renders it as the @you mention
    assert not [m for m in play.messages().values() if "Thinking" in m["text"]], "no note left behind"

    play.model.reply("Sure.")
    await play.say("@flywheel summarize", thread_ts=ts)
    await play.answered(GENERAL, ts, 2)
    transcript = play.model.requests[-1]["messages"][-1]["content"]
    assert "you: who owns the rollout?" in transcript and "flywheel: Done: @you owns it." in transcript
