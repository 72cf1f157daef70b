"""Clicks under an answer (👍/👎, Fix it, Regenerate), the "Fix this answer" message
shortcut, and the fix modal's submission."""

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bot.conversation import Conversation
from bot.feedback import Votes, fix_submission


def _where(body: dict) -> tuple[str | None, str | None]:
    """The channel and ts of the message a button was clicked on."""
    container = body.get("container") or {}
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
    return channel, container.get("message_ts") or (body.get("message") or {}).get("ts")


async def on_vote(ack: AsyncAck, body: dict, action: dict, votes: Votes) -> None:
    await ack()
    channel, ts = _where(body)
    if channel and ts:
        await votes.button(channel_id=channel, ts=ts, user_id=body["user"]["id"], value=action.get("value", ""))


async def on_fix(ack: AsyncAck, body: dict, client: AsyncWebClient, conversation: Conversation) -> None:
    await ack()
    channel, ts = _where(body)
    if channel and ts:
        await conversation.open_fix(client, trigger_id=body["trigger_id"], channel_id=channel, ts=ts)


async def on_fix_shortcut(ack: AsyncAck, shortcut: dict, client: AsyncWebClient,
                          conversation: Conversation) -> None:
    await ack()
    channel = (shortcut.get("channel") or {}).get("id")
    ts = (shortcut.get("message") or {}).get("ts")
    user = (shortcut.get("user") or {}).get("id")
    if channel and ts and not await conversation.open_fix(client, trigger_id=shortcut["trigger_id"],
                                                          channel_id=channel, ts=ts):
        await client.chat_postEphemeral(channel=channel, user=user,
                                        text="Only my own answers can be fixed: pick one of my replies.")


async def on_fix_submit(ack: AsyncAck, body: dict, view: dict, client: AsyncWebClient,
                        conversation: Conversation) -> None:
    call_id, text = fix_submission(view)
    if not text:
        await ack(response_action="errors", errors={"part_0": "Write the answer you wish it had given."})
        return
    await ack()
    if call_id is not None:
        user = body["user"]
        await conversation.correct(call_id, user_id=user["id"], text=text, team_id=user.get("team_id"),
                                   client=client)


async def on_regenerate(ack: AsyncAck, body: dict, client: AsyncWebClient, conversation: Conversation) -> None:
    await ack()
    channel, ts = _where(body)
    call_id = await conversation.store.call_for_message(channel, ts) if channel and ts else None
    if call_id is not None:
        user = body["user"]
        await conversation.regenerate(call_id, user_id=user["id"], team_id=user.get("team_id"), client=client)
