"""Daily budgets (team.yaml): checked before the model is asked, safe across processes.

Before a call, its estimate (the messages' length / 4 for input, plus up to OUTPUT_ESTIMATE
output tokens, priced like the call will be) is *held* against every scope that has a limit:
the workspace total, the channel, the person. The hold is one atomic, conditional update per
scope (bot.store.Store.hold_budget), so two processes on one PostgreSQL cannot both take the
last room. After the call, the hold is corrected to what the call really used. A day is a UTC
day. Admins are exempt. If the database cannot be reached the call goes ahead (answering is the
job; the call row is kept by the journal) and a warning is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.errors import FlywheelError

if TYPE_CHECKING:
    from bot.pricing import PriceTable
    from bot.store import Store
    from bot.team import Limits, Team

log = logging.getLogger(__name__)

OUTPUT_ESTIMATE = 1000  # output tokens held for a call (less if the prompt caps its output lower)
DB_WAIT = 2.0  # seconds the check may take before the call goes ahead unchecked


@dataclass(frozen=True)
class Hold:
    day: str
    keys: tuple[tuple[str, str], ...]
    tokens: int
    cost_usd: float


class OverBudget(FlywheelError):
    """A daily limit is reached: the call is refused, politely and specifically."""

    def __init__(self, scope: str, kind: str, limit: float, used: float, resets: datetime, now: datetime):
        self.scope, self.kind, self.limit, self.used, self.resets = scope, kind, limit, used, resets
        super().__init__(f"daily {scope} {kind} limit reached ({_amount(kind, used)} of {_amount(kind, limit)})")
        whose = {"user": "your", "channel": "this channel's", "total": "the workspace's"}[scope]
        left = resets - now
        hours, minutes = divmod(max(0, int(left.total_seconds()) // 60), 60)
        self.user_message = (
            f"Sorry, {whose} daily Flywheel budget of {_amount(kind, limit)} is used up ({_amount(kind, used)} "
            f"so far today). It resets at 00:00 UTC, in {hours} h {minutes} min. An admin can raise it in "
            "prompts/team.yaml.")

    @property
    def error_type(self) -> str:
        return f"Budget.{self.scope}_{self.kind}"


def estimate(messages: list[dict[str, Any]], options: dict[str, Any]) -> tuple[int, int]:
    """(input, output) tokens held for a call: about 4 characters a token (plus 4 per message),
    and the prompt's output cap or OUTPUT_ESTIMATE, whichever is lower."""
    cap = options.get("max_completion_tokens") or options.get("max_tokens") or OUTPUT_ESTIMATE
    return (sum(len(str(m.get("content") or "")) for m in messages) // 4 + 4 * len(messages),
            min(int(cap), OUTPUT_ESTIMATE))


class Budgets:
    def __init__(self, store: Store, prices: PriceTable, clock: Callable[[], datetime] | None = None):
        self.store = store
        self.prices = prices
        self.clock = clock or (lambda: datetime.now(UTC))  # which UTC day it is

    async def hold(self, team: Team, *, user_id: str | None, channel_id: str | None, model: str,
                   messages: list[dict[str, Any]], options: dict[str, Any]) -> Hold | None:
        """Hold this call's estimate, or raise OverBudget. None: nothing limits this call."""
        if user_id in team.admins:
            return None
        claims: list[tuple[str, str, Limits]] = []  # always in this order: no two holds wait on each other
        if team.total:
            claims.append(("total", "", team.total))
        if channel_id and (limits := team.channel_limits(channel_id)):
            claims.append(("channel", channel_id, limits))
        if user_id and team.per_user:
            claims.append(("user", user_id, team.per_user))
        if not claims:
            return None
        prompt_tokens, output_tokens = estimate(messages, options)
        cost = self.prices.cost(model, prompt_tokens, output_tokens) or 0.0
        tokens = prompt_tokens + output_tokens
        now = self.clock()
        day = now.date().isoformat()
        try:
            over = await asyncio.wait_for(self.store.hold_budget(day, claims, tokens, cost), DB_WAIT)
        except Exception as exc:  # noqa: BLE001 - an outage must not stop answers
            log.warning("budgets not checked for this call: the database is unavailable (%s)", type(exc).__name__)
            return None
        if over is not None:
            scope, key, limits = claims[over]
            try:
                used_tokens, used_cost = await asyncio.wait_for(self.store.budget_used(day, scope, key), DB_WAIT)
            except Exception:  # noqa: BLE001 - the refusal stands; only the figure is missing
                used_tokens, used_cost = 0, 0.0
            kind = ("tokens" if limits.tokens is not None and used_tokens + tokens > limits.tokens
                    else "cost_usd")
            limit = limits.tokens if kind == "tokens" else limits.cost_usd
            resets = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
            raise OverBudget(scope, kind, float(limit or 0), used_tokens if kind == "tokens" else used_cost, resets,
                             now)
        return Hold(day, tuple((scope, key) for scope, key, _ in claims), tokens, cost)

    async def settle(self, hold: Hold | None, tokens: int | None, cost_usd: float | None) -> None:
        """Correct ``hold`` to what the call used (None: nothing known, e.g. it failed before usage)."""
        if hold is None:
            return
        try:
            await asyncio.wait_for(self.store.settle_budget(
                hold.day, hold.keys, (tokens or 0) - hold.tokens, (cost_usd or 0.0) - hold.cost_usd), DB_WAIT)
        except Exception as exc:  # noqa: BLE001 - the estimate stays counted: errs on the safe side
            log.warning("budget usage not corrected after a call (%s)", type(exc).__name__)


def _amount(kind: str, value: float) -> str:
    return f"{int(value):,} tokens" if kind == "tokens" else f"${value:,.2f}"
