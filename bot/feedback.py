"""Votes on answers: 👍/👎 reactions (any skin tone) become one vote per person per answer."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.settings import Settings
from bot.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reaction:
    user_id: str
    name: str  # without skin tone: "+1::skin-tone-3" -> "+1"
    channel_id: str
    ts: str

    @classmethod
    def from_event(cls, event: dict) -> Reaction | None:
        item = event.get("item") or {}
        if item.get("type") != "message" or not all((event.get("user"), event.get("reaction"),
                                                     item.get("channel"), item.get("ts"))):
            return None
        return cls(event["user"], event["reaction"].split("::")[0], item["channel"], item["ts"])


class Votes:
    def __init__(self, store: Store, settings: Settings):
        self.store = store
        self.up = settings.up_reactions
        self.down = settings.down_reactions

    def value(self, reaction_name: str) -> int | None:
        if reaction_name in self.up:
            return 1
        if reaction_name in self.down:
            return -1
        return None

    async def reaction(self, reaction: Reaction | None, *, added: bool) -> bool:
        """Record or withdraw a reaction vote; False if it is not a vote on a bot answer."""
        if reaction is None or (value := self.value(reaction.name)) is None:
            return False
        call_id = await self.store.call_for_message(reaction.channel_id, reaction.ts)
        if call_id is None:
            return False  # not one of the bot's answers
        if added:
            await self.store.set_feedback(call_id=call_id, user_id=reaction.user_id, source="reaction",
                                          name=reaction.name, value=value)
        else:
            await self.store.remove_feedback(call_id=call_id, user_id=reaction.user_id, source="reaction",
                                             name=reaction.name)
        log.info("vote %s%d on call %s", "+" if added else "withdrawn ", value, call_id)
        return True
