"""The SQL behind `flywheel export`: selection, vote counting and dedupe, streamed in id order.

What a call contributes:
    target      its newest correction if any, else its answer
    approved    more 👍 than 👎 (one vote per person, `votes_per_call()`); net-down: more 👎 than 👍
    fit         status ok, not excluded, text kept, finish_reason not "length" (always required)

Default selection: fit calls that are approved or corrected (for KTO also net-down ones, its
``label: false``; DPO pairs them with net-down alternatives). ``--rating up|down|any`` selects
approved, net-down, or any rated (votes or a correction) calls instead; ``--include-unrated``
adds fit calls nobody rated. Calls in direct messages (a ``D…`` channel, logged as a DM, or in a
conversation any call of which was logged as a DM or group DM) are left out unless
``include_dms``, before dedupe; `dm_count_query()` counts what that leaves out.
One example per input (``calls.input_hash``) and format: the corrected call first, then
approved, then the newest. DPO pairs and KTO rows come from one input's best
approved/corrected call and its net-down alternatives (`preference_query`).

Window functions rank the calls of each input on narrow rows; the wide columns (messages,
answers) are joined last, so the database streams rows and Python holds one batch at a time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Text, and_, case, cast, exists, false, func, null, or_, select, union_all
from sqlalchemy.orm import aliased

from bot.models import Call, CallStatus, Correction, Trigger
from bot.reports import votes_per_call


@dataclass(frozen=True)
class Filters:
    prompt: str | None = None
    version: str | None = None  # a prefix of the prompt version hash
    since: datetime | None = None  # inclusive, UTC
    until: datetime | None = None  # exclusive, UTC
    channel: str | None = None
    rating: str | None = None  # None: approved or corrected
    include_unrated: bool = False
    include_dms: bool = False  # calls in direct messages (private conversations) are opt-in
    sources: tuple[str, ...] = ("slack",)  # where calls came from: practice (playground, try, replay) is opt-in
    models: tuple[str, ...] = ()  # the models asked for; empty: any

    def describe(self) -> dict[str, Any]:
        out = asdict(self)
        out["since"], out["until"] = (v.isoformat() if v else None for v in (self.since, self.until))
        return out  # since inclusive, until exclusive


PRIVATE_TYPES = ("im", "mpim")  # Slack's channel_type of a DM and of a group DM


def _in_dm():
    """A call in a direct message: its channel is a ``D…`` one, the bot logged it as a DM, or it
    is in a conversation the bot learnt is a DM or group DM (``calls.channel_type``, on this call
    or any other of that channel: a mention's own event does not say, a later message does)."""
    # Through the channel only (ix_calls_channel_type answers the subquery): reading each call's
    # own channel_type would read past its messages and answer, stored before it.
    private = aliased(Call)
    channel = func.coalesce(Call.channel_id, "")  # never NULL: the negation must be true or false
    return or_(func.substr(channel, 1, 1) == "D", Call.trigger == Trigger.DM,
               channel.in_(select(private.channel_id).where(private.channel_type.in_(PRIVATE_TYPES),
                                                            private.channel_id.is_not(None))))


def _scored(filters: Filters, *, selection: bool = True, negatives: bool = False, only_dms: bool = False):
    """Fit calls in scope, with their votes and current correction: a narrow subquery
    (id, input_hash, created_at, up, down, correction and 0/1 flags). ``selection``: apply
    the rating selection; ``negatives``: the default selection also takes net-down calls (KTO);
    ``only_dms``: the calls in direct messages instead of (without ``include_dms``) none."""
    votes = votes_per_call()
    # The newest correction of each call, as an anti-join both databases answer through
    # ix_corrections_call_id (SQLite scans a grouped subquery once per call: quadratic).
    fix, newer = aliased(Correction, name="fix"), aliased(Correction, name="newer")
    newest = and_(fix.call_id == Call.id, ~exists().where(newer.call_id == fix.call_id, newer.id > fix.id))
    up, down = func.coalesce(votes.c.up, 0), func.coalesce(votes.c.down, 0)
    approved, net_down, corrected = up > down, down > up, fix.id.is_not(None)
    where = [Call.status == CallStatus.OK, Call.excluded == false(), Call.content_logged.is_(True),  # text kept
             or_(Call.finish_reason.is_(None), Call.finish_reason != "length")]
    if filters.prompt:
        where.append(Call.prompt_name == filters.prompt)
    if filters.version:
        # substr, not LIKE: case-sensitive and free of wildcards on both databases
        where.append(func.substr(Call.prompt_version, 1, len(filters.version)) == filters.version)
    if filters.since:
        where.append(Call.created_at >= filters.since)
    if filters.until:
        where.append(Call.created_at < filters.until)
    if filters.channel:
        where.append(Call.channel_id == filters.channel)
    where.append(Call.source.in_(filters.sources))
    if filters.models:
        where.append(Call.model.in_(filters.models))
    if only_dms:
        where.append(_in_dm())
    elif not filters.include_dms:
        where.append(~_in_dm())
    if selection:
        rated = (up + down) > 0
        default = or_(approved, corrected, net_down) if negatives else or_(approved, corrected)
        chosen = {None: default, "up": approved, "down": net_down,
                  "any": or_(rated, corrected)}[filters.rating]
        if filters.include_unrated:
            chosen = or_(chosen, and_(~rated, ~corrected))
        where.append(chosen)

    def flag(cond):
        return case((cond, 1), else_=0)

    return (
        select(Call.id, Call.input_hash, Call.created_at, up.label("up"), down.label("down"),
               fix.text.label("correction"), flag(approved).label("approved"),
               flag(net_down).label("net_down"), flag(corrected).label("corrected"))
        .select_from(Call).outerjoin(votes, votes.c.call_id == Call.id).outerjoin(fix, newest)
        .where(*where)
        .subquery("scored")
    )


_CALL_COLUMNS = (Call.messages, Call.answer, Call.user_id, Call.prompt_name, Call.prompt_version, Call.model,
                 Call.experiment, Call.arm, Call.channel_id, Call.request_text, Call.status, Call.cost_usd,
                 Call.latency_ms)


def selected_query(filters: Filters):
    """Every selected call (csv: one row per selected call), in id order."""
    s = _scored(filters)
    return (select(s.c.id, s.c.input_hash, s.c.created_at, s.c.up, s.c.down, s.c.correction, *_CALL_COLUMNS)
            .join(Call, Call.id == s.c.id).order_by(s.c.id))


def best_query(filters: Filters):
    """One selected call per input: corrected first, then approved, then the newest; in id order."""
    s = _scored(filters)
    rank = func.row_number().over(partition_by=s.c.input_hash, order_by=(
        s.c.corrected.desc(), s.c.approved.desc(), s.c.created_at.desc(), s.c.id.desc()))
    ranked = select(s, rank.label("rank")).subquery("ranked")
    return (select(ranked.c.id, ranked.c.input_hash, ranked.c.created_at, ranked.c.up, ranked.c.down,
                   ranked.c.correction, *_CALL_COLUMNS)
            .join(Call, Call.id == ranked.c.id).where(ranked.c.rank == 1).order_by(ranked.c.id))


def reference_query(filters: Filters, limit: int | None = None):
    """`best_query`'s calls (replay's references); with ``limit``, only the newest ``limit``
    of them, newest first."""
    query = best_query(filters)
    if limit is None:
        return query
    return query.order_by(None).order_by(query.selected_columns.id.desc()).limit(limit)


def preference_query(filters: Filters, *, kto: bool):
    """Per input: its best good call (approved or corrected; corrected first, then the newest)
    and its newest net-down call. DPO: every fit call in scope takes part and a group needs a
    correction or a net-down alternative. KTO: only selected calls, and inputs with only a
    net-down call come too. Columns: id (the anchor call), input_hash, messages, user_id, channel_id,
    good_id, correction, good_answer, bad_id, bad_answer; in anchor id order.
    KTO's default selection adds net-down calls: 👎 is exactly its ``label: false``."""
    s = _scored(filters, selection=kto, negatives=True)
    is_good = case((or_(s.c.approved == 1, s.c.corrected == 1), 1), else_=0)
    ranked = select(
        s.c.id, s.c.input_hash, s.c.correction, s.c.corrected, is_good.label("good"), s.c.net_down,
        func.row_number().over(partition_by=(s.c.input_hash, is_good), order_by=(
            s.c.corrected.desc(), s.c.created_at.desc(), s.c.id.desc())).label("good_rank"),
        func.row_number().over(partition_by=(s.c.input_hash, s.c.net_down), order_by=(
            s.c.created_at.desc(), s.c.id.desc())).label("bad_rank"),
    ).cte("ranked")
    g, b = ranked.alias("g"), ranked.alias("b")
    with_good = (
        select(g.c.id.label("anchor"), g.c.id.label("good_id"), g.c.correction.label("correction"),
               b.c.id.label("bad_id"))
        .select_from(g.outerjoin(b, and_(b.c.input_hash == g.c.input_hash, b.c.net_down == 1, b.c.bad_rank == 1)))
        .where(g.c.good == 1, g.c.good_rank == 1)
    )
    if not kto:
        with_good = with_good.where(or_(g.c.corrected == 1, b.c.id.is_not(None)))
        groups = with_good.subquery("groups")
    else:
        other = ranked.alias("other")
        only_bad = (
            select(b.c.id.label("anchor"), cast(null(), Integer).label("good_id"),
                   cast(null(), Text).label("correction"), b.c.id.label("bad_id"))
            .where(b.c.net_down == 1, b.c.bad_rank == 1,
                   ~exists().where(other.c.input_hash == b.c.input_hash, other.c.good == 1))
        )
        groups = union_all(with_good, only_bad).subquery("groups")
    good, bad = aliased(Call, name="good_call"), aliased(Call, name="bad_call")
    return (
        select(groups.c.anchor.label("id"), Call.input_hash, Call.messages, Call.user_id, Call.channel_id,
               groups.c.good_id,
               groups.c.correction, good.answer.label("good_answer"), groups.c.bad_id,
               bad.answer.label("bad_answer"))
        .select_from(groups).join(Call, Call.id == groups.c.anchor)
        .outerjoin(good, good.id == groups.c.good_id).outerjoin(bad, bad.id == groups.c.bad_id)
        .order_by(groups.c.anchor)
    )


def dm_count_query(filters: Filters, fmt: str):
    """How many calls in direct messages the format would have drawn on (its selection, before
    dedupe): what leaving DMs out leaves out. DPO pairs draw on approved, corrected and
    net-down calls whatever ``--rating`` says."""
    if fmt == "openai-dpo":
        filters = replace(filters, rating=None, include_unrated=False)
    s = _scored(filters, negatives=fmt in ("kto", "openai-dpo"), only_dms=True)
    return select(func.count()).select_from(s)


def candidates_query(fmt: str, filters: Filters):
    """The query a format's rows are built from: every selected call (csv), one per input
    (openai-chat, eval), or preference groups (kto, openai-dpo)."""
    if fmt == "csv":
        return selected_query(filters)
    if fmt in ("openai-chat", "eval"):
        return best_query(filters)
    return preference_query(filters, kto=fmt == "kto")
