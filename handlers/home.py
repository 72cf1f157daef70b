"""App Home: the workspace's figures per prompt, fresh each time someone opens the tab."""

from datetime import UTC, datetime, timedelta

from slack_sdk.web.async_client import AsyncWebClient

from bot.conversation import Conversation

HOME_PERIOD = timedelta(days=30)  # what the tab sums up; keeps each open cheap on a large log


async def on_home_opened(event: dict, client: AsyncWebClient, conversation: Conversation) -> None:
    if event.get("tab", "home") == "home" and event.get("user"):
        await conversation.publish_home(client, event["user"], since=datetime.now(UTC) - HOME_PERIOD)
