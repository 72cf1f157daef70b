"""Plain messages: DMs to the bot, and follow-ups in threads the bot already answered in.

A channel message that mentions the bot is left to `app_mention` (Slack sends both).
Edits, deletions, joins and other bots' messages are not answered.
"""

from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.conversation import Ask, BotIdentity, Conversation
from bot.models import Trigger
from bot.slack_text import mentions, strip_mention, unescape

ANSWERABLE_SUBTYPES = (None, "thread_broadcast", "file_share")


async def on_message(event: dict, context: AsyncBoltContext, client: AsyncWebClient,
                     conversation: Conversation) -> None:
    if event.get("subtype") not in ANSWERABLE_SUBTYPES or event.get("bot_id"):
        return
    bot_user = context.bot_user_id or ""
    channel, ts = event.get("channel"), event.get("ts")
    thread_ts = event.get("thread_ts")
    text = event.get("text") or ""
    if not channel or not ts or not event.get("user"):
        return
    direct = event.get("channel_type") == "im"
    if not direct and mentions(text, bot_user):
        return  # the app_mention event answers it
    prompt = await conversation.followup_prompt(channel, thread_ts) if thread_ts else None
    text = unescape(strip_mention(text, bot_user))  # Slack sends &, <, > escaped
    if direct:
        if await conversation.tell_if_broken(client, text, channel=channel, user=event["user"],
                                thread_ts=thread_ts):
            return
        routed, routed_text = conversation.prompts.route(text, channel=channel)
        if prompt is None or routed_text != text:  # a named prompt wins, else the thread's
            prompt, text = routed, routed_text
        trigger = Trigger.DM
    elif prompt is None:
        return  # a thread the bot never answered in, or a top-level channel message
    else:
        trigger = Trigger.THREAD
    if prompt is None:
        return
    ask = Ask(trigger=trigger, prompt=prompt, text=text, channel_id=channel, user_id=event["user"],
              team_id=context.team_id, ts=ts, thread_ts=thread_ts)
    await conversation.reply_to_message(ask, client, BotIdentity(context.bot_user_id, context.bot_id))
