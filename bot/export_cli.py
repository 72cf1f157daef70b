"""`flywheel export` in the terminal: its options, checked and turned into :class:`ExportOptions`.

What is selected is in bot/export_queries.py, how a row is built in bot/export_formats.py, and
the writing of the files and manifest in :func:`bot.export.export`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import NoReturn

from bot.errors import ConfigError
from bot.export import RATINGS, ExportOptions, ExportResult, check_schema, export
from bot.export_formats import FORMATS
from bot.export_queries import Filters
from bot.reports import add_traffic_arguments
from bot.settings import Settings
from bot.store import Store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Write a dataset from the logged calls. Default selection: approved (more 👍 than 👎) "
                          "or corrected answers; never errors, truncated or excluded ones, nor direct messages "
                          "unless --include-dms. User and channel ids are always pseudonymised.")
    parser.add_argument("--format", required=True, choices=list(FORMATS),
                        help="; ".join(f"{f.name}: {f.description}" for f in FORMATS.values()))
    parser.add_argument("--output", "-o", metavar="FILE",
                        help="write FILE and FILE's manifest, readable by you only (mode 0600; default: stdout)")
    parser.add_argument("--prompt", metavar="NAME", help="only this prompt")
    parser.add_argument("--version", metavar="HASH", help="only this prompt version (a prefix is enough)")
    parser.add_argument("--since", metavar="WHEN", help="calls at or after this UTC date or datetime")
    parser.add_argument("--until", metavar="WHEN",
                        help="calls before this UTC datetime (a date includes that whole day)")
    parser.add_argument("--channel", metavar="ID", help="only this Slack channel id (the raw id, e.g. C0123ABCD)")
    parser.add_argument("--rating", choices=RATINGS,
                        help="up: approved; down: more 👎 than 👍; any: any vote or correction "
                             "(default: approved or corrected)")
    parser.add_argument("--include-unrated", action="store_true", help="also calls nobody rated or corrected")
    add_traffic_arguments(parser)
    parser.add_argument("--include-dms", action="store_true",
                        help="also calls in direct messages and group DMs with the bot, left out of every "
                             "format by default (private conversations)")
    parser.add_argument("--split", type=str, metavar="FRACTION",
                        help="e.g. 0.9: stable train/validation split by input (needs --output)")
    parser.add_argument("--redact", action="store_true",
                        help="also replace e-mail addresses, phone numbers, user mentions and channel mentions "
                             "with their names in texts (user and channel ids are always pseudonymised)")

    def error(message: str) -> NoReturn:  # one line, no usage block
        print(f"flywheel: {message}", file=sys.stderr)
        raise SystemExit(2)

    parser.error = error  # type: ignore[method-assign]


def options_from(args: argparse.Namespace) -> ExportOptions:
    """Check and convert the options; a bad one raises ConfigError (one line, exit 2)."""
    since = when_option(args.since, "--since", end=False) if args.since else None
    until = when_option(args.until, "--until", end=True) if args.until else None
    if since and until and since >= until:
        raise ConfigError(["--since must be before --until"])
    split = None
    if args.split is not None:
        try:
            split = float(args.split)
        except ValueError:
            split = -1.0
        if not 0 < split < 1:
            raise ConfigError([f"--split must be a fraction between 0 and 1 such as 0.9, got {args.split!r}"])
    output = Path(args.output) if args.output and args.output != "-" else None
    if output is not None and (output.is_dir() or not output.parent.is_dir()):
        where = "is a folder" if output.is_dir() else f"folder {output.parent} does not exist"
        raise ConfigError([f"cannot write --output {output}: {where}"])
    if args.split is not None and output is None:
        raise ConfigError(["--split needs --output FILE (it writes FILE.train and FILE.validation)"])
    filters = Filters(prompt=args.prompt or None, version=(args.version or "").strip() or None, since=since,
                      until=until, channel=args.channel or None, rating=args.rating,
                      include_unrated=args.include_unrated, include_dms=args.include_dms,
                      sources=tuple(dict.fromkeys(args.sources or ["slack"])), models=tuple(args.models or ()))
    return ExportOptions(format=args.format, filters=filters, output=output, split=split, redact=args.redact)


def when_option(value: str, option: str, *, end: bool) -> datetime:
    """``--since``/``--until``: an ISO date or datetime in UTC (naive means UTC), read as
    `flywheel stats` reads it; a date as ``--until`` includes that day."""
    from bot.stats_cli import parse_when

    try:
        return parse_when(value, end_of_day=end)
    except argparse.ArgumentTypeError:
        raise ConfigError([f"{option} must be an ISO date or datetime such as 2026-01-31 or "
                           f"2026-01-31T12:00Z (UTC), got {value!r}"]) from None


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings.require()
    options = options_from(args)
    if options.format == "openai-dpo" and (options.filters.rating or options.filters.include_unrated):
        print("flywheel: note: openai-dpo ignores --rating and --include-unrated (pairs always prefer an "
              "approved or corrected answer to a corrected-away or net-down one)", file=sys.stderr)

    async def go() -> ExportResult:
        store = Store(settings.database_url)
        try:
            await check_schema(store)
            return await export(store, options)
        finally:
            await store.close()

    try:
        asyncio.run(go())
    except BrokenPipeError:  # `flywheel export … | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return 0
