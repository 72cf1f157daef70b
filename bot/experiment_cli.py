"""`flywheel experiment status` in the terminal: its options, the table, ``--json``.

The figures and the verdict are computed once, by :func:`bot.experiment_status.experiment_status`;
this module reads the command line and writes them, with the helpers of :mod:`bot.figures`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import TYPE_CHECKING, Any

from bot.experiment_status import SHORT_VERSION, ExperimentStatus, experiment_status
from bot.figures import duration, pct, usd

if TYPE_CHECKING:
    from bot.prompts import PromptSet
    from bot.settings import Settings


def format_status(results: list[ExperimentStatus]) -> str:
    """The terminal view: one block per experiment, one line per arm, then the verdict."""
    out: list[str] = []
    for status in results:
        when = {"running": "running", "ended": "ended (its variant files are gone)",
                "scheduled": f"starts {status.start:%Y-%m-%d %H:%M} UTC" if status.start else "scheduled"}
        out.append(f"{status.name}  (prompt {status.prompt}, {when[status.state]})")
        header = ("arm", "weight", "version", "calls", "rated", "up", "down", "approval (95% CI)", "cost", "p50")
        lines = [header]
        for arm in status.arms:
            interval = arm.approval_interval
            shown = pct(arm.approval) + (f" ({pct(interval[0])}–{pct(interval[1])})" if interval else "")
            version = (arm.version or "")[:SHORT_VERSION]
            if len(arm.versions) > 1:
                version += f" (+{len(arm.versions) - 1} earlier)"
            lines.append((arm.arm, f"{arm.weight:g} %" if arm.weight is not None else "–", version,
                          f"{arm.calls:,}", f"{arm.rated:,}", f"{arm.up:,}", f"{arm.down:,}", shown,
                          usd(arm.cost_usd), duration(arm.latency_p50_ms)))
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        for line in lines:
            out.append("  " + "  ".join(cell.ljust(w) if i in (0, 2, 7) else cell.rjust(w)
                                        for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip())
        changed = [a.arm for a in status.arms if len(a.versions) > 1]
        if changed:
            out.append(f"  note: arm {', '.join(changed)} changed during the experiment; its figures mix versions")
        out.append(f"  verdict: {status.summary}")
        out.append("")
    return "\n".join(out).rstrip()


# -- the command ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bot.reports import add_traffic_arguments

    sub = parser.add_subparsers(dest="experiment_command", required=True, metavar="COMMAND")
    status = sub.add_parser("status", help="per arm: calls, approval with its interval, cost, latency; a verdict")
    status.add_argument("name", nargs="?", help="only this experiment")
    add_traffic_arguments(status)
    status.add_argument("--json", action="store_true", help="print a JSON list, one object per experiment")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from bot.prompts import PromptSet

    settings.require()
    prompts = PromptSet.load(settings.prompts_dir)
    results = asyncio.run(_load(settings.database_url, prompts, name=args.name, sources=args.sources,
                                models=args.models))
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2, ensure_ascii=False))
    elif results:
        print(format_status(results))
    else:
        which = f"named {args.name!r} " if args.name else ""
        print(f"no experiment {which}yet: add a variant file next to a prompt (e.g. prompts/ask.b.prompty "
              "with a metadata.experiment block; see prompts/README.md)")
    return 0


async def _load(url: str, prompts: PromptSet, **filters: Any) -> list[ExperimentStatus]:
    from bot.errors import ConfigError
    from bot.stats_cli import _missing_sqlite_file
    from bot.store import Store

    if _missing_sqlite_file(url):
        return await experiment_status(_NoLog(), prompts, **filters)  # type: ignore[arg-type]
    store = Store(url)
    try:
        if await store.revision() is None:
            return await experiment_status(_NoLog(), prompts, **filters)  # type: ignore[arg-type]
        return await experiment_status(store, prompts, **filters)
    except Exception as exc:  # noqa: BLE001 - any driver error: one line, no traceback
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        raise ConfigError([f"DATABASE_URL: cannot read the database: {reason}"]) from exc
    finally:
        await store.close()


class _NoLog:
    """A log with nothing in it yet (no database file, or no tables)."""

    async def experiment_figures(self, **_: Any) -> list[dict[str, Any]]:
        return []
