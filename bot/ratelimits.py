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
    "users.info": (90, 60.0),  # Tier 4; bot.people caches the answers
}
PER_CHANNEL = frozenset({"chat.postMessage"})
RESERVED_AT_MOST = 300.0  # seconds a reserved slot counts while its call has not been made


class Reservation:
    """A slot held for a call to come (`RateBudget.reserve`)."""

    def __init__(self, key: tuple[str, ...], slot: list[float]):
        self.key = key
        self.slot = slot
        self.used = False  # made, or given back


class RateBudget:
    def __init__(self, limits: dict[str, tuple[int, float]] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.limits = dict(DEFAULT_LIMITS if limits is None else limits)
        self.clock = clock
        # Per key, the slots taken: [time]. A slot's time is when its call *finished* (Slack may
        # count it any time until then); a call in flight holds its slot with time +inf.
        self._used: dict[tuple[str, ...], deque[list[float]]] = {}
        # Per key, the calls waiting for a slot, first come first served. Only the first one
        # waits on a timer (or for a call in flight to finish); the others wait for their turn,
        # so a hundred answers queued on one channel cost no more than one.
        self._queues: dict[tuple[str, ...], deque[asyncio.Event]] = {}
        self._rushing = False

    def rush(self) -> None:
        """From now on required calls no longer wait for a slot (the process is about to exit)."""
        self._rushing = True
        for queue in self._queues.values():
            for waiter in queue:
                waiter.set()

    def _key(self, method: str, team: str | None, channel: str | None) -> tuple[str, ...]:
        return (method, team or "", channel or "" if method in PER_CHANNEL else "")

    def _slots(self, key: tuple[str, ...]) -> tuple[deque[list[float]], int, float] | None:
        if key[0] not in self.limits:
            return None
        calls, per = self.limits[key[0]]
        used = self._used.setdefault(key, deque())
        now = self.clock()
        while used and used[0][0] <= now - per:
            used.popleft()
        if used and len(used) >= calls and used[0][0] > now:  # a call in flight or a reserved slot heads the
            kept = [s for s in used if s[0] > now - per]  # line: slots after it may have expired
            used.clear()
            used.extend(kept)
        return used, calls, per

    def _try(self, key: tuple[str, ...]) -> list[float] | None:
        slots = self._slots(key)
        if slots is None:
            return [0.0]  # an unlimited method: a slot nobody counts
        used, calls, _ = slots
        if len(used) >= calls:
            return None
        slot = [float("inf")]
        used.append(slot)
        return slot

    def _until_free(self, key: tuple[str, ...]) -> float | None:
        """Seconds until the oldest finished slot leaves the window; None while every slot is
        held by a call in flight (its end wakes the queue)."""
        slots = self._slots(key)
        assert slots is not None
        used, _, per = slots
        finished = [s[0] for s in used if s[0] != float("inf")]
        return max(min(finished) + per - self.clock(), 0.001) if finished else None

    async def _wait(self, key: tuple[str, ...]) -> list[float]:
        queue = self._queues.setdefault(key, deque())
        if not queue and (slot := self._try(key)) is not None:
            return slot
        me = asyncio.Event()
        queue.append(me)
        try:
            while True:
                timer = None
                if queue[0] is me:
                    if self._rushing:
                        return [0.0]  # a slot nobody counts
                    if (slot := self._try(key)) is not None:
                        return slot
                    if (delay := self._until_free(key)) is not None:
                        timer = asyncio.get_running_loop().call_later(delay, me.set)
                await me.wait()
                me.clear()
                if timer is not None:
                    timer.cancel()
        finally:
            queue.remove(me)
            if queue:
                queue[0].set()  # the next in line takes its turn

    def _finished(self, key: tuple[str, ...], slot: list[float]) -> None:
        slot[0] = self.clock()
        if queue := self._queues.get(key):
            queue[0].set()  # the first waiter can now tell when this slot frees

    def try_take(self, method: str, *, team: str | None, channel: str | None = None) -> bool:
        """Take a slot if one is free now (counted from now); False means skip this optional call."""
        key = self._key(method, team, channel)
        slot = None if self._queues.get(key) else self._try(key)  # never ahead of a waiting call
        if slot is not None:
            slot[0] = self.clock()
        return slot is not None

    async def take(self, method: str, *, team: str | None, channel: str | None = None) -> None:
        """Take a slot (counted from now), waiting for one if the budget is spent."""
        key = self._key(method, team, channel)
        self._finished(key, await self._wait(key))

    def reserve(self, method: str, *, team: str | None, channel: str | None = None) -> Reservation | None:
        """Hold a slot now for a call that must happen later without waiting (the update that
        turns a Thinking… note into the answer); None if none is free. Pass it to `call`, or
        `release` it if the call is not needed. One never used stops counting after
        ``RESERVED_AT_MOST`` seconds (plus the method's window)."""
        key = self._key(method, team, channel)
        slot = None if self._queues.get(key) else self._try(key)
        if slot is None:
            return None
        slot[0] = self.clock() + RESERVED_AT_MOST
        return Reservation(key, slot)

    def release(self, reservation: Reservation | None) -> None:
        """Give back a reserved slot whose call was not made."""
        if reservation is None or reservation.used:
            return
        reservation.used = True
        if (i := self._held(reservation)) is not None:
            del self._used[reservation.key][i]
            if queue := self._queues.get(reservation.key):
                queue[0].set()

    def _held(self, reservation: Reservation) -> int | None:
        """Where the reserved slot is in its window (None once it has expired)."""
        return next((i for i, slot in enumerate(self._used.get(reservation.key, ())) if slot is reservation.slot),
                    None)

    async def call(self, client: Any, method: str, *, team: str | None, optional: bool = False,
                   reserved: Reservation | None = None, **params: Any) -> Any:
        """Call a Web API method within the budget; the slot counts until the call has finished.
        With ``optional``, returns None instead of waiting when the budget is short; with a
        ``reserved`` slot of this method (`reserve`), goes at once."""
        key = self._key(method, team, params.get("channel"))
        slot: list[float] | None
        if reserved is not None and not reserved.used and reserved.key == key and self._held(reserved) is not None:
            reserved.used = True
            slot = reserved.slot
            slot[0] = float("inf")  # in flight
        elif optional:
            slot = None if self._queues.get(key) else self._try(key)  # never ahead of a waiting call
            if slot is None:
                return None
        else:
            slot = await self._wait(key)
        try:
            return await getattr(client, method.replace(".", "_"))(**params)
        finally:
            self._finished(key, slot)


class Turns:
    """Lets one waiter through per turn of the event loop, in arrival order.

    Starting a model request costs ~1.5 ms of CPU in the SDK. Answers whose database claims
    were batched wake together, and fifty such starts in one turn would hold every socket
    for 75 ms; Slack's deliveries, arriving meanwhile, would wait for their acks. One start
    per turn puts the loop's I/O between any two of them."""

    def __init__(self) -> None:
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._letting: asyncio.Task[None] | None = None

    async def turn(self) -> None:
        if self._letting is None and not self._waiting:
            # Nobody waits: go now, and hold the next comers until a turn has passed.
            self._letting = asyncio.get_running_loop().create_task(self._let())
            return
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        await future  # cancelled while waiting: the future is cancelled too, and skipped

    async def _let(self) -> None:
        try:
            while True:
                await asyncio.sleep(0)
                if not self._wake_next():
                    return
        finally:
            self._letting = None

    def _wake_next(self) -> bool:
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_result(None)
                return True
        return False
