"""One contract for both Slack stand-ins: the tests' fake (tests/fakes/slack_api.py) and the playground's
(bot/playground/webapi.py). The same calls, through the real slack_sdk AsyncWebClient as the bot makes
them, must give the same observable results and the same errors for the same bad inputs, so that what
the suite proves about the bot holds in the playground and back. Rules both take from
bot/playground/wire.py; behaviour only one of them models (rate limits and injected faults in the fake,
the page in the playground) is tested in tests/test_fakes.py and tests/test_playground.py."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.playground.slack import StandIn
from bot.playground.state import ME

from fakes.slack_api import FakeSlack

CHANNEL, DM = "C_GENERAL", "D_BOT"  # a public channel and the DM with the bot, in both
BOT_USER, BOT_ID = "UBOT", "BBOT"

# Some calls here leave out `text` on purpose (the checks are about blocks): slack_sdk warns.
pytestmark = pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing:UserWarning")


@dataclass
class Slack:
    kind: str
    client: AsyncWebClient
    seed: Callable[..., str]  # seed(channel, text, thread_ts=None) -> ts: a message a person wrote
    trigger: Callable[[], str]  # a fresh trigger_id, as an interaction would carry

    async def error(self, call: Awaitable[Any]) -> str:
        """The error code Slack answers (slack_sdk raises it)."""
        with pytest.raises(SlackApiError) as failed:
            await call
        return str(failed.value.response["error"])


@pytest.fixture(params=["fake", "playground"])
async def slack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Slack]:
    if request.param == "fake":
        async with FakeSlack() as fake:
            fake.channels = {CHANNEL, DM}
            yield Slack("fake", AsyncWebClient(token=fake.bot_token, base_url=fake.url),
                        lambda channel, text, thread_ts=None: fake.add_message(channel, text, user=ME,
                                                                                thread_ts=thread_ts),
                        lambda: "13345224609.738474920.8088930838d88f008e0")
        return
    standin = StandIn(state_path=tmp_path / "state.json", signing_secret="secret", bot_token="xoxb-play",
                      prompts=list, model={"name": "echo", "offline": True})
    app = web.Application()
    standin.attach(app)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    standin.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    def seed(channel: str, text: str, thread_ts: str | None = None) -> str:
        return str(standin.state.add(channel, user=ME, text=text, thread_ts=thread_ts)[0]["ts"])

    try:
        yield Slack("playground", AsyncWebClient(token=standin.bot_token, base_url=standin.api_url), seed,
                    standin.api.issue_trigger)
    finally:
        await standin.close()
        await runner.cleanup()


# -- messages ----------------------------------------------------------------------------------------


async def test_a_posted_message_is_the_bots_and_reads_back(slack: Slack):
    posted = await slack.client.chat_postMessage(channel=CHANNEL, text="hello")
    assert posted["channel"] == CHANNEL
    assert {k: posted["message"][k] for k in ("text", "user", "bot_id", "ts")} == \
        {"text": "hello", "user": BOT_USER, "bot_id": BOT_ID, "ts": posted["ts"]}
    history = await slack.client.conversations_history(channel=CHANNEL)
    assert [(m["ts"], m["text"]) for m in history["messages"]] == [(posted["ts"], "hello")]
    assert "streaming" not in history["messages"][0]  # only Slack's own keys go out


async def test_replies_are_counted_on_the_parent_and_read_in_order(slack: Slack):
    parent = slack.seed(CHANNEL, "question")
    one = await slack.client.chat_postMessage(channel=CHANNEL, thread_ts=parent, text="one")
    two = await slack.client.chat_postMessage(channel=CHANNEL, thread_ts=parent, markdown_text="**two**")
    assert one["message"]["thread_ts"] == parent and one["message"]["parent_user_id"] == ME
    thread = (await slack.client.conversations_replies(channel=CHANNEL, ts=parent))["messages"]
    assert [m["text"] for m in thread] == ["question", "one", "**two**"]
    assert {k: thread[0][k] for k in ("reply_count", "reply_users", "reply_users_count", "latest_reply")} == \
        {"reply_count": 2, "reply_users": [BOT_USER], "reply_users_count": 1, "latest_reply": two["ts"]}
    # a reply's ts stands for its thread
    assert [m["ts"] for m in (await slack.client.conversations_replies(channel=CHANNEL, ts=one["ts"]))["messages"]] \
        == [m["ts"] for m in thread]
    history = (await slack.client.conversations_history(channel=CHANNEL))["messages"]
    assert [m["ts"] for m in history] == [parent]  # replies stay in their thread


async def test_an_update_changes_the_text_and_marks_it_edited(slack: Slack):
    posted = await slack.client.chat_postMessage(channel=DM, text="draft")
    updated = await slack.client.chat_update(channel=DM, ts=posted["ts"], text="final")
    assert updated["text"] == "final" and updated["message"]["edited"]["user"] == BOT_USER
    thread = await slack.client.conversations_replies(channel=DM, ts=posted["ts"])
    assert thread["messages"][0]["text"] == "final"
    theirs = slack.seed(DM, "mine")
    assert await slack.error(slack.client.chat_update(channel=DM, ts=theirs, text="x")) == "cant_update_message"
    assert await slack.error(slack.client.chat_delete(channel=DM, ts=theirs)) == "cant_delete_message"
    assert await slack.error(slack.client.chat_update(channel=DM, ts="1.000001", text="x")) == "message_not_found"


async def test_a_deleted_reply_is_uncounted_and_a_deleted_parent_leaves_its_replies(slack: Slack):
    parent = (await slack.client.chat_postMessage(channel=CHANNEL, text="parent"))["ts"]
    first = (await slack.client.chat_postMessage(channel=CHANNEL, thread_ts=parent, text="first"))["ts"]
    second = (await slack.client.chat_postMessage(channel=CHANNEL, thread_ts=parent, text="second"))["ts"]
    await slack.client.chat_delete(channel=CHANNEL, ts=second)
    thread = (await slack.client.conversations_replies(channel=CHANNEL, ts=parent))["messages"]
    assert [m["ts"] for m in thread] == [parent, first]
    assert thread[0]["reply_count"] == 1 and thread[0]["latest_reply"] == first
    await slack.client.chat_delete(channel=CHANNEL, ts=parent)
    thread = (await slack.client.conversations_replies(channel=CHANNEL, ts=first))["messages"]
    assert [(m["ts"], m.get("subtype")) for m in thread] == [(parent, "tombstone"), (first, None)]
    await slack.client.chat_delete(channel=CHANNEL, ts=first)  # the last reply takes the tombstone with it
    assert (await slack.client.conversations_history(channel=CHANNEL))["messages"] == []


async def test_the_same_bad_messages_get_the_same_errors(slack: Slack):
    post, update = slack.client.chat_postMessage, slack.client.chat_update
    markdown = {"type": "markdown", "text": "x" * 6_001}
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "s"}}
    assert await slack.error(post(channel=CHANNEL, text="x" * 40_001)) == "msg_too_long"
    assert await slack.error(post(channel=CHANNEL, markdown_text="x" * 12_001)) == "msg_too_long"
    assert await slack.error(post(channel=CHANNEL, text="t", blocks=[markdown, markdown])) == "msg_blocks_too_long"
    assert await slack.error(post(channel=CHANNEL, text="t", blocks=[section] * 51)) == "invalid_blocks"
    assert await slack.error(post(channel=CHANNEL, text="t", blocks=[{"text": "no type"}])) == "invalid_blocks"
    assert await slack.error(post(channel=CHANNEL, text="t", markdown_text="m")) == "markdown_text_conflict"
    assert await slack.error(post(channel=CHANNEL, text="")) == "no_text"
    assert await slack.error(post(channel="C_NOWHERE", text="t")) == "channel_not_found"
    assert await slack.error(post(channel=CHANNEL, text="t", metadata={"event_payload": {}})) == \
        "invalid_metadata_format"
    ts = (await post(channel=CHANNEL, text="fine", blocks=[markdown]))["ts"]
    assert await slack.error(update(channel=CHANNEL, ts=ts, text="x" * 4_001)) == "msg_too_long"
    assert await slack.error(update(channel=CHANNEL, ts=ts, text="t", markdown_text="m")) == "markdown_text_conflict"
    assert await slack.error(update(channel=CHANNEL, ts=ts, text="t", blocks=[markdown, markdown])) == \
        "msg_blocks_too_long"
    assert await slack.error(slack.client.conversations_replies(channel=CHANNEL, ts="1.000001")) == "thread_not_found"
    assert await slack.error(slack.client.conversations_history(channel="C_NOWHERE")) == "channel_not_found"
    assert [m["text"] for m in (await slack.client.conversations_history(channel=CHANNEL))["messages"]] == ["fine"]


async def test_history_and_replies_page_with_cursors_and_a_window(slack: Slack):
    tops = [slack.seed(CHANNEL, f"m{i}") for i in range(5)]
    replies = [slack.seed(CHANNEL, f"r{i}", thread_ts=tops[0]) for i in range(4)]

    async def every(call: Callable[..., Awaitable[Any]], **params: Any) -> list[str]:
        seen, cursor = [], None
        while True:
            page = await call(limit=2, cursor=cursor, **params)
            seen += [m["ts"] for m in page["messages"]]
            assert len(page["messages"]) <= 2
            cursor = page["response_metadata"]["next_cursor"]
            assert bool(cursor) == page["has_more"]
            if not cursor:
                return seen

    assert await every(slack.client.conversations_history, channel=CHANNEL) == tops[::-1]
    assert await every(slack.client.conversations_replies, channel=CHANNEL, ts=tops[0]) == [tops[0], *replies]
    window = await slack.client.conversations_history(channel=CHANNEL, oldest=tops[1], latest=tops[3])
    assert [m["ts"] for m in window["messages"]] == [tops[2]]
    window = await slack.client.conversations_history(channel=CHANNEL, oldest=tops[1], latest=tops[3], inclusive=True)
    assert [m["ts"] for m in window["messages"]] == [tops[3], tops[2], tops[1]]
    assert await slack.error(slack.client.conversations_history(channel=CHANNEL, cursor="bm9wZQ==")) == "invalid_cursor"


# -- streaming ---------------------------------------------------------------------------------------


async def test_a_stream_grows_and_stops_with_its_blocks(slack: Slack):
    parent = slack.seed(DM, "question")
    started = await slack.client.chat_startStream(channel=DM, thread_ts=parent, markdown_text="Hel")
    ts = started["ts"]
    assert await slack.error(slack.client.chat_update(channel=DM, ts=ts, text="x")) == "streaming_state_conflict"
    await slack.client.chat_appendStream(channel=DM, ts=ts, markdown_text="lo")
    await slack.client.chat_appendStream(channel=DM, ts=ts, chunks=[{"type": "markdown_text", "text": ","}])
    assert await slack.error(slack.client.chat_appendStream(channel=DM, ts=ts)) == "invalid_arguments"
    blocks = [{"type": "context", "block_id": "b1", "elements": [{"type": "mrkdwn", "text": "done"}]}]
    stopped = await slack.client.chat_stopStream(channel=DM, ts=ts, markdown_text=" world", blocks=blocks)
    assert stopped["message"]["text"] == "Hello, world" and stopped["message"]["blocks"] == blocks
    assert await slack.error(slack.client.chat_appendStream(channel=DM, ts=ts, markdown_text="more")) == \
        "message_not_in_streaming_state"
    thread = (await slack.client.conversations_replies(channel=DM, ts=parent))["messages"]
    assert [(m["text"], m["bot_id"]) for m in thread[1:]] == [("Hello, world", BOT_ID)]
    no_thread = slack.client.api_call("chat.startStream", json={"channel": DM, "markdown_text": "x"})
    assert await slack.error(no_thread) == "invalid_arguments"
    assert await slack.error(slack.client.chat_startStream(channel=CHANNEL, thread_ts=parent)) == \
        "missing_recipient_team_id"
    assert await slack.error(slack.client.chat_startStream(channel=CHANNEL, thread_ts=parent,
                                                           recipient_team_id="T1")) == "missing_recipient_user_id"
    assert await slack.error(slack.client.chat_startStream(channel=DM, thread_ts=parent,
                                                           markdown_text="x" * 12_001)) == "msg_too_long"


# -- ephemerals, reactions, permalinks, users --------------------------------------------------------


async def test_ephemerals_reactions_permalinks_and_users(slack: Slack):
    ts = slack.seed(CHANNEL, "vote on me")
    assert (await slack.client.chat_postEphemeral(channel=CHANNEL, user=ME, markdown_text="*only you*"))["message_ts"]
    assert await slack.error(slack.client.chat_postEphemeral(channel=CHANNEL, user=ME, text="")) == "no_text"
    await slack.client.reactions_add(channel=CHANNEL, timestamp=ts, name="eyes")
    assert await slack.error(slack.client.reactions_add(channel=CHANNEL, timestamp=ts, name="eyes")) == \
        "already_reacted"
    history = (await slack.client.conversations_history(channel=CHANNEL))["messages"]
    assert history[0]["reactions"] == [{"name": "eyes", "users": [BOT_USER], "count": 1}]
    await slack.client.reactions_remove(channel=CHANNEL, timestamp=ts, name="eyes")
    assert await slack.error(slack.client.reactions_remove(channel=CHANNEL, timestamp=ts, name="eyes")) == \
        "no_reaction"
    assert "reactions" not in (await slack.client.conversations_history(channel=CHANNEL))["messages"][0]

    reply = (await slack.client.chat_postMessage(channel=CHANNEL, thread_ts=ts, text="r"))["ts"]
    link = urlsplit((await slack.client.chat_getPermalink(channel=CHANNEL, message_ts=reply))["permalink"])
    assert (link.path, link.query) == (f"/archives/{CHANNEL}/p{reply.replace('.', '')}",
                                       f"thread_ts={ts}&cid={CHANNEL}")
    assert await slack.error(slack.client.chat_getPermalink(channel=CHANNEL, message_ts="1.000001")) == \
        "message_not_found"
    bot = (await slack.client.users_info(user=BOT_USER))["user"]
    assert (bot["id"], bot["is_bot"], bot["deleted"]) == (BOT_USER, True, False)


# -- views -------------------------------------------------------------------------------------------


async def test_views_open_update_and_publish(slack: Slack):
    modal = {"type": "modal", "title": {"type": "plain_text", "text": "Fix"}, "callback_id": "fix",
             "blocks": [{"type": "input", "block_id": "answer", "label": {"type": "plain_text", "text": "A"},
                         "element": {"type": "plain_text_input", "action_id": "text"}}]}
    opened = (await slack.client.views_open(trigger_id=slack.trigger(), view=modal))["view"]
    assert (opened["type"], opened["callback_id"], opened["root_view_id"]) == ("modal", "fix", opened["id"])
    updated = (await slack.client.views_update(view_id=opened["id"], view={**modal, "callback_id": "fix2"}))["view"]
    assert (updated["id"], updated["callback_id"]) == (opened["id"], "fix2")
    assert await slack.error(slack.client.views_update(view_id="V_NONE", view=modal)) == "not_found"
    home = {"type": "home", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]}
    published = (await slack.client.views_publish(user_id=ME, view=home))["view"]
    assert published["type"] == "home" and published["blocks"][0]["text"]["text"] == "hi"
    assert await slack.error(slack.client.views_publish(user_id=ME, view={**home, "blocks": [home["blocks"][0]] * 101})) \
        == "invalid_blocks"


# -- the assistant pane ------------------------------------------------------------------------------


async def test_the_assistant_thread_calls(slack: Slack):
    parent = slack.seed(DM, "hi")
    threads = slack.client
    await threads.assistant_threads_setStatus(channel_id=DM, thread_ts=parent, status="is thinking…")
    await threads.assistant_threads_setTitle(channel_id=DM, thread_ts=parent, title="A question")
    prompt = {"title": "Ask", "message": "What is new?"}
    await threads.assistant_threads_setSuggestedPrompts(channel_id=DM, thread_ts=parent, prompts=[prompt])
    assert await slack.error(threads.assistant_threads_setSuggestedPrompts(
        channel_id=DM, thread_ts=parent, prompts=[prompt] * 5)) == "invalid_arguments"
    assert await slack.error(threads.assistant_threads_setTitle(channel_id=DM, thread_ts=parent, title="")) == \
        "invalid_arguments"
