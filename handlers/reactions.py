"""👍/👎 reactions on the bot's answers are votes; removing the reaction withdraws the vote."""

from bot.feedback import Reaction, Votes


async def on_reaction_added(event: dict, votes: Votes) -> None:
    await votes.reaction(Reaction.from_event(event), added=True)


async def on_reaction_removed(event: dict, votes: Votes) -> None:
    await votes.reaction(Reaction.from_event(event), added=False)
