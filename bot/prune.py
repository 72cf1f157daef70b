"""`flywheel prune --older-than 90d [--dry-run]`: remove old text from the log, keep the figures.

What goes: each older call's messages, request, answer and error text, its corrections, and the
links from its Slack messages (votes on those messages no longer reach it). What stays: every
call's prompt, version, model, tokens, cost, timing, and its votes as counts. Safe while the bot
runs: small transactions with pauses between (see bot.store.Store.prune).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from bot.errors import ConfigError

if TYPE_CHECKING:
    from bot.settings import Settings

_DURATION = re.compile(r"^\s*(\d+)\s*([dhw])\s*$", re.IGNORECASE)
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``2w`` -> a timedelta (argparse type: a clear error otherwise)."""
    found = _DURATION.match(text)
    if not found or int(found.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90d, 12h or 2w")
    return int(found.group(1)) * _UNITS[found.group(2).lower()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--older-than", required=True, type=duration, metavar="DURATION",
                        help="remove the text of calls older than this: 90d, 12h, 2w")
    parser.add_argument("--dry-run", action="store_true", help="count what would go; change nothing")


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings.require()
    before = datetime.now(UTC) - args.older_than
    counts = asyncio.run(_prune(settings.database_url, before, args.dry_run))
    what = (f"the text of {counts['calls']:,} call(s) older than {before:%Y-%m-%d %H:%M} UTC, "
            f"{counts['corrections']:,} correction(s) and {counts['message_links']:,} message link(s)")
    if args.dry_run:
        print(f"would remove {what} (nothing changed: --dry-run)")
    else:
        print(f"removed {what}; forgot {counts['budget_days']:,} day(s) of budget usage")
    return 0


async def _prune(url: str, before: datetime, dry_run: bool) -> dict[str, int]:
    from bot.store import Store

    store = Store(url)
    try:
        if await store.revision() is None:
            print("flywheel: the database has no Flywheel tables yet: nothing to prune", file=sys.stderr)
            return {"calls": 0, "corrections": 0, "message_links": 0, "budget_days": 0}
        return await store.prune(before, dry_run=dry_run)
    except Exception as exc:  # noqa: BLE001 - any driver error: one line, no traceback
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        raise ConfigError([f"DATABASE_URL: cannot prune the database: {reason}"]) from exc
    finally:
        await store.close()
