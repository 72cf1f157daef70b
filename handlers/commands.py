"""Slash commands: `/NAME text` for every prompt that declares `metadata.slack.command`."""

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.conversation import Ask, Conversation
from bot.models import Trigger


async def on_command(ack: AsyncAck, command: dict, client: AsyncWebClient, respond: AsyncRespond,
                     conversation: Conversation) -> None:
    name = command.get("command", "")
    prompt = conversation.prompts.by_command(name)
    if prompt is None:
        await ack(conversation.prompts.broken_note(name)
                  or f"No prompt answers `{name}` any more. Try `/ask`, or see `flywheel prompts`.")
        return
    if not prompt.allowed_in(command.get("channel_id")):
        where = ", ".join(f"<#{c}>" for c in sorted(prompt.channels or ()))
        await ack(f"`{name}` works only in {where}.")
        return
    text = (command.get("text") or "").strip()
    if not text:
        hint = f" {prompt.usage_hint}" if prompt.usage_hint else " text"
        await ack(f"Usage: `{name}{hint}`\n{prompt.description}".strip())
        return
    await ack()
    ask = Ask(trigger=Trigger.COMMAND, prompt=prompt, text=text, channel_id=command.get("channel_id"),
              user_id=command.get("user_id"), team_id=command.get("team_id"))
    await conversation.reply_to_command(ask, client, respond)
