"""👍/👎 reactions on the bot's answers are votes; removing the reaction withdraws the vote.

The vote is written *before* Slack gets its acknowledgement (as listener middleware): if
the database is down the request fails, and Slack delivers the reaction again later.
"""

from bot.feedback import Reaction, Votes


async def record_added(event: dict, votes: Votes, next) -> None:
    await votes.reaction(Reaction.from_event(event), added=True)
    await next()


async def record_removed(event: dict, votes: Votes, next) -> None:
    await votes.reaction(Reaction.from_event(event), added=False)
    await next()


async def recorded() -> None:
    """Nothing left to do once the vote is written; Bolt acknowledges the event."""
