"""Calls, votes, approval, cost and latency per prompt version: one result object, computed once.

:func:`version_stats` reads them from the store as :class:`VersionStats` rows; the terminal
table and ``--json`` of `flywheel stats` (bot/stats_cli.py) and the App Home view (bot/home.py)
all write those rows, with the helpers of :mod:`bot.figures`.

Definitions (the same for the terminal table, ``--json`` and the App Home view):

- **calls**: logged model calls of that prompt version created in the window
  (``--since`` inclusive, ``--until`` exclusive; a bare ``--until`` date includes that day).
  Every status counts: ok, truncated, incomplete and error.
- **votes**: each person counts once per answer, by their latest active 👍/👎 signal
  (a changed vote counts as the new one, a withdrawn one not at all), whenever given.
  ``votes_up`` / ``votes_down`` are those person-votes summed over the calls.
- **rated**: calls with at least one vote. A rated call is **up** when it has more 👍
  than 👎, **down** when fewer, **tied** when as many (tied calls are rated but in neither).
- **approval** = up / (up + down), with a 95 % Wilson score interval
  (``approval_low`` / ``approval_high``); all three are null when up + down = 0.
- **errors**: calls with status ``error``; ``error_rate`` = errors / calls.
- **cost_usd**: the sum of the known costs, null when no call has one (unknown price);
  ``cost_per_call_usd`` = cost_usd / ``priced_calls`` (the calls with a known cost).
- **latency / ttft percentiles**: nearest rank over the calls with a recorded time,
  errors included (what people waited): the ``ceil(p/100 * n)``-th smallest value, always
  an observed value, computed the same way on SQLite and PostgreSQL.
- **first_seen**: when the version first appeared (all time); **newest**: the version of
  its prompt first seen last; **current** (``flywheel stats`` only, ``*`` in its table): the
  version in a file of the prompts folder now.

Rows are ordered by prompt name, then first_seen (older versions first).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.figures import Approval
from bot.prompts import short_version


@dataclass(frozen=True)
class VersionStats(Approval):
    """The figures of one prompt version over the window (see the module docstring)."""

    prompt: str
    version: str
    model: str  # the model asked for (a version answered by two models has two rows)
    source: str  # slack | playground | try | replay
    first_seen: datetime | None
    newest: bool
    first_call_at: datetime | None
    last_call_at: datetime | None
    calls: int
    rated: int
    up: int
    down: int
    votes_up: int
    votes_down: int
    errors: int
    cost_usd: float | None
    priced_calls: int
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_p50_ms: int | None
    latency_p95_ms: int | None
    ttft_p50_ms: int | None

    @property
    def short_version(self) -> str:
        return short_version(self.version)

    @property
    def tied(self) -> int:
        return self.rated - self.up - self.down

    @property
    def rated_share(self) -> float | None:
        return self.rated / self.calls if self.calls else None


    @property
    def error_rate(self) -> float | None:
        return self.errors / self.calls if self.calls else None

    @property
    def cost_per_call_usd(self) -> float | None:
        return _round_usd(self.cost_usd / self.priced_calls) if self.cost_usd is not None and self.priced_calls \
            else None

    def to_json(self) -> dict[str, Any]:
        interval = self.approval_interval
        return {
            "prompt": self.prompt,
            "version": self.version,
            "model": self.model,
            "source": self.source,
            "newest": self.newest,
            "first_seen": _iso(self.first_seen),
            "first_call_at": _iso(self.first_call_at),
            "last_call_at": _iso(self.last_call_at),
            "calls": self.calls,
            "rated": self.rated,
            "rated_share": self.rated_share,
            "up": self.up,
            "down": self.down,
            "tied": self.tied,
            "votes_up": self.votes_up,
            "votes_down": self.votes_down,
            "approval": self.approval,
            "approval_low": interval[0] if interval else None,
            "approval_high": interval[1] if interval else None,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "cost_usd": self.cost_usd,
            "cost_per_call_usd": self.cost_per_call_usd,
            "priced_calls": self.priced_calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "ttft_p50_ms": self.ttft_p50_ms,
        }


@dataclass(frozen=True)
class Totals(Approval):
    """Figures summed over several versions (approval pools their up and down calls)."""

    calls: int
    rated: int
    up: int
    down: int
    errors: int
    cost_usd: float | None



def totals(rows: Iterable[VersionStats]) -> Totals:
    rows = list(rows)
    costs = [r.cost_usd for r in rows if r.cost_usd is not None]
    return Totals(
        calls=sum(r.calls for r in rows), rated=sum(r.rated for r in rows), up=sum(r.up for r in rows),
        down=sum(r.down for r in rows), errors=sum(r.errors for r in rows),
        cost_usd=_round_usd(math.fsum(costs)) if costs else None,
    )


async def version_stats(store, *, since: datetime | None = None, until: datetime | None = None,
                        prompt: str | None = None, sources: Sequence[str] | None = ("slack",),
                        models: Sequence[str] | None = None) -> list[VersionStats]:
    """Per prompt version, model and source with calls in [since, until), from ``sources``
    (default: real Slack traffic only; None: all): prompt name, then oldest version first."""
    since, until = utc(since), utc(until)
    rows = await store.usage_by_version(since=since, until=until, prompt=prompt, sources=sources, models=models,
                                        percentiles=(50, 95))
    stats = [
        VersionStats(
            prompt=r["prompt_name"], version=r["prompt_version"], model=r["model"], source=r["source"],
            first_seen=r["first_seen"], newest=r["newest"],
            first_call_at=r["first_call_at"], last_call_at=r["last_call_at"],
            calls=int(r["calls"]), rated=int(r["rated"]), up=int(r["up"]), down=int(r["down"]),
            votes_up=int(r["votes_up"]), votes_down=int(r["votes_down"]), errors=int(r["errors"]),
            cost_usd=_round_usd(r["cost_usd"]), priced_calls=int(r["priced_calls"]),
            prompt_tokens=_int(r["prompt_tokens"]), completion_tokens=_int(r["completion_tokens"]),
            latency_p50_ms=r["latency_ms"].get(50), latency_p95_ms=r["latency_ms"].get(95),
            ttft_p50_ms=r["ttft_ms"].get(50),
        )
        for r in rows
    ]
    never = datetime.max.replace(tzinfo=UTC)
    return sorted(stats, key=lambda s: (s.prompt, s.first_seen or never, s.version, s.model, s.source))


# -- helpers --------------------------------------------------------------------------------


def _round_usd(value: float | None) -> float | None:
    """Cost sums to a billionth of a dollar, so float summing order (SQLite vs PostgreSQL) can't show."""
    return None if value is None else round(float(value), 9)


def utc(value: datetime | None) -> datetime | None:
    """Naive means UTC; SQLite compares stored UTC wall times, so convert aware ones."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
