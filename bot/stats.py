"""`flywheel stats`: calls, votes, approval, cost and latency per prompt version.

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

import argparse
import asyncio
import hashlib
import json
import math
import sys
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from bot.errors import ConfigError, database_error
from bot.prompts import short_version
from bot.reports import add_traffic_arguments
from bot.settings import Settings

Z95 = 1.959963984540054  # two-sided 95 % normal quantile
BAR_WIDTH = 10


# -- figures ----------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval for a binomial proportion; None when ``n`` is 0.

    >>> low, high = wilson_interval(8, 10)
    >>> round(low, 4), round(high, 4)
    (0.4902, 0.9433)
    """
    if n <= 0:
        return None
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


class _Approval:
    """Approval of rated calls: up / (up + down), with its 95 % Wilson interval."""

    up: int
    down: int

    @property
    def approval(self) -> float | None:
        return approval(self.up, self.down)

    @property
    def approval_interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.up, self.up + self.down)


@dataclass(frozen=True)
class VersionStats(_Approval):
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
class Totals(_Approval):
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


def approval(up: int, down: int) -> float | None:
    return up / (up + down) if up + down else None


async def version_stats(store, *, since: datetime | None = None, until: datetime | None = None,
                        prompt: str | None = None, sources: Sequence[str] | None = ("slack",),
                        models: Sequence[str] | None = None) -> list[VersionStats]:
    """Per prompt version, model and source with calls in [since, until), from ``sources``
    (default: real Slack traffic only; None: all): prompt name, then oldest version first."""
    since, until = _utc(since), _utc(until)
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


# -- the terminal table -------------------------------------------------------------------


