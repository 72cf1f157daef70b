"""The store: the only user of database sessions.

Every method is one short transaction on the asyncio engine (aiosqlite for
SQLite, psycopg 3 for PostgreSQL), so nothing blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, case, delete, event, func, or_, select, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import StaticPool

from bot.filelock import open_locked
from bot.migrate import MIGRATIONS, head_revision, in_memory
from bot.models import (
    BudgetUsage,
    Call,
    CallMessage,
    CallStatus,
    Correction,
    Feedback,
    Meta,
    PromptVersion,
    SlackEvent,
    Trigger,
    utcnow,
)

if TYPE_CHECKING:
    from bot import export_queries
    from bot.llm import Completion
    from bot.pricing import PriceTable

log = logging.getLogger(__name__)
CLAIM_TTL = timedelta(days=1)
CLAIM_PRUNE_EVERY = 3600.0  # seconds
CLAIM_BATCH = 500  # claims in one INSERT
# How long a SQLite write waits for another writer's lock before it fails. Short: a failed write
# is kept in the journal and retried, and a waiting one holds a pooled connection meanwhile.
SQLITE_BUSY_SECONDS = 5
# libpq: give up connecting after 5 s, and notice a peer that went away within ~30 s instead of
# the kernel's two hours, so that a database outage is an error the journal retries, not a hang.
POSTGRES_CONNECT_ARGS = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                         "keepalives_count": 3, "tcp_user_timeout": 30_000}


def async_url(url: str) -> str:
    """Map a plain SQLAlchemy URL to the asyncio driver we ship."""
    u = make_url(url)
    if u.drivername in ("sqlite", "sqlite+pysqlite"):
        u = u.set(drivername="sqlite+aiosqlite")
    elif u.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def ts_key(ts: str) -> tuple[int, int]:
    """Order Slack timestamps ("1700000000.000100") exactly, without float rounding."""
    seconds, _, micros = ts.partition(".")
    return int(seconds or 0), int((micros or "0").ljust(6, "0")[:6])


def input_hash(messages: Sequence[dict[str, Any]]) -> str:
    canonical = json.dumps(list(messages), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class CallLog:
    """Everything we log about one model call (see SPEC "What is logged")."""

    trigger: Trigger
    prompt_name: str
    prompt_version: str
    model: str
    messages: list[dict[str, Any]]
    status: CallStatus = CallStatus.OK
    source: str = "slack"  # see models.SOURCES
    options: dict[str, Any] = field(default_factory=dict)
    team_id: str | None = None
    channel_id: str | None = None
    channel_type: str | None = None  # Slack's: im, mpim, channel, group (None: not known)
    user_id: str | None = None
    request_ts: str | None = None
    thread_ts: str | None = None
    request_text: str = ""
    answer: str = ""
    finish_reason: str | None = None
    model_resolved: str | None = None
    response_id: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    usage: dict[str, Any] | None = None
    cost_usd: float | None = None
    price: dict[str, Any] | None = None
    latency_ms: int | None = None
    ttft_ms: int | None = None
    parent_call_id: int | None = None
    experiment: str | None = None  # the A/B experiment and arm the call ran under (bot.experiments)
    arm: str | None = None
    content_logged: bool = True  # False: its channel opted out; the text fields are left empty
    message_ts: list[str] = field(default_factory=list)  # the Slack messages the answer was posted as

    def drop_content(self) -> None:
        """For a channel that opted out of content logging: tokens, cost and timing only."""
        self.messages, self.request_text, self.answer = [], "", ""
        self.error_message, self.content_logged = None, False

    def add_completion(self, completion: Completion, prices: PriceTable, *, latency_ms: int) -> None:
        """Fill in what the model said and what it cost: the one place a completion becomes row fields.
        ``latency_ms`` counts when the model's own timing is missing."""
        self.answer = completion.text
        self.finish_reason = completion.finish_reason
        self.model_resolved = completion.model
        self.response_id = completion.response_id
        self.options = completion.options or self.options
        self.prompt_tokens = completion.prompt_tokens
        self.completion_tokens = completion.completion_tokens
        self.cached_tokens = completion.cached_tokens
        self.usage = completion.usage
        self.ttft_ms = completion.ttft_ms
        self.latency_ms = completion.latency_ms or latency_ms
        price = prices.price(self.model_resolved or self.model)
        if price is not None:
            self.cost_usd = prices.cost(price.model, self.prompt_tokens, self.completion_tokens, self.cached_tokens or 0)
            self.price = {"model": price.model, "input": price.input, "output": price.output,
                          "cached_input": price.cached_input, "unit": "USD per 1M tokens"}


