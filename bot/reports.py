"""Read-only queries over the log, for reports: votes per call (exports, stats) and the
per-version figures behind `flywheel stats` and the Home tab. Statements only: the store runs
them (`Store.usage_by_version`); nothing here opens a session."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, func, or_, select

from bot.models import SOURCES, Call, CallStatus, Feedback, PromptVersion


def votes_per_call():
    """A subquery: ``call_id, up, down`` counting each person once, by their latest active signal
    (reactions and buttons alike). Window functions: SQLite 3.25+ and PostgreSQL."""
    latest = (
        select(
            Feedback.call_id, Feedback.value,
            func.row_number().over(
                partition_by=(Feedback.call_id, Feedback.user_id),
                order_by=(Feedback.updated_at.desc(), Feedback.id.desc()),
            ).label("rank"),
        )
        .where(Feedback.removed_at.is_(None), Feedback.value != 0)  # value 0: exclusion, not a vote
        .subquery()
    )
    return (
        select(
            latest.c.call_id,
            func.sum(case((latest.c.value > 0, 1), else_=0)).label("up"),
            func.sum(case((latest.c.value < 0, 1), else_=0)).label("down"),
        )
        .where(latest.c.rank == 1)
        .group_by(latest.c.call_id)
        .subquery("votes")
    )


def add_traffic_arguments(parser: argparse.ArgumentParser) -> None:
    """``--source`` and ``--model``, as stats, export and replay all take them (the default,
    real Slack traffic only, is applied by the caller: ``args.sources or ["slack"]``)."""
    parser.add_argument("--source", action="append", choices=SOURCES, metavar="NAME", dest="sources",
                        help=f"only calls from here (repeatable; one of {', '.join(SOURCES)}; default slack: "
                             "the playground, `flywheel try` and replays are practice, not traffic)")
    parser.add_argument("--model", action="append", metavar="NAME", dest="models",
                        help="only calls to this model (repeatable)")


GROUP = (Call.prompt_name, Call.prompt_version, Call.model, Call.source)  # one stats row each


def _call_filters(since: datetime | None, until: datetime | None, prompt: str | None,
                  sources: Sequence[str] | None = ("slack",), models: Sequence[str] | None = None) -> list[Any]:
    """Calls created in [since, until) (aware UTC datetimes), of one prompt if named, from
    these sources (default: real Slack traffic only; None: every source) and models."""
    where: list[Any] = [Call.status != CallStatus.REFUSED]  # over budget: the model was never asked
    if sources is not None:
        where.append(Call.source.in_(list(sources)))
    if models:
        where.append(Call.model.in_(list(models)))
    if since is not None:
        where.append(Call.created_at >= since)
    if until is not None:
        where.append(Call.created_at < until)
    if prompt is not None:
        where.append(Call.prompt_name == prompt)
    return where


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@dataclass(frozen=True)
class UsageQueries:
    """The statements behind `Store.usage_by_version`, run in one session."""

    aggregate: Any  # one row per GROUP: counts, votes, errors, cost, tokens, first and last call
    first_seen: tuple[Any, ...]  # (prompt_name, version, at) rows: first calls and saved versions
    percentiles: dict[str, Any]  # per column key: (*GROUP, rank, n, value) rows at the wanted ranks


def usage_queries(*, since: datetime | None = None, until: datetime | None = None, prompt: str | None = None,
                  sources: Sequence[str] | None = ("slack",), models: Sequence[str] | None = None,
                  percentiles: Sequence[int] = (50, 95)) -> UsageQueries:
    """The statements for `usage_rows` (the filters as `Store.usage_by_version` takes them)."""
    where = _call_filters(since, until, prompt, sources, models)
    votes = votes_per_call()
    up, down = func.coalesce(votes.c.up, 0), func.coalesce(votes.c.down, 0)
    aggregate = (
        select(
            Call.prompt_name, Call.prompt_version, Call.model, Call.source,
            func.count().label("calls"),
            func.count(votes.c.call_id).label("rated"),
            func.sum(case((up > down, 1), else_=0)).label("up"),
            func.sum(case((up < down, 1), else_=0)).label("down"),
            func.sum(up).label("votes_up"),
            func.sum(down).label("votes_down"),
            func.sum(case((Call.status == CallStatus.ERROR, 1), else_=0)).label("errors"),
            func.sum(Call.cost_usd).label("cost_usd"),
            func.count(Call.cost_usd).label("priced_calls"),
            func.sum(Call.prompt_tokens).label("prompt_tokens"),
            func.sum(Call.completion_tokens).label("completion_tokens"),
            func.min(Call.created_at).label("first_call_at"),
            func.max(Call.created_at).label("last_call_at"),
        )
        .outerjoin(votes, votes.c.call_id == Call.id)
        .where(*where)
        .group_by(*GROUP)
    )
    first_calls = select(Call.prompt_name, Call.prompt_version, func.min(Call.created_at)).group_by(
        Call.prompt_name, Call.prompt_version)
    saved = select(PromptVersion.prompt_name, PromptVersion.version, PromptVersion.first_seen_at)
    if prompt is not None:
        first_calls = first_calls.where(Call.prompt_name == prompt)
        saved = saved.where(PromptVersion.prompt_name == prompt)
    return UsageQueries(aggregate, (first_calls, saved),
                        {column.key: _percentile_query(column, percentiles, where)
                         for column in (Call.latency_ms, Call.ttft_ms)})


def usage_rows(aggregate: Iterable[Any], first_seen: Iterable[Any], percentiles: Mapping[str, Iterable[Any]],
               wanted: Sequence[int]) -> list[dict[str, Any]]:
    """The figures from the rows `usage_queries`' statements returned (see `Store.usage_by_version`)."""
    rows = {tuple(r[:len(GROUP)]): dict(r._mapping) for r in aggregate}
    first: dict[tuple[str, str], datetime] = {}
    for name, version, stored_at in first_seen:
        at = _aware(stored_at)
        if at is not None and ((name, version) not in first or at < first[(name, version)]):
            first[(name, version)] = at
    ranks = {key: _percentile_values(found, wanted) for key, found in percentiles.items()}
    newest: dict[str, tuple[datetime, str]] = {}
    for (name, version), at in first.items():
        newest[name] = max(newest.get(name, (at, version)), (at, version))
    for key, row in rows.items():
        row["first_call_at"], row["last_call_at"] = _aware(row["first_call_at"]), _aware(row["last_call_at"])
        row["first_seen"] = first.get(key[:2], row["first_call_at"])
        row["newest"] = key[0] in newest and newest[key[0]][1] == key[1]
        for name, found in ranks.items():
            row[name] = found.get(key, {})
    return list(rows.values())


