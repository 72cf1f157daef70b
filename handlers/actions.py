"""Clicks under an answer (👍/👎, Fix it, Regenerate), the "Fix this answer" message
shortcut, and the fix modal's submission.

A vote and a correction are kept (`bot.journal`) *before* Slack is acknowledged, so a
database outage loses neither; if one can be neither kept nor stored, the person is told
(the modal stays open with the reason)."""

import contextlib

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.conversation import Conversation
from bot.corrections import Corrections
from bot.feedback import Votes, fix_submission
from bot.journal import NotKept

UNAVAILABLE = "Sorry, I can't do that right now: my database is unreachable. Please try again in a minute."
NOT_AN_ANSWER = "Only my own answers can be fixed: pick one of my replies."
NOT_REGENERABLE = ("Sorry, I can't run this answer again: I no longer have what it was asked "
                   "(its log was pruned, or this channel keeps no content).")


def _where(body: dict) -> tuple[str | None, str | None]:
    """The channel and ts of the message a button was clicked on."""
    container = body.get("container") or {}
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
    return channel, container.get("message_ts") or (body.get("message") or {}).get("ts")


async def _tell(client: AsyncWebClient, channel: str | None, user: str | None, text: str,
                thread_ts: str | None = None) -> None:
    """A private note to the person who clicked (in the thread of what they clicked on)."""
    if channel and user:
        with contextlib.suppress(SlackApiError):  # e.g. a channel the bot is not in: nothing more to do
            await client.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts)


async def on_vote(ack: AsyncAck, body: dict, action: dict, votes: Votes, client: AsyncWebClient) -> None:
    channel, ts = _where(body)
    user = (body.get("user") or {}).get("id")
    if not (channel and ts and user):
        await ack()
        return
    thread = (body.get("container") or {}).get("thread_ts") or (body.get("message") or {}).get("thread_ts")
    try:
        kept = await votes.button(channel_id=channel, ts=ts, user_id=user, value=action.get("value", ""),
                                  action_ts=action.get("action_ts"))
    except NotKept as exc:
        await ack()
        await _tell(client, channel, user, exc.user_message, thread)
        return
    await ack()
    if kept is not None:
        note = await votes.acknowledgement(kept, channel_id=channel, ts=ts, user_id=user, message=body.get("message"))
        await _tell(client, channel, user, note, thread)


async def on_fix(ack: AsyncAck, body: dict, client: AsyncWebClient, corrections: Corrections) -> None:
    await ack()
    channel, ts = _where(body)
    if channel and ts and await corrections.open_fix(
            client, trigger_id=body["trigger_id"], channel_id=channel, ts=ts) == "unavailable":
        await _tell(client, channel, (body.get("user") or {}).get("id"), UNAVAILABLE)


async def on_fix_shortcut(ack: AsyncAck, shortcut: dict, client: AsyncWebClient,
                          corrections: Corrections) -> None:
    await ack()
    channel = (shortcut.get("channel") or {}).get("id")
    ts = (shortcut.get("message") or {}).get("ts")
    user = (shortcut.get("user") or {}).get("id")
    if channel and ts:
        outcome = await corrections.open_fix(client, trigger_id=shortcut["trigger_id"], channel_id=channel, ts=ts)
        if outcome != "done":
            await _tell(client, channel, user, UNAVAILABLE if outcome == "unavailable" else NOT_AN_ANSWER)


async def on_fix_submit(ack: AsyncAck, body: dict, view: dict, client: AsyncWebClient,
                        corrections: Corrections) -> None:
    answer, text = fix_submission(view)
    if not text:
        await ack(response_action="errors", errors={"part_0": "Write the answer you wish it had given."})
        return
    user = body.get("user") or {}
    if not answer or not user.get("id"):
        await ack()  # not a modal of ours: nothing to attach the text to
        return
    try:
        kept = await corrections.keep(answer, user_id=user["id"], text=text)
    except NotKept as exc:
        await ack(response_action="errors", errors={"part_0": exc.user_message})
        return
    await ack()
    await corrections.announce(kept, user_id=user["id"], team_id=user.get("team_id"), client=client)


async def on_regenerate(ack: AsyncAck, body: dict, client: AsyncWebClient, conversation: Conversation) -> None:
    await ack()
    channel, ts = _where(body)
    user = body.get("user") or {}
    if not (channel and ts):
        return
    outcome = await conversation.regenerate(channel, ts, user_id=user.get("id"), team_id=user.get("team_id"),
                                            client=client)
    if outcome != "done":  # never a click that does nothing
        await _tell(client, channel, user.get("id"), UNAVAILABLE if outcome == "unavailable" else NOT_REGENERABLE)
