"""Slack's rate limits, planned for rather than hit.

Slack limits each app per workspace per method, shared by every conversation
(https://docs.slack.dev/apis/web-api/rate-limits): Tier 2 (~20/min) for
chat.startStream and chat.stopStream, Tier 3 (~50/min) for chat.update and
conversations.*, Tier 4 (~100/min) for chat.appendStream, and about one
chat.postMessage per second per channel. `RateBudget` keeps a margin under
each, per workspace (and per channel where Slack counts per channel).

Calls that must happen (start, stop, post, the final update) `take()` a slot
and wait for one if needed; calls that only show progress (appendStream,
intermediate chat.update) `try_take()` and are skipped when the budget is
short: answers then arrive with fewer updates, or as a single post, but never
with a 429. The budget is per process; several processes in one workspace
share Slack's limits, and the 429 retry handler covers what they overlap.

When the process shuts down and its grace period is over, `rush()` lets every
waiting call go at once: an answer that is complete, or the apology for one that
is not, is posted before the process exits (Slack allows short bursts, and the
429 retry handler covers the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

# method -> (calls, per seconds): about 90% of Slack's published tiers.
DEFAULT_LIMITS: dict[str, tuple[int, float]] = {
    "chat.startStream": (18, 60.0),
    "chat.stopStream": (18, 60.0),
    "chat.appendStream": (90, 60.0),
    "chat.update": (45, 60.0),
    "chat.delete": (45, 60.0),
    "chat.postMessage": (1, 1.0),  # per channel
    "conversations.replies": (45, 60.0),
    "conversations.history": (45, 60.0),
}
PER_CHANNEL = frozenset({"chat.postMessage"})


class RateBudget:
    def __init__(self, limits: dict[str, tuple[int, float]] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.limits = dict(DEFAULT_LIMITS if limits is None else limits)
        self.clock = clock
        # Per key, the slots taken: [time]. A slot's time is when its call *finished* (Slack may
        # count it any time until then); a call in flight holds its slot with time +inf.
        self._used: dict[tuple[str, ...], deque[list[float]]] = {}
        self._rushing = asyncio.Event()

    def rush(self) -> None:
        """From now on required calls no longer wait for a slot (the process is about to exit)."""
        self._rushing.set()

    def _slots(self, method: str, team: str | None, channel: str | None) -> tuple[deque[list[float]], int, float] | None:
        if method not in self.limits:
            return None
        calls, per = self.limits[method]
        key = (method, team or "", channel or "" if method in PER_CHANNEL else "")
        used = self._used.setdefault(key, deque())
        now = self.clock()
        while used and used[0][0] <= now - per:
            used.popleft()
        return used, calls, per

    def _try(self, method: str, team: str | None, channel: str | None) -> list[float] | None:
        slots = self._slots(method, team, channel)
        if slots is None:
            return [0.0]  # an unlimited method: a slot nobody counts
        used, calls, _ = slots
        if len(used) >= calls:
            return None
        slot = [float("inf")]
        used.append(slot)
        return slot

    async def _wait(self, method: str, team: str | None, channel: str | None) -> list[float]:
        while (slot := self._try(method, team, channel)) is None:
            if self._rushing.is_set():
                return [0.0]  # a slot nobody counts
            used, _, per = self._slots(method, team, channel)  # type: ignore[misc]
            oldest = min(s[0] for s in used)
            delay = min(max(oldest + per - self.clock(), 0.005), per) if oldest != float("inf") else 0.01
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rushing.wait(), delay)
        return slot

    def try_take(self, method: str, *, team: str | None, channel: str | None = None) -> bool:
        """Take a slot if one is free now (counted from now); False means skip this optional call."""
        slot = self._try(method, team, channel)
        if slot is not None:
            slot[0] = self.clock()
        return slot is not None

    async def take(self, method: str, *, team: str | None, channel: str | None = None) -> None:
        """Take a slot (counted from now), waiting for one if the budget is spent."""
        slot = await self._wait(method, team, channel)
        slot[0] = self.clock()

    async def call(self, client: Any, method: str, *, team: str | None, optional: bool = False,
                   **params: Any) -> Any:
        """Call a Web API method within the budget; the slot counts until the call has finished.
        With ``optional``, returns None instead of waiting when the budget is short."""
        channel = params.get("channel")
        slot = self._try(method, team, channel) if optional else await self._wait(method, team, channel)
        if slot is None:
            return None
        try:
            return await getattr(client, method.replace(".", "_"))(**params)
        finally:
            slot[0] = self.clock()
