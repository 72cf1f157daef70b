"""People by name: Slack user ids become display names for the model, and back into mentions.

The model reads a conversation better as ``Ann Lee: …`` and ``@Ann Lee`` than as ``<@U0123ABCD>``:
it can say who decided what, and it stops writing ids back (or inventing ``<@U_YOU>``). So:

- `People` looks names up with ``users.info``, once per person: answers are cached per process
  (bounded, with a TTL), concurrent askers for one id share a single request, every request goes
  through the shared `RateBudget`, and a lookup that fails or is slow gives ``None`` (the caller
  keeps the id, as before) without ever failing the answer.
- `Mentions` rewrites the model's streamed text before it is escaped and posted: ``@Ann Lee``, a
  person of the conversation, becomes the mention ``<@U…>`` Slack renders; a ``<@…>`` mention of
  anyone else loses its brackets, so a made-up id is never posted as a mention.

The log keeps what the model read and wrote (names), never the looked-up ids in place of text;
exports pseudonymise ids as before (names are content, like the rest of a message).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.ratelimits import RateBudget

log = logging.getLogger(__name__)

TTL = 3600.0  # seconds a name is kept (people rarely rename themselves)
FAILED_TTL = 60.0  # seconds a failed lookup is not retried
SIZE = 5_000  # names kept per process, least recently used first out
WAIT = 2.0  # seconds an answer waits for a name; the lookup goes on and fills the cache
NAME_CHARS = 60

# <@U123> and <@U123|label>, as Slack writes them (and as a model may copy them).
MENTION = re.compile(r"<@([UW][A-Z0-9_]{1,30})(?:\|([^<>|]{0,100}))?>")
# Anything shaped like a mention in model output, made-up ids included (<@U_YOU>, <@you>).
_ANY_MENTION = re.compile(r"<@([^<>|\s]{1,40})(?:\|([^<>|]{0,100}))?>")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f<>&@|:]+")


def display_name(user: dict[str, Any]) -> str | None:
    """The name Slack shows for a ``users.info`` user: the display name, else the real name."""
    profile = user.get("profile") or {}
    for raw in (profile.get("display_name"), profile.get("real_name"), user.get("real_name"), user.get("name")):
        if isinstance(raw, str) and (name := " ".join(_UNSAFE.sub(" ", raw).split())[:NAME_CHARS].strip()):
            return name
    return None


def mentioned(text: str) -> set[str]:
    """The user ids mentioned in a Slack text."""
    return {m.group(1) for m in MENTION.finditer(text or "")}


def name_mentions(text: str, people: dict[str, str | None]) -> str:
    """``<@U123>`` → ``@Ann Lee`` for everyone whose name is known; other mentions stay as they are."""
    def named(m: re.Match[str]) -> str:
        name = people.get(m.group(1))
        return f"@{name}" if name else m.group(0)

    return MENTION.sub(named, text) if "<@" in text else text


class People:
    """Display names of Slack users, looked up within the rate budget and cached."""

    def __init__(self, budget: RateBudget, *, ttl: float = TTL, failed_ttl: float = FAILED_TTL, size: int = SIZE,
                 wait: float = WAIT, clock: Callable[[], float] = time.monotonic):
        self.budget = budget
        self.ttl, self.failed_ttl, self.size, self.wait = ttl, failed_ttl, size, wait
        self.clock = clock
        self._known: OrderedDict[tuple[str, str], tuple[float, str | None]] = OrderedDict()
        self._asking: dict[tuple[str, str], asyncio.Task[str | None]] = {}

    async def names(self, client: Any, team: str | None, ids: Iterable[str | None]) -> dict[str, str | None]:
        """Each id's display name (None: unknown, keep the id), looked up concurrently."""
        wanted = sorted({i for i in ids if i})
        found = await asyncio.gather(*(self.name(client, team, i) for i in wanted))
        return dict(zip(wanted, found, strict=True))

    async def name(self, client: Any, team: str | None, user_id: str) -> str | None:
        key = (team or "", user_id)
        if (hit := self._known.get(key)) is not None:
            if hit[0] > self.clock():
                self._known.move_to_end(key)
                return hit[1]
            del self._known[key]
        task = self._asking.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._look_up(client, team, user_id))
            self._asking[key] = task
            task.add_done_callback(lambda _: self._asking.pop(key, None))
        try:  # shielded: one asker giving up does not cancel the lookup the others wait for
            return await asyncio.wait_for(asyncio.shield(task), self.wait)
        except TimeoutError:
            log.info("users.info for a person took over %gs; answering with the id", self.wait)
            return None

    async def _look_up(self, client: Any, team: str | None, user_id: str) -> str | None:
        name = None
        try:
            resp = await self.budget.call(client, "users.info", team=team, user=user_id)
            name = display_name(resp.get("user") or {})
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else None
            log.warning("users.info failed (%s); the id stands for the name", error)
        except Exception as exc:  # noqa: BLE001 - a name is a nicety: never fail the answer for it
            log.warning("users.info failed (%s); the id stands for the name", type(exc).__name__)
        self._keep((team or "", user_id), name)
        return name

    def _keep(self, key: tuple[str, str], name: str | None) -> None:
        self._known[key] = (self.clock() + (self.ttl if name else self.failed_ttl), name)
        self._known.move_to_end(key)
        while len(self._known) > self.size:
            self._known.popitem(last=False)