@dataclass(frozen=True)
class PastCall:
    """A logged call, as needed to rebuild a conversation from Slack messages."""

    id: int | str  # the row's id; a journal op's id while the row is on its way to the database
    status: str  # a CallStatus value, as stored
    trigger: str  # a Trigger value, as stored
    user_id: str | None
    request_ts: str | None
    request_text: str
    answer: str
    prompt_name: str
    message_ts: tuple[str, ...]
    correction: str | None = None  # the newest correction of the answer, if any


class Store:
    def __init__(self, url: str, *, echo: bool = False):
        self.url = url
        sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        if sqlite:
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_SECONDS}
            if in_memory(url):
                kwargs["poolclass"] = StaticPool
        else:
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20, pool_timeout=10,
                          connect_args=POSTGRES_CONNECT_ARGS)
        self.engine: AsyncEngine = create_async_engine(async_url(url), **kwargs)
        if sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.session = async_sessionmaker(self.engine, expire_on_commit=False)
        self._known_versions: set[tuple[str, str]] = set()
        self._pruned = time.monotonic()
        self._claims: list[tuple[str, asyncio.Future[bool]]] = []  # waiting for the next claim batch
        self._claiming: asyncio.Task[None] | None = None

    async def close(self) -> None:
        await self.engine.dispose()

    # -- schema --------------------------------------------------------------------

    async def upgrade(self) -> str:
        """Create or migrate the schema to the newest revision; returns it. A database that
        is already there costs one query (Alembic is only imported when there is work)."""
        head = head_revision()
        if await self._stored_revision() == head:
            return head
        async with self._migrating():
            if await self._stored_revision() == head:  # another process did it meanwhile
                return head
            await self._migrate()
        return head

    @contextlib.asynccontextmanager
    async def _migrating(self) -> AsyncIterator[None]:
        """Processes starting together migrate one at a time. PostgreSQL serialises them with
        an advisory lock inside the migration's transaction; a SQLite file has a lock file
        beside it (Alembic's first CREATE TABLE would otherwise race: "table alembic_version
        already exists")."""
        path = make_url(self.url).database if self.url.startswith("sqlite") else None
        if not path or path == ":memory:" or path.startswith("file:"):
            yield
            return
        fd = await asyncio.to_thread(open_locked, f"{path}.lock", wait=True)
        try:
            yield
        finally:
            os.close(fd)

    async def _migrate(self) -> None:
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))

        def run(connection) -> None:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

        async with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # processes starting together migrate one at a time
                await conn.execute(text("SELECT pg_advisory_xact_lock(7262736)"))
            await conn.run_sync(run)

    async def revision(self) -> str | None:
        return await self._stored_revision()

    async def _stored_revision(self) -> str | None:
        async with self.engine.connect() as conn:  # an unreachable database raises here
            try:
                return await conn.scalar(text("SELECT version_num FROM alembic_version"))
            except (sa_exc.OperationalError, sa_exc.ProgrammingError):
                return None  # no schema yet

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            log.warning("database ping failed", exc_info=True)
            return False

    # -- idempotency -----------------------------------------------------------------

    async def claim(self, key: str) -> bool:
        """Claim a Slack delivery. True the first time for a key, False ever after
        (across processes: the key is the table's primary key). Claims made at the same
        moment share one transaction (a burst of mentions costs one commit, not one each)."""
        if len(key) > 200:  # keep long keys distinct
            key = key[:130] + ":" + hashlib.sha256(key.encode()).hexdigest()
        claimed = asyncio.get_running_loop().create_future()
        self._claims.append((key, claimed))
        if self._claiming is None or self._claiming.done():
            self._claiming = asyncio.create_task(self._claim_waiting())
        return await claimed

    async def _claim_waiting(self) -> None:
        while self._claims:
            batch, self._claims = self._claims[:CLAIM_BATCH], self._claims[CLAIM_BATCH:]
            keys = list(dict.fromkeys(key for key, _ in batch))
            try:
                won = await self._insert_claims(keys)
            except Exception as exc:  # noqa: BLE001 - each waiting claim gets the error
                for _, claimed in batch:
                    if not claimed.done():
                        claimed.set_exception(exc)
                continue
            for key, claimed in batch:
                if not claimed.done():
                    claimed.set_result(key in won)
                won.discard(key)  # the same key twice in one batch: the first wins
        if time.monotonic() - self._pruned > CLAIM_PRUNE_EVERY:
            with contextlib.suppress(Exception):
                await self.prune_claims()

    async def _insert_claims(self, keys: list[str]) -> set[str]:
        """INSERT … ON CONFLICT DO NOTHING RETURNING key: the keys nobody held."""
        # The engine's own dialect module (the other one is not worth importing).
        dialect = importlib.import_module(f"sqlalchemy.dialects.{self.engine.dialect.name}")
        now = utcnow()
        statement = (dialect.insert(SlackEvent).values([{"key": key, "received_at": now} for key in keys])
                     .on_conflict_do_nothing(index_elements=["key"]).returning(SlackEvent.key))
        async with self.engine.begin() as conn:
            return set((await conn.execute(statement)).scalars())

    async def prune_claims(self, older_than: timedelta = CLAIM_TTL) -> int:
        """Forget claims older than any Slack retry (its last retry comes ~5 minutes in)."""
        self._pruned = time.monotonic()
        async with self.session.begin() as s:
            result = await s.execute(delete(SlackEvent).where(SlackEvent.received_at < utcnow() - older_than))
        return getattr(result, "rowcount", 0) or 0  # a DELETE's result is a CursorResult

    # -- prompts and calls -----------------------------------------------------------

    async def save_prompt_version(self, *, name: str, version: str, path: str, source: str,
                                  model: str | None) -> None:
        if (name, version) in self._known_versions:
            return
        try:
            async with self.session.begin() as s:
                await self._ensure_prompt_version(s, {"name": name, "version": version, "path": path,
                                                      "source": source, "model": model})
        except IntegrityError:
            pass  # another process saved it first
        self._known_versions.add((name, version))

    async def record_call(self, log_: CallLog, *, prompt: dict[str, Any] | None = None,
                          parent_ts: str | None = None) -> int:
        """Write one call's row now (the bot writes through the journal, `bot.journal`).
        ``parent_ts``: a message of the call this one runs again, when its id was not known (its
        row was still in the journal): it becomes ``parent_call_id``, that row being written first."""
        async with self.session.begin() as s:
            return await self._insert_call(s, log_, prompt=prompt, op_id=None, at=None, parent_ts=parent_ts)

    async def _ensure_prompt_version(self, s: AsyncSession, prompt: dict[str, Any]) -> None:
        if (prompt["name"], prompt["version"]) in self._known_versions:
            return
        found = await s.scalar(select(PromptVersion.id).where(
            PromptVersion.prompt_name == prompt["name"], PromptVersion.version == prompt["version"]))
        if found is None:
            s.add(PromptVersion(prompt_name=prompt["name"], version=prompt["version"], path=prompt["path"],
                                source=prompt["source"], model=prompt.get("model")))
            await s.flush()

    async def _insert_call(self, s: AsyncSession, log_: CallLog, *, prompt: dict[str, Any] | None,
                           op_id: str | None, at: datetime | None, parent_ts: str | None = None) -> int:
        if op_id is not None:  # written already (the journal replayed it after a crash)
            found = await s.scalar(select(Call.id).where(Call.op_id == op_id))
            if found is not None:
                return found
        if prompt is not None:
            await self._ensure_prompt_version(s, prompt)
        values = {k: _clean(v) for k, v in vars(log_).items() if k != "message_ts"}
        if values["parent_call_id"] is None and parent_ts:
            values["parent_call_id"] = await _call_for_message(s, log_.channel_id, parent_ts)
        for name, limit in _STRING_LIMITS.items():  # an odd long model name must not lose the row
            if isinstance(values.get(name), str):
                values[name] = values[name][:limit]
        values["input_hash"] = input_hash(log_.messages)
        values["reply_ts"] = log_.message_ts[0] if log_.message_ts else None
        call = Call(**values, op_id=op_id, created_at=at or utcnow())
        s.add(call)
        await s.flush()
        if log_.channel_id:
            for part, ts in enumerate(dict.fromkeys(log_.message_ts)):
                s.add(CallMessage(channel_id=log_.channel_id, ts=ts, call_id=call.id, part=part))
        return call.id

    async def get_call(self, call_id: int) -> Call | None:
        async with self.session() as s:
            return await s.get(Call, call_id)

    async def list_calls(self, limit: int = 1000) -> list[Call]:
        async with self.session() as s:
            return list((await s.scalars(select(Call).order_by(Call.id).limit(limit))).all())

    async def call_for_op(self, op_id: str) -> int | None:
        """The call whose row a journal op with this id wrote, if any."""
        async with self.session() as s:
            return await s.scalar(select(Call.id).where(Call.op_id == op_id))

    async def call_for_message(self, channel_id: str, ts: str) -> int | None:
        """The call whose answer includes this Slack message, if any."""
        async with self.session() as s:
            return await s.scalar(
                select(CallMessage.call_id).where(CallMessage.channel_id == channel_id, CallMessage.ts == ts)
            )

    async def thread_prompt(self, channel_id: str, thread_ts: str) -> str | None:
        """The prompt of the bot's latest answer in this thread; None if it never answered there."""
        async with self.session() as s:
            return await s.scalar(
                select(Call.prompt_name)
                .where(Call.channel_id == channel_id, Call.thread_ts == thread_ts, Call.status != CallStatus.ERROR)
                .order_by(Call.id.desc()).limit(1)
            )

    async def calls_for(self, channel_id: str, ts: Sequence[str]) -> list[PastCall]:
        """Calls asked by, or answered as, any of these messages (to rebuild a conversation)."""
        ts = list(dict.fromkeys(ts))
        if not ts:
            return []
        async with self.session() as s:
            answered = select(CallMessage.call_id).where(
                CallMessage.channel_id == channel_id, CallMessage.ts.in_(ts))
            calls = (await s.scalars(
                select(Call).where(Call.channel_id == channel_id)
                .where(Call.id.in_(answered) | Call.request_ts.in_(ts)).order_by(Call.id)
            )).all()
            if not calls:
                return []
            ids = [c.id for c in calls]
            rows = (await s.execute(
                select(CallMessage.call_id, CallMessage.ts)
                .where(CallMessage.call_id.in_(ids)).order_by(CallMessage.part)
            )).all()
            corrections = dict((await s.execute(  # ordered by id: the newest correction wins
                select(Correction.call_id, Correction.text).where(Correction.call_id.in_(ids))
                .order_by(Correction.id))).all())
        by_call: dict[int, list[str]] = {}
        for call_id, msg_ts in rows:
            by_call.setdefault(call_id, []).append(msg_ts)
        return [
            PastCall(c.id, c.status, c.trigger, c.user_id, c.request_ts, c.request_text, c.answer, c.prompt_name,
                     tuple(by_call.get(c.id, ())), corrections.get(c.id))
            for c in calls
        ]

    # -- feedback --------------------------------------------------------------------

    async def set_feedback(self, *, call_id: int, user_id: str, source: str, name: str, value: int,
                           event_ts: str | None = None) -> bool:
        """Record (or re-activate) one person's signal on an answer. False if Slack's
        ``event_ts`` shows it is older than what is recorded (a late retry)."""
        return await self._signal(call_id, user_id, source, name, value=value, event_ts=event_ts)

    async def remove_feedback(self, *, call_id: int, user_id: str, source: str, name: str,
                              event_ts: str | None = None) -> bool:
        """Withdraw one signal. False if there was nothing to withdraw or the removal is stale."""
        return await self._signal(call_id, user_id, source, name, value=None, event_ts=event_ts)

    async def _signal(self, call_id: int, user_id: str, source: str, name: str, *, value: int | None,
                      event_ts: str | None) -> bool:
        for attempt in range(2):
            try:
                async with self.session.begin() as s:
                    return await _set_signal(s, call_id, user_id, source, name, value=value, event_ts=event_ts,
                                             at=utcnow())
            except IntegrityError:
                if attempt:
                    raise
                # A concurrent request inserted the same signal first: apply ours to that row.
        return False  # pragma: no cover

    async def votes(self, call_id: int) -> dict[str, int]:
        """One vote per person: their most recent active signal on this answer."""
        async with self.session() as s:
            rows = (await s.execute(
                select(Feedback.user_id, Feedback.value)
                .where(Feedback.call_id == call_id, Feedback.removed_at.is_(None), Feedback.value != 0)
                .order_by(Feedback.updated_at, Feedback.id)
            )).all()
        return {user: value for user, value in rows}  # later rows win

    # -- corrections ----------------------------------------------------------------

    async def add_correction(self, *, call_id: int, user_id: str, text: str) -> int:
        """Store a fix of an answer; earlier ones stay as history, the newest is current."""
        async with self.session.begin() as s:
            correction = Correction(call_id=call_id, user_id=user_id, text=_clean(text))
            s.add(correction)
            await s.flush()
            return correction.id

    async def corrections(self, call_id: int) -> list[Correction]:
        """Every correction of an answer, oldest first (the last is current)."""
        async with self.session() as s:
            return list((await s.scalars(
                select(Correction).where(Correction.call_id == call_id).order_by(Correction.id))).all())

    # -- the journal's ops (bot/journal.py) ------------------------------------------------

    @staticmethod
    def is_unavailable(exc: BaseException) -> bool:
        """Whether ``exc`` means the database is unreachable or busy (worth retrying), rather
        than refusing this write for good."""
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            return True
        return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError,
                                sa_exc.TimeoutError, OSError, TimeoutError))

    async def apply(self, ops: Sequence[dict[str, Any]], *, deadline: float | None = None) -> list[Any]:
        """Write journal ops in one transaction, in order; each op once however often it is
        applied. Returns each op's result: a call's id; for a correction, the id of the call it
        fixes; for a vote, whether it changed anything; None for an op about a message that is
        not one of the bot's answers. Past ``deadline`` (time.monotonic()) nothing is committed:
        a caller that stopped waiting has told someone it did not happen."""
        async with self.session.begin() as s:
            results = [await self._apply(s, op) for op in ops]
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("the database answered too late; rolled back")
        self._known_versions |= {(p["name"], p["version"]) for op in ops if (p := op.get("prompt"))}
        return results

    async def _apply(self, s: AsyncSession, op: dict[str, Any]) -> Any:
        at = datetime.fromtimestamp(op["at"], UTC)
        kind = op["kind"]
        if kind not in ("call", "correction", "reaction", "button"):
            raise ValueError(f"unknown journal op kind {kind!r}")
        if kind == "call":
            return await self._insert_call(s, CallLog(**op["log"]), prompt=op.get("prompt"), op_id=op["id"], at=at,
                                           parent_ts=op.get("parent_ts"))
        if kind == "correction":
            if (found := await s.scalar(select(Correction.call_id).where(Correction.op_id == op["id"]))) is not None:
                return found
            call_id = op.get("call_id") or await _call_for_message(s, op.get("channel"), op.get("ts"))
            if call_id is None:
                return None
            s.add(Correction(call_id=call_id, user_id=op["user"], text=_clean(op["text"]), op_id=op["id"],
                             created_at=at))
            await s.flush()
            return call_id
        call_id = await _call_for_message(s, op["channel"], op["ts"])
        if call_id is None:
            return None  # not one of the bot's answers
        if kind == "reaction":
            value = op["value"] if op["added"] else None
            changed = await _set_signal(s, call_id, op["user"], "reaction", op["name"], value=value,
                                        event_ts=op["event_ts"], at=at)
            if op["value"] == 0:  # the exclude reaction: out of training while anyone's is on it
                excluded = await _has_active_signal(s, call_id, op["name"])
                await s.execute(update(Call).where(Call.id == call_id).values(excluded=excluded))
            return changed
        # A button: clicking your current choice again withdraws it.
        current = await s.scalar(select(Feedback).where(
            Feedback.call_id == call_id, Feedback.user_id == op["user"], Feedback.source == "button",
            Feedback.name == "feedback"))
        if current is not None and current.event_ts and ts_key(op["event_ts"]) <= ts_key(current.event_ts):
            return False  # applied already, or older than what is recorded
        again = current is not None and current.removed_at is None and current.value == op["value"]
        return await _set_signal(s, call_id, op["user"], "button", "feedback",
                                 value=None if again else op["value"], event_ts=op["event_ts"], at=at)

    # -- budgets ------------------------------------------------------------------------

    async def hold_budget(self, day: str, claims: Sequence[tuple[str, str, Any]], tokens: int,
                          cost_usd: float) -> int | None:
        """Add ``tokens`` and ``cost_usd`` to each (scope, key) of ``claims`` for ``day``, all or
        none: each only if it stays within that claim's limits (an object with ``tokens`` and
        ``cost_usd``, None meaning unlimited). Returns None when held, else the index of the
        first claim that would go over. A conditional UPDATE is atomic: on PostgreSQL a second
        process waits for the row and re-checks against what the first one added."""
        dialect = importlib.import_module(f"sqlalchemy.dialects.{self.engine.dialect.name}")
        rows = [{"day": day, "scope": scope, "key": key, "tokens": 0, "cost_usd": 0.0} for scope, key, _ in claims]

        class Over(Exception):
            pass

        try:
            async with self.engine.begin() as conn:
                await conn.execute(dialect.insert(BudgetUsage).values(rows).on_conflict_do_nothing(
                    index_elements=["day", "scope", "key"]))
                for i, (scope, key, limits) in enumerate(claims):
                    where = [BudgetUsage.day == day, BudgetUsage.scope == scope, BudgetUsage.key == key]
                    if limits.tokens is not None:
                        where.append(BudgetUsage.tokens + tokens <= limits.tokens)
                    if limits.cost_usd is not None:
                        where.append(BudgetUsage.cost_usd + cost_usd <= limits.cost_usd)
                    result = await conn.execute(update(BudgetUsage).where(*where).values(
                        tokens=BudgetUsage.tokens + tokens, cost_usd=BudgetUsage.cost_usd + cost_usd))
                    if not getattr(result, "rowcount", 0):
                        raise Over(i)
        except Over as over:
            return int(over.args[0])
        return None

    async def settle_budget(self, day: str, keys: Sequence[tuple[str, str]], tokens: int, cost_usd: float) -> None:
        """Correct a hold by what the call really used (``tokens``/``cost_usd``: actual minus held)."""
        if not keys or (tokens == 0 and cost_usd == 0):
            return
        async with self.session.begin() as s:
            for scope, key in keys:
                await s.execute(update(BudgetUsage).where(
                    BudgetUsage.day == day, BudgetUsage.scope == scope, BudgetUsage.key == key).values(
                    tokens=BudgetUsage.tokens + tokens, cost_usd=BudgetUsage.cost_usd + cost_usd))

    async def budget_used(self, day: str, scope: str, key: str) -> tuple[int, float]:
        async with self.session() as s:
            row = (await s.execute(select(BudgetUsage.tokens, BudgetUsage.cost_usd).where(
                BudgetUsage.day == day, BudgetUsage.scope == scope, BudgetUsage.key == key))).first()
        return (int(row[0]), float(row[1])) if row else (0, 0.0)

    # -- retention ----------------------------------------------------------------------

    async def prune(self, before: datetime, *, dry_run: bool = False, batch: int = 500,
                    pause: float = 0.05) -> dict[str, int]:
        """Remove the text of calls made before ``before``: their messages, request, answer and
        error text, their corrections, and the links from their Slack messages (so a late vote
        finds nothing to attach to). Tokens, cost, timing, versions and votes stay. Works in
        transactions of ``batch`` calls with a ``pause`` between, so the bot is never locked
        out for long. Also forgets budget usage of days before ``before``."""
        old = [Call.created_at < before, or_(Call.content_logged.is_(True), Call.id.in_(
            select(CallMessage.call_id).where(CallMessage.call_id == Call.id)))]
        counts = {"calls": 0, "corrections": 0, "message_links": 0, "budget_days": 0}
        if dry_run:
            async with self.session() as s:
                pruned = select(Call.id).where(*old).scalar_subquery()
                counts["calls"] = int(await s.scalar(select(func.count()).select_from(Call).where(*old)) or 0)
                counts["corrections"] = int(await s.scalar(
                    select(func.count()).select_from(Correction).where(Correction.call_id.in_(pruned))) or 0)
                counts["message_links"] = int(await s.scalar(
                    select(func.count()).select_from(CallMessage).where(CallMessage.call_id.in_(pruned))) or 0)
                counts["budget_days"] = int(await s.scalar(select(func.count(func.distinct(BudgetUsage.day))).where(
                    BudgetUsage.day < before.date().isoformat())) or 0)
            return counts
        while True:
            async with self.session.begin() as s:
                ids = list((await s.scalars(select(Call.id).where(*old).order_by(Call.id).limit(batch))).all())
                if not ids:
                    break
                result = await s.execute(delete(Correction).where(Correction.call_id.in_(ids)))
                counts["corrections"] += getattr(result, "rowcount", 0) or 0
                result = await s.execute(delete(CallMessage).where(CallMessage.call_id.in_(ids)))
                counts["message_links"] += getattr(result, "rowcount", 0) or 0
                await s.execute(update(Call).where(Call.id.in_(ids)).values(
                    messages=[], request_text="", answer="", error_message=None, content_logged=False))
                counts["calls"] += len(ids)
            await asyncio.sleep(pause)  # let the bot's own writes in between
        async with self.session.begin() as s:
            days = await s.scalar(select(func.count(func.distinct(BudgetUsage.day))).where(
                BudgetUsage.day < before.date().isoformat()))
            await s.execute(delete(BudgetUsage).where(BudgetUsage.day < before.date().isoformat()))
            counts["budget_days"] = int(days or 0)
        return counts

    # -- experiments ----------------------------------------------------------------------

    async def experiment_figures(self, *, name: str | None = None, sources: Sequence[str] | None = ("slack",),
                                 models: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Per experiment, arm and prompt version: calls, rated answers and their net votes (each
        person once, as in `flywheel stats`), errors, cost, first and last call, and the arm's
        median latency (nearest rank). Calls from ``sources`` (default real Slack traffic only;
        None: all) to ``models`` (all if None)."""
        from bot.reports import votes_per_call

        where: list[Any] = [Call.experiment.is_not(None), Call.status != CallStatus.REFUSED]
        if name is not None:
            where.append(Call.experiment == name)
        if sources is not None:
            where.append(Call.source.in_(list(sources)))
        if models:
            where.append(Call.model.in_(list(models)))
        votes = votes_per_call()
        up, down = func.coalesce(votes.c.up, 0), func.coalesce(votes.c.down, 0)
        group = (Call.experiment, Call.arm, Call.prompt_name, Call.prompt_version)
        figures = (
            select(*group, func.count().label("calls"), func.count(votes.c.call_id).label("rated"),
                   func.sum(case((up > down, 1), else_=0)).label("up"),
                   func.sum(case((up < down, 1), else_=0)).label("down"),
                   func.sum(case((Call.status == CallStatus.ERROR, 1), else_=0)).label("errors"),
                   func.sum(Call.cost_usd).label("cost_usd"), func.count(Call.cost_usd).label("priced_calls"),
                   func.min(Call.created_at).label("first_call_at"), func.max(Call.created_at).label("last_call_at"))
            .outerjoin(votes, votes.c.call_id == Call.id).where(*where).group_by(*group)
        )
        ranked = (
            select(Call.experiment, Call.arm, Call.latency_ms.label("value"),
                   func.row_number().over(partition_by=(Call.experiment, Call.arm),
                                          order_by=(Call.latency_ms, Call.id)).label("rank"),
                   func.count().over(partition_by=(Call.experiment, Call.arm)).label("n"))
            .where(Call.latency_ms.is_not(None), *where).subquery()
        )
        medians = select(ranked.c.experiment, ranked.c.arm, ranked.c.value).where(
            ranked.c.rank == (ranked.c.n + 1) // 2)  # nearest rank: the ceil(n/2)-th smallest
        async with self.session() as s:
            rows = [dict(r._mapping) for r in (await s.execute(figures)).all()]
            median = {(e, a): int(v) for e, a, v in (await s.execute(medians)).all()}
        for row in rows:
            row["latency_p50_ms"] = median.get((row["experiment"], row["arm"]))
            for key in ("first_call_at", "last_call_at"):
                if row[key] is not None and row[key].tzinfo is None:
                    row[key] = row[key].replace(tzinfo=UTC)
        return rows
    # -- reports and datasets (the statements: bot/reports.py, bot/export_queries.py) -------------

    async def usage_by_version(self, *, since: datetime | None = None, until: datetime | None = None,
                               prompt: str | None = None, sources: Sequence[str] | None = ("slack",),
                               models: Sequence[str] | None = None, percentiles: Sequence[int] = (50, 95)
                               ) -> list[dict[str, Any]]:
        """Raw figures per (prompt, version, model, source) with at least one call in the window
        (from ``sources``, default real Slack traffic only, and ``models`` if given), unordered.
        A version answered by two models gives two rows: an echo-model rehearsal or a model
        switch is never averaged into another model's figures.

        Votes are `reports.votes_per_call` (each person once, latest active signal), counted
        for the calls in the window whenever they were given. ``latency_ms`` / ``ttft_ms``
        map each requested percentile to its nearest-rank value (the ``ceil(p/100 * n)``-th
        smallest, computed with integer arithmetic in SQL, so identical on SQLite and
        PostgreSQL). ``first_seen`` is over all time, not the window: the earlier of the
        ``prompt_versions`` row and the version's first call; ``newest`` marks the version of
        its prompt first seen last (ties: the greater hash), whether or not it has calls in
        the window.
        """
        from bot import reports  # the statements load when a report is first asked for

        queries = reports.usage_queries(since=since, until=until, prompt=prompt, sources=sources, models=models,
                                        percentiles=percentiles)
        async with self.session() as s:
            aggregate = (await s.execute(queries.aggregate)).all()
            first_seen = [row for query in queries.first_seen for row in (await s.execute(query)).all()]
            ranked = {key: (await s.execute(query)).all() for key, query in queries.percentiles.items()}
        return reports.usage_rows(aggregate, first_seen, ranked, percentiles)

    async def export_candidates(self, fmt: str, filters: export_queries.Filters, *, batch: int
                                ) -> AsyncGenerator[Sequence[Any], None]:
        """The rows a dataset format is built from (`export_queries.candidates_query`), streamed
        ``batch`` rows at a time in call-id order: one hop to the driver per batch, not per row,
        and memory stays flat however many calls are logged. Close it (`contextlib.aclosing`)
        when stopping early."""
        from bot import export_queries

        query = export_queries.candidates_query(fmt, filters).execution_options(yield_per=batch)
        async with self.engine.connect() as conn:
            result = await conn.stream(query)
            try:
                async for rows in result.partitions():
                    yield rows
            finally:
                await result.close()

    async def count_export_candidates(self, fmt: str, filters: export_queries.Filters) -> int:
        """How many rows `export_candidates` will stream (what a progress bar counts)."""
        from bot import export_queries

        query = select(func.count()).select_from(export_queries.candidates_query(fmt, filters).subquery())
        async with self.session() as s:
            return int(await s.scalar(query) or 0)

    async def dms_left_out(self, filters: export_queries.Filters, fmt: str) -> int:
        """How many calls in direct messages ``fmt``'s selection would have drawn on
        (`export_queries.dm_count_query`)."""
        from bot import export_queries

        async with self.session() as s:
            return int(await s.scalar(export_queries.dm_count_query(filters, fmt)) or 0)

    async def reference_calls(self, filters: export_queries.Filters, *, limit: int | None = None) -> list[Any]:
        """Replay's references (`export_queries.reference_query`): the newest ``limit`` (default
        all) selected calls, one per input, oldest first."""
        from bot import export_queries

        async with self.session() as s:
            rows = list((await s.execute(export_queries.reference_query(filters, limit))).all())
        return sorted(rows, key=lambda r: r.id)

    async def prompt_sources(self, prompt: str, versions: Sequence[str]) -> list[tuple[str, str, str]]:
        """(version, path, source) of the saved versions of ``prompt`` among ``versions``."""
        async with self.session() as s:
            return [(row[0], row[1], row[2]) for row in (await s.execute(
                select(PromptVersion.version, PromptVersion.path, PromptVersion.source).where(
                    PromptVersion.prompt_name == prompt, PromptVersion.version.in_(sorted(versions))))).all()]

    async def call_summaries(self, ids: Sequence[int]) -> dict[int, Any]:
        """Id, prompt, version, model, cost and latency of these calls (the ones that exist), by id."""
        async with self.session() as s:
            rows = (await s.execute(
                select(Call.id, Call.prompt_name, Call.prompt_version, Call.model, Call.cost_usd, Call.latency_ms)
                .where(Call.id.in_(sorted(set(ids)))))).all()
        return {r.id: r for r in rows}

    # -- meta ---------------------------------------------------------------------------

    async def salt(self) -> str:
        """This installation's secret salt for pseudonymising user ids (made on first use)."""
        async with self.session() as s:
            found = await s.scalar(select(Meta.value).where(Meta.key == "export_salt"))
        if found:
            return found
        try:
            async with self.session.begin() as s:
                s.add(Meta(key="export_salt", value=secrets.token_hex(16)))
        except IntegrityError:
            pass  # another process made it first
        async with self.session() as s:
            return str(await s.scalar(select(Meta.value).where(Meta.key == "export_salt")))

    async def count(self, model: type) -> int:
        async with self.session() as s:
            return int(await s.scalar(select(func.count()).select_from(model)) or 0)


