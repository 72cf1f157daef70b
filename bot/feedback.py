"""Feedback on answers: votes, exclusion, and the controls shown under each answer.

👍/👎 reactions (any skin tone) and the 👍/👎 feedback buttons are one vote per person
per answer: each is a signal, and a person's latest active signal is their vote. The
exclude reaction (default 🚫 ``no_entry_sign``) keeps an answer out of training exports.
"""

from __future__ import annotations

import json
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


VOTE_ACTION = "vote"
FIX_ACTION = "fix"
REGENERATE_ACTION = "regenerate"
FIX_SHORTCUT = "fix_answer"
FIX_VIEW = "fix_submit"


def answer_controls(feedback: dict[str, bool]) -> list[dict]:
    """The blocks under an answer's last message, as the prompt's ``metadata.feedback`` asks."""
    blocks: list[dict] = []
    if feedback.get("buttons", True):
        blocks.append({"type": "context_actions", "elements": [{
            "type": "feedback_buttons", "action_id": VOTE_ACTION,
            "positive_button": {"text": {"type": "plain_text", "text": "👍"}, "value": "up",
                                "accessibility_label": "Good answer"},
            "negative_button": {"text": {"type": "plain_text", "text": "👎"}, "value": "down",
                                "accessibility_label": "Bad answer"},
        }]})
    buttons = []
    if feedback.get("fix", True):
        buttons.append({"type": "button", "action_id": FIX_ACTION, "value": "fix",
                        "text": {"type": "plain_text", "text": "✏️ Fix it"}})
    if feedback.get("regenerate", True):
        buttons.append({"type": "button", "action_id": REGENERATE_ACTION, "value": "regenerate",
                        "text": {"type": "plain_text", "text": "🔄 Regenerate"}})
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    return blocks


class Votes:
    def __init__(self, store: Store, settings: Settings):
        self.store = store
        self.up = settings.up_reactions
        self.down = settings.down_reactions
        self.exclude = settings.exclude_reaction

    def value(self, reaction_name: str) -> int | None:
        if reaction_name in self.up:
            return 1
        if reaction_name in self.down:
            return -1
        return None

    async def reaction(self, reaction: Reaction | None, *, added: bool) -> bool:
        """Record or withdraw a reaction vote (or exclusion); False if it is neither, or not on
        one of the bot's answers."""
        if reaction is None:
            return False
        value = 0 if reaction.name == self.exclude else self.value(reaction.name)
        if value is None:
            return False
        call_id = await self.store.call_for_message(reaction.channel_id, reaction.ts)
        if call_id is None:
            return False  # not one of the bot's answers
        if value == 0:
            return await self._exclusion(call_id, reaction, added)
        signal = {"call_id": call_id, "user_id": reaction.user_id, "source": "reaction", "name": reaction.name,
                  "event_ts": reaction.event_ts}
        if added:
            changed = await self.store.set_feedback(**signal, value=value)
        else:
            changed = await self.store.remove_feedback(**signal)
        log.info("vote %+d on call %s %s%s", value, call_id, "added" if added else "withdrawn",
                 "" if changed else " (no change)")
        return True

    async def _exclusion(self, call_id: int, reaction: Reaction, added: bool) -> bool:
        """The answer stays out of training while anyone's exclude reaction is on it."""
        signal = {"call_id": call_id, "user_id": reaction.user_id, "source": "reaction", "name": reaction.name,
                  "event_ts": reaction.event_ts}
        if added:
            await self.store.set_feedback(**signal, value=0)
        else:
            await self.store.remove_feedback(**signal)
        excluded = await self.store.has_active_signal(call_id, reaction.name)
        await self.store.set_excluded(call_id, excluded)
        log.info("call %s %s training exports", call_id, "excluded from" if excluded else "back in")
        return True

    async def button(self, *, channel_id: str, ts: str, user_id: str, value: str) -> int | None:
        """A click on an answer's 👍/👎 buttons; clicking your current choice again withdraws it.
        Returns the call id, or None if the message is not one of the bot's answers."""
        call_id = await self.store.call_for_message(channel_id, ts)
        vote = {"up": 1, "down": -1}.get(value)
        if call_id is None or vote is None:
            return None
        signal = {"call_id": call_id, "user_id": user_id, "source": "button", "name": "feedback"}
        if (await self.store.signal_value(**signal)) == vote:
            await self.store.remove_feedback(**signal)
        else:
            await self.store.set_feedback(**signal, value=vote)
        return call_id


# -- the "Fix it" modal ----------------------------------------------------------------------

MODAL_PART = 3000  # Slack's limit for one text input
MODAL_PARTS = 10


def fix_modal(call_id: int, answer: str) -> dict:
    """A modal prefilled with the answer (or its current correction), in parts of 3,000 characters."""
    parts = _parts(answer, MODAL_PART)[:MODAL_PARTS] or [""]
    note = "Edit this into the answer you wish it had given: it becomes the training target for this question."
    if len(_parts(answer, MODAL_PART)) > MODAL_PARTS:
        note += f" (Only the first {MODAL_PART * MODAL_PARTS:,} characters fit here.)"
    blocks: list[dict] = [{"type": "context", "elements": [{"type": "mrkdwn", "text": note}]}]
    for i, part in enumerate(parts):
        label = "Corrected answer" if len(parts) == 1 else f"Corrected answer, part {i + 1} of {len(parts)}"
        element = {"type": "plain_text_input", "action_id": "text", "multiline": True, "max_length": MODAL_PART}
        if part:
            element["initial_value"] = part
        blocks.append({"type": "input", "block_id": f"part_{i}", "optional": i > 0,
                       "label": {"type": "plain_text", "text": label}, "element": element})
    return {
        "type": "modal", "callback_id": FIX_VIEW, "private_metadata": json.dumps({"call_id": call_id}),
        "title": {"type": "plain_text", "text": "Fix this answer"},
        "submit": {"type": "plain_text", "text": "Save correction"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": blocks,
    }


def fix_submission(view: dict) -> tuple[int | None, str]:
    """The call id and the corrected text from a submitted fix modal."""
    try:
        call_id = int(json.loads(view.get("private_metadata") or "{}")["call_id"])
    except (ValueError, KeyError, TypeError):
        call_id = None
    values = (view.get("state") or {}).get("values") or {}
    parts = [((values.get(f"part_{i}") or {}).get("text") or {}).get("value") or "" for i in range(MODAL_PARTS)]
    return call_id, "\n".join(p for p in parts if p).strip()


def _parts(text: str, size: int) -> list[str]:
    """Split at line breaks into pieces of at most ``size`` (a longer line is cut)."""
    parts: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > size:
            if current:
                parts.append(current)
                current = ""
            parts.append(line[:size])
            line = line[size:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > size:
            parts.append(current)
            current = line
        else:
            current = candidate
    if current:
        parts.append(current)
    return parts