def current_versions(folder: Path) -> frozenset[str]:
    """The versions in the prompt files now: the sha256 of each file in ``folder``, loadable or not."""
    try:
        return frozenset(hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.prompty"))
    except OSError:
        return frozenset()


def format_table(rows: Sequence[VersionStats], *, current: Collection[str] = (), ascii_only: bool = False) -> str:
    """A readable table, one line per version (``*``: a version in ``current``), with a legend."""
    up, down, full, empty = ("+1", "-1", "#", ".") if ascii_only else ("👍", "👎", "█", "░")
    sources = any(r.source != "slack" for r in rows)  # practice rows asked for: say which is which
    header = ("PROMPT", "VERSION", "MODEL", *(("SOURCE",) if sources else ()), "CALLS", "RATED", up, down,
              "APPROVAL (95% CI)", "", "ERRORS", "TOKENS", "COST", "PER CALL", "P50", "P95")
    first_number = header.index("CALLS")
    right = {i for i in range(first_number, len(header)) if header[i] not in ("APPROVAL (95% CI)", "")}
    lines = []
    for r in rows:
        lines.append((
            r.prompt, r.short_version + (" *" if r.version in current else ""), r.model, *((r.source,) if sources else ()),
            f"{r.calls:,}", _percent(r.rated_share),
            f"{r.up:,}", f"{r.down:,}", approval_text(r.up, r.down, ascii_only=ascii_only),
            approval_bar(r.approval, full=full, empty=empty), _percent(r.error_rate), _tokens(r), usd(r.cost_usd),
            usd(r.cost_per_call_usd), duration(r.latency_p50_ms), duration(r.latency_p95_ms),
        ))
    table = [header, *lines]
    widths = [max(_width(row[i]) for row in table) for i in range(len(header))]
    out = []
    for row in table:
        cells = [_pad(cell, widths[i], right=i in right) for i, cell in enumerate(row)]
        out.append("  ".join(cells).rstrip())
    out += [
        "",
        f"* the version in its prompt file now.  RATED: calls with a vote.  {up} / {down}: calls with more {up} than {down} votes / "
        "fewer (each person counted once).",
        f"APPROVAL: {up} / ({up} + {down}) with a 95% Wilson interval.  TOKENS: prompt + completion.  "
        "COST: calls with a known price.  P50/P95: nearest-rank latency.",
    ]
    text = "\n".join(out)
    return text.replace("–", "-") if ascii_only else text


def approval_text(up: int, down: int, *, ascii_only: bool = False) -> str:
    """``"82% (67–91)"``, or a dash when nothing is rated."""
    interval = wilson_interval(up, up + down)
    dash = "-" if ascii_only else "–"
    if interval is None:
        return dash
    return f"{round(100 * up / (up + down))}% ({round(100 * interval[0])}{dash}{round(100 * interval[1])})"


def approval_bar(share: float | None, *, full: str = "█", empty: str = "░", width: int = BAR_WIDTH) -> str:
    if share is None:
        return ""
    filled = round(share * width)
    return full * filled + empty * (width - filled)


def usd(value: float | None) -> str:
    """Dollars: ``$1,234``, ``$12.34``, and two significant digits below a dollar (``$0.024``)."""
    if value is None:
        return "–"
    if value == 0:
        return "$0"
    if value >= 100:
        return f"${value:,.0f}"
    if value >= 1:
        return f"${value:,.2f}"
    decimals = min(8, 1 - math.floor(math.log10(value)))
    return f"${value:.{decimals}f}"


def duration(ms: int | None) -> str:
    if ms is None:
        return "–"
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms // 60_000}m{ms % 60_000 // 1000:02d}s"


def _tokens(row: VersionStats) -> str:
    if row.prompt_tokens is None and row.completion_tokens is None:
        return "–"
    n = (row.prompt_tokens or 0) + (row.completion_tokens or 0)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= limit:
            return f"{n / limit:.1f}{suffix}"
    return str(n)


def _percent(share: float | None) -> str:
    if share is None:
        return "–"
    if 0 < share < 0.01:
        return "<1%"
    if 0.99 < share < 1:
        return ">99%"
    return f"{round(100 * share)}%"


def _width(text: str) -> int:
    """Terminal columns: wide (emoji, CJK) characters take two."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)


def _pad(text: str, width: int, *, right: bool) -> str:
    gap = " " * (width - _width(text))
    return gap + text if right else text + gap


# -- command line ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=_since, metavar="WHEN",
                        help="only calls from this UTC date or datetime on (ISO 8601, e.g. 2025-06-01)")
    parser.add_argument("--until", type=_until, metavar="WHEN",
                        help="only calls before this UTC datetime; a date includes that whole day")
    parser.add_argument("--prompt", metavar="NAME", help="only this prompt")
    add_traffic_arguments(parser)
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list, one object per prompt version, model and source")


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings.require()
    if args.since and args.until and args.until <= args.since:
        print("flywheel: --until must be later than --since", file=sys.stderr)
        return 2
    sources = args.sources or ["slack"]
    rows = asyncio.run(_load(settings.database_url, since=args.since, until=args.until, prompt=args.prompt,
                             sources=sources, models=args.models))
    current = current_versions(settings.prompts_dir)
    if args.json:
        print(json.dumps([{**r.to_json(), "current": r.version in current} for r in rows], indent=2,
                         ensure_ascii=False))
    elif rows:
        print(format_table(rows, current=current, ascii_only=not _can_print("👍█–░")))
    else:
        where = f" for prompt {args.prompt!r}" if args.prompt else ""
        where += f" to {' or '.join(args.models)}" if args.models else ""
        where += f" from {' or '.join(sources)}" if args.sources else ""
        print(f"no calls logged{where}" + (" in that period" if args.since or args.until else " yet"))
        if not args.sources:  # a new user's playground session: say where those calls went
            practice = asyncio.run(_load(settings.database_url, since=args.since, until=args.until,
                                         prompt=args.prompt, sources=None, models=args.models))
            if practice:
                kinds = sorted({r.source for r in practice})
                n = sum(r.calls for r in practice)
                print(f"({n:,} practice call{'s' if n != 1 else ''} from {' and '.join(kinds)} not counted: "
                      f"add --source {kinds[0]} to see them)")
    return 0


async def _load(url: str, **filters: Any) -> list[VersionStats]:
    from bot.store import Store

    if _missing_sqlite_file(url):
        return []
    store = Store(url)
    try:
        if await store.revision() is None:
            print("flywheel: the database has no Flywheel tables yet (run `flywheel db upgrade`)", file=sys.stderr)
            return []
        return await version_stats(store, **filters)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any driver error: one line, no traceback
        raise database_error("read", exc) from exc
    finally:
        await store.close()


def _missing_sqlite_file(url: str) -> bool:
    """Don't create an empty SQLite file just to report that nothing is logged."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    database = u.database or ""
    return u.get_backend_name() == "sqlite" and bool(database) and database != ":memory:" \
        and not database.startswith("file:") and not Path(database).exists()


def parse_when(text: str, *, end_of_day: bool = False) -> datetime:
    """An ISO date or datetime as an aware UTC datetime (naive means UTC). A bare date is
    its midnight, or the next midnight with ``end_of_day`` (so that the day is included)."""
    text = text.strip()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        start = datetime.combine(day, time(), tzinfo=UTC)
        return start + timedelta(days=1) if end_of_day else start
    try:
        when = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO date or datetime (e.g. 2025-06-01 or 2025-06-01T14:30)") from None
    return _utc(when)  # type: ignore[return-value]


def _since(text: str) -> datetime:
    return parse_when(text)


def _until(text: str) -> datetime:
    return parse_when(text, end_of_day=True)


def _can_print(sample: str) -> bool:
    try:
        sample.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


# -- helpers --------------------------------------------------------------------------------


def _round_usd(value: float | None) -> float | None:
    """Cost sums to a billionth of a dollar, so float summing order (SQLite vs PostgreSQL) can't show."""
    return None if value is None else round(float(value), 9)


def _utc(value: datetime | None) -> datetime | None:
    """Naive means UTC; SQLite compares stored UTC wall times, so convert aware ones."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
