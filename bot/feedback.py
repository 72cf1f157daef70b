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
    event_ts: str | None = None  # when Slack saw it: orders redelivered events

    @classmethod
    def from_event(cls, event: dict) -> Reaction | None:
        item = event.get("item") or {}
        if item.get("type") != "message" or not all((event.get("user"), event.get("reaction"),
                                                     item.get("channel"), item.get("ts"))):
            return None
        return cls(event["user"], event["reaction"].split("::")[0], item["channel"], item["ts"],
                   event.get("event_ts"))


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
        signal = {"call_id": call_id, "user_id": reaction.user_id, "source": "reaction", "name": reaction.name,
                  "event_ts": reaction.event_ts}
        if added:
            changed = await self.store.set_feedback(**signal, value=value)
        else:
            changed = await self.store.remove_feedback(**signal)
        log.info("vote %+d on call %s %s%s", value, call_id, "added" if added else "withdrawn",
                 "" if changed else " (no change)")
        return True