async def _call_for_message(s: AsyncSession, channel_id: str | None, ts: str | None) -> int | None:
    if not channel_id or not ts:
        return None
    return await s.scalar(select(CallMessage.call_id).where(CallMessage.channel_id == channel_id,
                                                            CallMessage.ts == ts))


async def _has_active_signal(s: AsyncSession, call_id: int, name: str) -> bool:
    return bool(await s.scalar(select(func.count()).select_from(Feedback).where(
        Feedback.call_id == call_id, Feedback.name == name, Feedback.removed_at.is_(None))))


async def _set_signal(s: AsyncSession, call_id: int, user_id: str, source: str, name: str, *,
                      value: int | None, event_ts: str | None, at: datetime) -> bool:
    """Set (``value``) or withdraw (None) one person's signal on an answer, as of ``at``.
    Returns whether an active vote changed. ``event_ts`` (Slack's time of the signal)
    orders deliveries: one older than what is recorded changes nothing."""
    row = await s.scalar(select(Feedback).where(
        Feedback.call_id == call_id, Feedback.user_id == user_id, Feedback.source == source, Feedback.name == name))
    if row is not None and event_ts and row.event_ts and ts_key(event_ts) <= ts_key(row.event_ts):
        return False  # Slack redelivered something older than what we hold
    if value is None:  # a removal
        if row is None:
            if not event_ts:
                return False
            # Arrived before its reaction: remember it so the late add stays removed.
            s.add(Feedback(call_id=call_id, user_id=user_id, source=source, name=name, value=0,
                           created_at=at, updated_at=at, removed_at=at, event_ts=event_ts))
            await s.flush()
            return False
        active = row.removed_at is None
        row.removed_at, row.event_ts = at, event_ts or row.event_ts
        return active
    if row is None:
        row = Feedback(call_id=call_id, user_id=user_id, source=source, name=name, value=value,
                       created_at=at, updated_at=at, event_ts=event_ts)
        s.add(row)
        await s.flush()
    else:
        row.value, row.updated_at, row.removed_at = value, at, None
        row.event_ts = event_ts or row.event_ts
    return value == 0 or await _one_vote(s, row, at)


