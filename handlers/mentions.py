"""@mentions in channels: `@flywheel [prompt] text`, answered in the mention's thread."""

from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.conversation import Ask, BotIdentity, Conversation
from bot.models import Trigger
from bot.slack_text import strip_mention, unescape


async def on_app_mention(event: dict, context: AsyncBoltContext, client: AsyncWebClient,
                         conversation: Conversation) -> None:
    channel, ts = event.get("channel"), event.get("ts")
    if event.get("bot_id") or event.get("subtype") == "message_changed" or not channel or not ts:
        return
    text = unescape(strip_mention(event.get("text") or "", context.bot_user_id or ""))
    if await conversation.tell_if_broken(client, text, channel=channel, user=event.get("user"),
                            thread_ts=event.get("thread_ts")):
        return
    prompt, text = conversation.prompts.route(text, channel=channel)
    if prompt is None:
        return
    ask = Ask(
        trigger=Trigger.MENTION, prompt=prompt, text=text, channel_id=channel, user_id=event.get("user"),
        team_id=context.team_id, ts=ts, thread_ts=event.get("thread_ts") or ts,
    )
    await conversation.reply_to_message(ask, client, BotIdentity(context.bot_user_id, context.bot_id))
