"""👍/👎 reactions on the bot's answers are votes; removing the reaction withdraws the vote.

The reaction is kept in the local journal *before* Slack gets its acknowledgement (this is
listener middleware): one append to a file, no database. Whether it is on one of the bot's
answers is settled when the journal writes it to the database. If it can be neither kept
nor stored, the request fails and Slack delivers the reaction again later.
"""

from slack_bolt.context.async_context import AsyncBoltContext

from bot.conversation import Conversation
from bot.feedback import Reaction, Votes


async def record_added(event: dict, context: AsyncBoltContext, votes: Votes, next) -> None:
    if _on_bot_message(event, context):
        await votes.reaction(Reaction.from_event(event), added=True)
    await next()


async def record_removed(event: dict, context: AsyncBoltContext, votes: Votes, next) -> None:
    if _on_bot_message(event, context):
        await votes.reaction(Reaction.from_event(event), added=False)
    await next()


def _on_bot_message(event: dict, context: AsyncBoltContext) -> bool:
    """Slack says whose message was reacted to (``item_user``): only the bot's can be answers."""
    author = event.get("item_user")
    return author is None or not context.bot_user_id or author == context.bot_user_id


async def recorded(event: dict, conversation: Conversation) -> None:
    """The vote is kept; Bolt acknowledges the event. What it says of the conversation (a group
    DM?) is remembered for the calls logged there."""
    item = event.get("item") or {}
    conversation.saw_channel(item.get("channel"), item.get("channel_type"))