async def _one_vote(s: AsyncSession, row: Feedback, at: datetime) -> bool:
    """One vote per person per answer, reactions and buttons alike: a vote just set replaces the
    person's active votes from the other source (so withdrawing it later brings none of them
    back). One older, by Slack's time, than such a vote is itself set aside. Returns whether
    ``row`` is the person's vote."""
    others = (await s.scalars(select(Feedback).where(
        Feedback.call_id == row.call_id, Feedback.user_id == row.user_id, Feedback.source != row.source,
        Feedback.removed_at.is_(None), Feedback.value != 0))).all()
    if row.event_ts and any(o.event_ts and ts_key(o.event_ts) > ts_key(row.event_ts) for o in others):
        row.removed_at = at  # a late delivery: the newer vote stands
        return False
    for other in others:
        other.removed_at = at
    return True


def _clean(value: Any) -> Any:
    """PostgreSQL refuses NUL characters in text: replace them (in nested JSON too)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


_STRING_LIMITS = {
    column.name: column.type.length
    for column in Call.__table__.columns
    if isinstance(column.type, String) and column.type.length
}


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Switching a new file to WAL needs a lock that another process opening it at the same
    # moment may hold, and SQLite then fails at once instead of waiting out the busy timeout.
    # (This runs in the driver's thread: sleeping here does not block the event loop.)
    deadline = time.monotonic() + SQLITE_BUSY_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    cursor.close()
