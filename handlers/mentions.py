"""@mentions in channels: `@flywheel [prompt] text`, answered in the mention's thread."""

from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.conversation import BotIdentity, Conversation, Message


async def on_app_mention(event: dict, context: AsyncBoltContext, client: AsyncWebClient,
                         conversation: Conversation) -> None:
    channel, ts = event.get("channel"), event.get("ts")
    if event.get("bot_id") or event.get("subtype") == "message_changed" or not channel or not ts:
        return
    bot = BotIdentity(context.bot_user_id, context.bot_id)
    message = Message(channel_id=channel, ts=ts, text=event.get("text") or "", user_id=event.get("user"),
                      team_id=context.team_id, thread_ts=event.get("thread_ts"), mention=True)
    if (ask := await conversation.route_message(message, client, bot)) is not None:
        await conversation.reply_to_message(ask, client, bot)
