"""The App Home tab: how each prompt is doing, readable at a glance.

The figures are those of `flywheel stats` (see :mod:`bot.stats` for the definitions):
a one-line total for the workspace, then one section per prompt with its newest
versions' approval (and 95 % interval), calls, cost and median latency, and a context
line naming the version hashes. Pure Block Kit building plus one ``views.publish``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from bot.slack_text import escape, truncate
from bot.stats import (
    VersionStats,
    approval_bar,
    approval_text,
    duration,
    totals,
    usd,
    version_stats,
)

MAX_BLOCKS = 100  # Slack's limit for a view
MAX_VERSIONS = 3  # shown per prompt, newest first
MAX_PROMPTS = 30  # (100 - 5 fixed blocks) // 3 blocks per prompt
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
CONTEXT_LIMIT = 2000


async def home_view(store, *, since: datetime | None = None, source: str = "slack") -> dict[str, Any]:
    """The Home tab view for the figures of calls since ``since`` (all time if None) from
    ``source``: a workspace sees its Slack traffic, the playground its own calls."""
    rows = await version_stats(store, since=since, sources=[source])
    return build_home(rows, since=since)


async def publish_home(client, store, user_id: str, *, since: datetime | None = None, source: str = "slack") -> None:
    """Show the current figures on ``user_id``'s Home tab (``views.publish``)."""
    await client.views_publish(user_id=user_id, view=await home_view(store, since=since, source=source))


def build_home(rows: list[VersionStats], *, since: datetime | None = None) -> dict[str, Any]:
    """The view for these rows (as :func:`bot.stats.version_stats` returns them)."""
    period = f"Since {_date(since)}" if since else "All time"
    blocks: list[dict[str, Any]] = [_header("Flywheel · how your prompts are doing")]
    if not rows:
        when = f" since {_date(since)}" if since else " yet"
        blocks.append(_section(
            f"*No calls{when}.* Mention me in a channel with a question, or use one of my slash commands "
            "(such as `/ask`). Every answer shows up here with its 👍/👎 approval, cost and latency."))
        return {"type": "home", "blocks": blocks}

    total = totals(rows)
    by_prompt: dict[str, list[VersionStats]] = defaultdict(list)
    for row in rows:
        by_prompt[row.prompt].append(row)
    shown = sorted(by_prompt, key=lambda p: -sum(r.calls for r in by_prompt[p]))[:MAX_PROMPTS]
    updated = _date(datetime.now(UTC), "{date_short_pretty} at {time}")
    blocks += [
        _context(f"{period} · {len(by_prompt)} prompt{_s(len(by_prompt))} · updated {updated}"),
        _section(_total_line(total)),
        {"type": "divider"},
    ]
    for name in sorted(shown):
        versions = sorted(by_prompt[name], key=_first_seen, reverse=True)
        blocks.append(_section(_prompt_text(name, versions)))
        blocks.append(_context(_versions_line(versions)))
        blocks.append({"type": "divider"})
    hidden = len(by_prompt) - len(shown)
    more = f"{hidden} less used prompt{_s(hidden)} not shown. " if hidden else ""
    blocks.append(_context(
        f"{more}Approval: share of rated answers with more 👍 than 👎, 95% interval in brackets. "
        "Run `flywheel stats` for every version."))
    assert len(blocks) <= MAX_BLOCKS
    return {"type": "home", "blocks": blocks}


# -- texts ------------------------------------------------------------------------------------


def _total_line(total) -> str:
    parts = [f"*{total.calls:,}* call{_s(total.calls)}",
             f"*{usd(total.cost_usd)}* spent" if total.cost_usd is not None else "cost unknown"]
    if total.up + total.down:
        parts.append(f"*{approval_text(total.up, total.down)}* approval from {total.rated:,} rated")
    else:
        parts.append("no votes yet")
    if total.errors:
        parts.append(f"{total.errors:,} error{_s(total.errors)}")
    return " · ".join(parts)


def _prompt_text(name: str, versions: list[VersionStats]) -> str:
    calls = sum(v.calls for v in versions)
    lines = [f"*{_code(name)}* · {calls:,} call{_s(calls)}"]
    for v in versions[:MAX_VERSIONS]:
        if v.up + v.down:
            rating = f"{approval_bar(v.approval)} *{approval_text(v.up, v.down)}*"
        else:
            rating = "not rated yet"
        lines.append(" · ".join([
            f"`{v.short_version}`{' (newest)' if v.newest else ''} {_code(v.model)} {rating}",
            f"{v.calls:,} call{_s(v.calls)}, {v.rated:,} rated",
            usd(v.cost_usd) if v.cost_usd is not None else "cost unknown",
            f"p50 {duration(v.latency_p50_ms)}",
        ] + ([f"{v.errors:,} error{_s(v.errors)}"] if v.errors else [])))
    return "\n".join(lines)


def _versions_line(versions: list[VersionStats]) -> str:
    parts = []
    for v in versions[:MAX_VERSIONS]:
        seen = f"first seen {_date(v.first_seen)}" if v.first_seen else ""
        label = ", ".join(x for x in ("newest" if v.newest else "", seen) if x)
        parts.append(f"`{v.short_version}`" + (f" ({label})" if label else ""))
    older = len(versions) - MAX_VERSIONS
    if older > 0:
        parts.append(f"{older} older version{_s(older)}")
    return "Versions: " + " · ".join(parts)


def _date(when: datetime, token: str = "{date_short}") -> str:
    """Shown in the reader's time zone; the fallback is UTC."""
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    fallback = when.date().isoformat() if token == "{date_short}" else when.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(when.timestamp())}^{token}|{fallback}>"


def _code(name: str) -> str:
    return "`" + escape(name.replace("`", "'")) + "`"


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def _first_seen(row: VersionStats) -> tuple[float, str]:
    return (row.first_seen.timestamp() if row.first_seen else float("inf"), row.version)


# -- blocks -----------------------------------------------------------------------------------


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": truncate(text, HEADER_LIMIT), "emoji": True}}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, SECTION_LIMIT)}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(text, CONTEXT_LIMIT)}]}
