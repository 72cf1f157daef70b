"""`flywheel stats` in the terminal: its options, the table, ``--json``.

The figures are computed once, by :func:`bot.stats.version_stats` (definitions there); this
module only reads the command line and writes them, with the helpers of :mod:`bot.figures`
that the App Home tab uses too.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import unicodedata
from collections.abc import Collection, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from bot.errors import ConfigError, database_error
from bot.figures import approval_bar, approval_text, duration, percent, usd
from bot.reports import add_traffic_arguments
from bot.settings import Settings
from bot.stats import VersionStats, utc, version_stats

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
            f"{r.calls:,}", percent(r.rated_share),
            f"{r.up:,}", f"{r.down:,}", approval_text(r.up, r.down, ascii_only=ascii_only),
            approval_bar(r.approval, full=full, empty=empty), percent(r.error_rate), _tokens(r), usd(r.cost_usd),
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


def _tokens(row: VersionStats) -> str:
    if row.prompt_tokens is None and row.completion_tokens is None:
        return "–"
    n = (row.prompt_tokens or 0) + (row.completion_tokens or 0)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= limit:
            return f"{n / limit:.1f}{suffix}"
    return str(n)


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
    return utc(when)  # type: ignore[return-value]


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
