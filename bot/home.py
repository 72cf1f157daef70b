"""The App Home tab: how each prompt is doing, readable at a glance.

The figures are those of `flywheel stats` (see :mod:`bot.stats` for the definitions):
a one-line total for the workspace, then one section per prompt with its newest
versions' approval (and 95 % interval), calls, cost and median latency, and a context
line naming the version hashes. Pure Block Kit building plus one ``views.publish``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bot.figures import approval_bar, approval_text, duration, usd
from bot.slack_text import escape, truncate
from bot.stats import VersionStats, totals, version_stats

if TYPE_CHECKING:
    from bot.experiment_status import ExperimentStatus
    from bot.prompts import PromptSet
    from bot.team import Limits, Team

MAX_BLOCKS = 100  # Slack's limit for a view
MAX_VERSIONS = 3  # shown per prompt, newest first
MAX_PROMPTS = 30  # (100 - 5 fixed blocks) // 3 blocks per prompt
MAX_EXPERIMENTS = 5  # running ones shown, one section each (plus a header and a divider)
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
CONTEXT_LIMIT = 2000


async def home_view(store, *, since: datetime | None = None, source: str = "slack",
                    prompts: PromptSet | None = None) -> dict[str, Any]:
    """The Home tab view for the figures of calls since ``since`` (all time if None) from
    ``source``: a workspace sees its Slack traffic, the playground its own calls. With
    ``prompts``, the experiments they run now come first (their figures cover all time)."""
    rows = await version_stats(store, since=since, sources=[source])
    running: list[ExperimentStatus] = []
    if prompts is not None and prompts.experiments:
        from bot.experiment_status import experiment_status

        found = await experiment_status(store, prompts, sources=[source])
        running = [e for e in found if e.state != "ended"]
    return build_home(rows, since=since, experiments=running, team=prompts.team if prompts is not None else None)


async def publish_home(client, store, user_id: str, *, since: datetime | None = None, source: str = "slack",
                       prompts: PromptSet | None = None) -> None:
    """Show the current figures on ``user_id``'s Home tab (``views.publish``)."""
    view = await home_view(store, since=since, source=source, prompts=prompts)
    await client.views_publish(user_id=user_id, view=view)


def build_home(rows: list[VersionStats], *, since: datetime | None = None,
               experiments: list[ExperimentStatus] | None = None, team: Team | None = None) -> dict[str, Any]:
    """The view for these rows (as :func:`bot.stats.version_stats` returns them), the running
    ``experiments`` (as :func:`bot.experiment_status.experiment_status` returns them) and the
    ``team``'s controls (channels, budgets, what is kept)."""
    period = f"Since {_date(since)}" if since else "All time"
    blocks: list[dict[str, Any]] = [_header("Flywheel · how your prompts are doing")]
    shown_experiments = build_experiments(experiments or []) + ([_context(team_text(team))] if team else [])
    if not rows:
        when = f" since {_date(since)}" if since else " yet"
        blocks.append(_section(
            f"*No calls{when}.* Mention me in a channel with a question, or use one of my slash commands "
            "(such as `/ask`). Every answer shows up here with its 👍/👎 approval, cost and latency."))
        return {"type": "home", "blocks": blocks + shown_experiments}

    total = totals(rows)
    by_prompt: dict[str, list[VersionStats]] = defaultdict(list)
    for row in rows:
        by_prompt[row.prompt].append(row)
    room = min(MAX_PROMPTS, (MAX_BLOCKS - 5 - len(shown_experiments)) // 3)
    shown = sorted(by_prompt, key=lambda p: -sum(r.calls for r in by_prompt[p]))[:room]
    updated = _date(datetime.now(UTC), "{date_short_pretty} at {time}")
    blocks += [
        _context(f"{period} · {len(by_prompt)} prompt{_s(len(by_prompt))} · updated {updated}"),
        _section(_total_line(total)),
        {"type": "divider"},
        *shown_experiments,
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


def build_experiments(experiments: list[ExperimentStatus]) -> list[dict[str, Any]]:
    """Blocks for running experiments: per arm its share of people, calls and approval, then
    the verdict in words (`flywheel experiment status` has every figure)."""
    if not experiments:
        return []
    blocks: list[dict[str, Any]] = [_header("Experiments")]
    for e in experiments[:MAX_EXPERIMENTS]:
        state = "running" if e.state == "running" else f"starts {_date(e.start)}" if e.start else e.state
        lines = [f"*{_code(e.name)}* on {_code(e.prompt)} · {state}"]
        for arm in e.arms:
            rating = (f"{approval_bar(arm.approval)} *{approval_text(arm.up, arm.down)}*" if arm.up + arm.down
                      else "not rated yet")
            share = f"{arm.weight:g} %" if arm.weight is not None else "–"
            lines.append(" · ".join([f"`{escape(arm.arm)}` {share} of people", rating,
                                     f"{arm.calls:,} call{_s(arm.calls)}, {arm.rated:,} rated",
                                     usd(arm.cost_usd) if arm.cost_usd is not None else "cost unknown",
                                     f"p50 {duration(arm.latency_p50_ms)}"]))
        lines.append(f"_{escape(e.summary)}_")
        blocks.append(_section("\n".join(lines)))
    if len(experiments) > MAX_EXPERIMENTS:
        blocks.append(_context(f"{len(experiments) - MAX_EXPERIMENTS} more: run `flywheel experiment status`."))
    blocks.append({"type": "divider"})
    return blocks


def team_text(team: Team) -> str:
    """What prompts/team.yaml sets, and what the log keeps, in a few lines."""
    lines = []
    for channel_id, rules in sorted(team.channels.items()):
        parts = [f"<#{channel_id}>"]
        if rules.prompt:
            parts.append(f"mentions go to {_code(rules.prompt)}")
        if rules.model:
            parts.append(f"model {_code(rules.model)}")
        if rules.budget:
            parts.append(f"{_limits(rules.budget)} a day")
        if not rules.log_content:
            parts.append("text not kept")
        lines.append(" · ".join(parts))
    budgets = [f"{_limits(limits)} per {what}" for what, limits in
               (("person", team.per_user), ("channel", team.per_channel), ("day in all", team.total)) if limits]
    if budgets:
        lines.append("Daily budgets (UTC days): " + ", ".join(budgets)
                     + (f"; {len(team.admins)} admin{_s(len(team.admins))} exempt" if team.admins else ""))
    opted_out = sum(not r.log_content for r in team.channels.values())
    kept = ("What is kept: for every answer its prompt version, model, tokens, cost, timing and votes; the "
            "text of questions, answers and corrections" + (f" except in the {opted_out} channel{_s(opted_out)} "
                                                            "above that opted out" if opted_out else "")
            + ", until `flywheel prune` removes old text.")
    head = "*Team settings* (`prompts/team.yaml`)\n" if team.path else ""
    return head + "\n".join([*lines, kept])


def _limits(limits: Limits) -> str:
    parts = [f"{limits.tokens:,} tokens" if limits.tokens is not None else "",
             f"${limits.cost_usd:,.2f}" if limits.cost_usd is not None else ""]
    return " or ".join(p for p in parts if p)


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
