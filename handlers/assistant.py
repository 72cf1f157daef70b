"""Slack's assistant pane: the pane opened, its channel changed, a question asked in it.

Translation only; `bot.assistant.Assistant` decides what the bot does there.
"""

from typing import Any

from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.assistant import Assistant
from bot.conversation import BotIdentity


async def on_thread_started(event: dict, context: AsyncBoltContext, client: AsyncWebClient,
                            assistant: Assistant) -> None:
    await assistant.started(client, event.get("assistant_thread") or {}, team_id=context.team_id)


async def on_context_changed(event: dict, context: AsyncBoltContext, client: AsyncWebClient,
                             assistant: Assistant) -> None:
    await assistant.context_changed(client, event.get("assistant_thread") or {}, team_id=context.team_id)


async def in_pane(event: dict[str, Any], assistant: Assistant) -> bool:
    """Matcher: a message written in an assistant thread (the other messages go on to `messages`)."""
    return assistant.in_pane(event)


async def on_message(event: dict, context: AsyncBoltContext, client: AsyncWebClient, assistant: Assistant) -> None:
    await assistant.answer(event, client, BotIdentity(context.bot_user_id, context.bot_id), team_id=context.team_id)