class Mentions:
    """Streamed model text → text for Slack, with ``@Name`` of a known person made a mention.

    ``feed(delta)`` returns what can be passed on now; text that might still become a name (an
    ``@`` followed by the start of one, an unclosed ``<@``) is held until it is decided, and
    ``close()`` returns the rest. With nobody known, text passes through unchanged."""

    def __init__(self, people: dict[str, str | None]):
        self.ids = set(people)
        by_name: dict[str, str | None] = {}
        for user_id, name in people.items():
            if name:  # two people with one name: neither is made a mention
                by_name[name.casefold()] = None if name.casefold() in by_name else user_id
        self._by_name = {n: i for n, i in by_name.items() if i}
        names = sorted(self._by_name, key=len, reverse=True)
        self._names = re.compile(r"(?<![\w@])@(" + "|".join(map(re.escape, names)) + r")(?!\w)",
                                 re.IGNORECASE) if names else None
        self._longest = max(map(len, names), default=0)
        self._held = ""

    def feed(self, delta: str) -> str:
        if not self.ids:
            return delta
        text = self._held + delta
        cut = self._undecided(text)
        self._held = text[cut:]
        return self._rewrite(text[:cut])

    def close(self) -> str:
        text, self._held = self._held, ""
        return self._rewrite(text) if text else ""

    def _undecided(self, text: str) -> int:
        """Where the text that may still turn into a name or a mention starts."""
        cut = len(text)
        opened = text.rfind("<@")
        if opened >= 0 and ">" not in text[opened:] and len(text) - opened <= 160:
            cut = opened
        if self._names is not None:
            at = text.find("@", max(0, len(text) - self._longest - 1))
            while 0 <= at < cut:
                tail = text[at + 1:].casefold()
                if any(n.startswith(tail) for n in self._by_name):
                    return at
                at = text.find("@", at + 1)
        return cut

    def _rewrite(self, text: str) -> str:
        if "<@" in text:
            text = _ANY_MENTION.sub(self._mention, text)
        if self._names is not None and "@" in text:
            text = self._names.sub(lambda m: f"<@{self._by_name[m.group(1).casefold()]}>", text)
        return text

    def _mention(self, m: re.Match[str]) -> str:
        if m.group(1) in self.ids:
            return f"<@{m.group(1)}>"
        return "@" + (m.group(2) or m.group(1))  # nobody here: text, never a made-up mention
