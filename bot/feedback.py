"""Feedback on answers: votes, exclusion, and the controls shown under each answer.

👍/👎 reactions (any skin tone) and the 👍/👎 feedback buttons are one vote per person
per answer: each is a signal, and a person's latest active signal is their vote. The
exclude reaction (default 🚫 ``no_entry_sign``) keeps an answer out of training exports.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from bot.journal import Journal, new_op, within
from bot.settings import Settings


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


def retry_controls(feedback: dict[str, bool]) -> list[dict]:
    """The blocks under an apology: Regenerate alone (there is no answer to rate or fix)."""
    return answer_controls({"buttons": False, "fix": False, "regenerate": feedback.get("regenerate", True)})


class Votes:
    """Turns reactions and clicks into journal ops (`bot.journal`): kept on local disk before
    Slack is acknowledged, written to the database (where they find their answer) after."""

    def __init__(self, journal: Journal, settings: Settings):
        self.journal = journal
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
        """Keep a reaction vote, its withdrawal, or an exclusion; False if it is none of those.
        Whether it is on one of the bot's answers is settled when it reaches the database.
        Raises `NotKept` if it can be neither kept nor stored (Slack then delivers it again)."""
        if reaction is None:
            return False
        value = 0 if reaction.name == self.exclude else self.value(reaction.name)
        if value is None:
            return False
        await self.journal.keep(new_op(
            "reaction", channel=reaction.channel_id, ts=reaction.ts, user=reaction.user_id, name=reaction.name,
            value=value, added=added, event_ts=reaction.event_ts or _now_ts()))
        return True

    async def button(self, *, channel_id: str, ts: str, user_id: str, value: str,
                     action_ts: str | None = None) -> asyncio.Future[Any] | None:
        """Keep a click on an answer's 👍/👎 buttons (clicking your current choice again
        withdraws it); returns the future of its result in the database (`acknowledgement`).
        None if it is not a vote; raises `NotKept` if it cannot be kept."""
        vote = {"up": 1, "down": -1}.get(value)
        if vote is None:
            return None
        return await self.journal.keep(new_op("button", channel=channel_id, ts=ts, user=user_id, value=vote,
                                              event_ts=action_ts or _now_ts()))

    async def acknowledgement(self, kept: asyncio.Future[Any], *, channel_id: str, ts: str, user_id: str,
                              message: dict | None = None) -> str:
        """What to tell, privately, the person who clicked: their vote on the answer as it is
        stored, once it is (a button leaves no mark on the message for them to see), and which
        of their reactions on it no longer count. ``message``: the message clicked on, as the
        click's payload carries it (with its reactions)."""
        if await Journal.result(kept, ACK_WAIT) is None:  # its answer is still on its way, or an outage
            return VOTE_KEPT
        store = self.journal.store
        try:
            call_id = await within(store.call_for_message(channel_id, ts), ACK_WAIT)
            vote = (await within(store.votes(call_id), ACK_WAIT)).get(user_id) if call_id is not None else None
        except Exception:  # noqa: BLE001 - the vote is kept; only the read failed
            return VOTE_KEPT
        mine = [r.get("name", "") for r in (message or {}).get("reactions") or [] if user_id in (r.get("users") or [])]
        replaced = [f":{name}:" for name in mine if self.value(name.split("::")[0]) is not None]
        if vote is None:
            note = "Your vote on this answer is withdrawn."
        else:
            mark = "👍" if vote > 0 else "👎"
            note = f"Thanks! Your vote on this answer: {mark}. One vote per person: click {mark} again to take it back."
        if replaced:
            note += (f" Your {' '.join(replaced)} reaction on it no longer counts: remove it, or add it again to "
                     "vote with it.")
        return note


VOTE_KEPT = "Thanks! Your vote is saved; it counts as soon as my database has it."
ACK_WAIT = 5.0  # seconds a click's acknowledgement waits for the vote to be stored


def _now_ts() -> str:
    """Now, as Slack writes times ("1700000000.000100")."""
    return f"{time.time():.6f}"


# -- the "Fix it" modal ----------------------------------------------------------------------

MODAL_PART = 3000  # Slack's limit for one text input
MODAL_PARTS = 10


@dataclass(frozen=True)
class AnswerRef:
    """Which answer a fix is for: its call id when its row is in the database already, and the
    Slack message it was posted as (enough to find the row once it gets there)."""

    call_id: int | None = None
    channel: str | None = None
    ts: str | None = None

    def __bool__(self) -> bool:
        return self.call_id is not None or bool(self.channel and self.ts)


def fix_modal(answer_ref: AnswerRef, answer: str) -> dict:
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
        "type": "modal", "callback_id": FIX_VIEW,
        "private_metadata": json.dumps({k: v for k, v in vars(answer_ref).items() if v is not None}),
        "title": {"type": "plain_text", "text": "Fix this answer"},
        "submit": {"type": "plain_text", "text": "Save correction"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": blocks,
    }


def fix_submission(view: dict) -> tuple[AnswerRef, str]:
    """Which answer, and the corrected text, from a submitted fix modal."""
    try:
        meta = json.loads(view.get("private_metadata") or "{}")
        call_id = meta.get("call_id")
        ref = AnswerRef(int(call_id) if call_id is not None else None, str(meta.get("channel") or "") or None,
                        str(meta.get("ts") or "") or None)
    except (ValueError, TypeError, AttributeError):
        ref = AnswerRef()
    values = (view.get("state") or {}).get("values") or {}
    parts = [((values.get(f"part_{i}") or {}).get("text") or {}).get("value") or "" for i in range(MODAL_PARTS)]
    return ref, "\n".join(p for p in parts if p).strip()


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
