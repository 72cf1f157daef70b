"""Plain messages: DMs to the bot, and follow-ups in threads the bot already answered in.

Edits, deletions, joins and other bots' messages are not answered; which of the rest to
answer, and with which prompt, `Conversation.route_message` decides.
"""

from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.conversation import BotIdentity, Conversation, Message

ANSWERABLE_SUBTYPES = (None, "thread_broadcast", "file_share")


async def on_message(event: dict, context: AsyncBoltContext, client: AsyncWebClient,
                     conversation: Conversation) -> None:
    conversation.saw_channel(event.get("channel"), event.get("channel_type"))  # any message: a group DM's too
    if event.get("subtype") not in ANSWERABLE_SUBTYPES or event.get("bot_id"):
        return
    channel, ts, user = event.get("channel"), event.get("ts"), event.get("user")
    if not channel or not ts or not user:
        return
    bot = BotIdentity(context.bot_user_id, context.bot_id)
    message = Message(channel_id=channel, ts=ts, text=event.get("text") or "", user_id=user, team_id=context.team_id,
                      thread_ts=event.get("thread_ts"), direct=event.get("channel_type") == "im",
                      channel_type=event.get("channel_type"))
    if (ask := await conversation.route_message(message, client, bot)) is not None:
        await conversation.reply_to_message(ask, client, bot)