def _percentile_query(column: Any, percentiles: Sequence[int], where: list[Any]) -> Any:
    """Nearest-rank percentiles of ``column`` per GROUP, skipping NULLs: the rows at the wanted ranks."""
    ranked = (
        select(
            *GROUP, column.label("value"),
            func.row_number().over(partition_by=GROUP, order_by=(column, Call.id)).label("rank"),
            func.count().over(partition_by=GROUP).label("n"),
        )
        .where(column.is_not(None), *where)
        .subquery()
    )
    wanted = {p: (p * ranked.c.n + 99) // 100 for p in percentiles}  # ceil(p/100 * n) in integers
    keys = [ranked.c[c.key] for c in GROUP]
    return select(*keys, ranked.c.rank, ranked.c.n, ranked.c.value).where(
        or_(*(ranked.c.rank == rank for rank in wanted.values())))


def _percentile_values(rows: Iterable[Any], percentiles: Sequence[int]) -> dict[tuple[str, ...], dict[int, int]]:
    """{GROUP key: {percentile: value}} from `_percentile_query`'s rows."""
    found: dict[tuple[str, ...], dict[int, int]] = {}
    for row in rows:
        key, (rank, n, value) = tuple(row[:len(GROUP)]), row[len(GROUP):]
        for p in percentiles:
            if rank == -(-p * n // 100):  # the same ceil, in Python
                found.setdefault(key, {})[p] = int(value)
    return found
