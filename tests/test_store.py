"""bot.store against real databases: SQLite and PostgreSQL (the `store` fixture runs on both)."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from bot.migrate import MIGRATIONS, MigrationFailed, begin_upgrade, stored_revision
from bot.models import Base, CallMessage, Feedback, PromptVersion, SlackEvent
from bot.store import CallLog, PastCall, Store, async_url, input_hash

from conftest import FLYWHEEL, clean_env

pytestmark = pytest.mark.db

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Grüße 👋"}]


def head_revision() -> str:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head
    return head


def upgrade_to(connection: Any, revision: str) -> None:
    """Migrate to an older revision, as a database made by an earlier release would be."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


def call_log(**overrides: Any) -> CallLog:
    values: dict[str, Any] = {"trigger": "mention", "prompt_name": "default", "prompt_version": "v1",
                              "model": "gpt-4o-mini", "messages": MESSAGES, "channel_id": "C1"}
    values.update(overrides)
    return CallLog(**values)


@pytest.fixture
async def other(database_url: str, store: Store) -> AsyncIterator[Store]:
    """A second Store on the same database, as another process would open it."""
    s = Store(database_url)
    yield s
    await s.close()


# -- schema ----------------------------------------------------------------------------


async def test_migrated_schema_matches_the_models(store: Store) -> None:
    def diff(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True,
                                                               "target_metadata": Base.metadata})
        return compare_metadata(context, Base.metadata)

    def tables(connection: Any) -> set[str]:
        return set(inspect(connection).get_table_names())

    async with store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
        assert await conn.run_sync(tables) == set(Base.metadata.tables) | {"alembic_version"}


async def test_upgrade_twice_is_a_no_op(store: Store) -> None:
    head = head_revision()
    assert await store.revision() == head
    assert await store.claim("kept")
    call_id = await store.record_call(call_log(message_ts=["1.1"]))

    assert await store.upgrade() == head
    assert await store.upgrade() == head

    assert await store.revision() == head
    assert not await store.claim("kept")  # data survives
    assert await store.call_for_message("C1", "1.1") == call_id


async def test_first_upgrades_started_together_on_one_sqlite_file_all_succeed(tmp_path: Path) -> None:
    """Two `flywheel db upgrade` (or two bots) on a new SQLite file: both must exit 0, not one
    with "table alembic_version already exists" (7 of 10 rounds failed before the lock)."""
    for round_ in range(4):
        env = clean_env(DATABASE_URL=f"sqlite:///{tmp_path / f'round{round_}.db'}")
        procs = [await asyncio.create_subprocess_exec(str(FLYWHEEL), "db", "upgrade", cwd=tmp_path, env=env,
                                                      stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                 for _ in range(2)]
        results = [await asyncio.wait_for(p.communicate(), 60) for p in procs]
        for proc, (out, err) in zip(procs, results, strict=True):
            assert proc.returncode == 0, f"round {round_}: {err.decode()}"
            assert out.decode().startswith("database is at revision ")


async def test_migrating_a_0002_database_labels_old_calls_by_where_they_came_from(empty_database_url: str) -> None:
    """An existing database (revision 0002, before calls had a source) keeps every row; the
    playground's and `flywheel try`'s calls are told apart from real Slack traffic."""
    store = Store(empty_database_url)
    try:
        async with store.engine.begin() as conn:
            await conn.run_sync(upgrade_to, "0002")
            rows = [("mention", "T1", "gpt-4o-mini"), ("command", "T1", "gpt-4o-mini"),  # Slack
                    ("mention", "T_PLAY", "gpt-4o-mini"), ("regenerate", "T_PLAY", "echo"),  # playground
                    ("thread", None, "echo"),  # playground (echo answers only practice)
                    ("cli", None, "gpt-4o-mini")]  # flywheel try
            for n, (trigger, team, model) in enumerate(rows):
                await conn.execute(text(
                    "INSERT INTO calls (created_at, trigger, team_id, request_text, prompt_name, prompt_version, "
                    "model, options, messages, input_hash, status, answer, excluded) VALUES "
                    "(:at, :trigger, :team, 'q', 'ask', 'v1', :model, '{}', '[]', :hash, 'ok', 'a', false)"),
                    {"at": datetime(2026, 11, 1, tzinfo=UTC), "trigger": trigger, "team": team, "model": model,
                     "hash": f"h{n}"})
        await store.upgrade()
        found = [(c.trigger, c.source) for c in await store.list_calls()]
        assert found == [("mention", "slack"), ("command", "slack"), ("mention", "playground"),
                         ("regenerate", "playground"), ("thread", "playground"), ("cli", "try")]
        assert {(c.experiment, c.arm) for c in await store.list_calls()} == {(None, None)}  # 0004: ran under none
    finally:
        await store.close()


async def test_a_serving_process_migrates_through_a_child_and_never_loads_alembic(
        empty_database_url: str, tmp_path: Path) -> None:
    """`flywheel run` on a new database: the schema is created by `python -m bot.migrate`, and the
    process that goes on serving has not imported Alembic or Mako (~10 MB it would keep for its
    whole life: the idle RSS of a first start was 82 MB on SQLite and 90 MB on PostgreSQL, against
    69 and 80 MB for later starts)."""
    script = tmp_path / "serve.py"
    script.write_text(
        "import asyncio, sys\n"
        "from bot.migrate import begin_upgrade, stored_revision\n"
        "from bot.store import Store\n"
        "url = sys.stdin.readline().strip()\n"
        "async def main():\n"
        "    migration = await begin_upgrade(url)\n"
        "    store = Store(url)\n"
        "    try:\n"
        "        print(await migration.finished(store), await store.revision())\n"
        "    finally:\n"
        "        await store.close()\n"
        "asyncio.run(main())\n"
        "print(stored_revision(url))\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & {'alembic', 'mako'})) or '-')\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=clean_env(), cwd=tmp_path)
    out, err = await asyncio.wait_for(proc.communicate(empty_database_url.encode() + b"\n"), 60)
    assert proc.returncode == 0, err.decode()
    head = head_revision()
    finished, peeked, loaded = out.decode().splitlines()
    assert finished == f"{head} {head}"  # the child's answer, and the schema this process sees
    assert peeked == head  # the quick look with the bare driver reads it too
    assert loaded == "-"
    assert empty_database_url.encode() not in err  # the URL (and its password) stay out of the logs


async def test_the_quick_look_at_a_schema_never_mistakes_an_old_one_for_the_newest(
        empty_database_url: str) -> None:
    """Before SQLAlchemy is imported, `flywheel run` reads the schema's revision with the bare
    driver to decide whether to migrate. It must read an older schema as older, and anything it
    cannot read as unknown (the child then migrates, or reports the problem)."""
    assert stored_revision(empty_database_url) is None  # no schema yet
    store = Store(empty_database_url)
    try:
        async with store.engine.begin() as conn:
            await conn.run_sync(upgrade_to, "0002")
        assert stored_revision(empty_database_url) == "0002"
        assert await (await begin_upgrade(empty_database_url)).finished(store) == head_revision()
        assert await store.revision() == head_revision()
    finally:
        await store.close()
    for unreadable in ("postgresql://nobody@127.0.0.1:1/none", "sqlite:///missing/folder/x.db",
                       "sqlite:///file.db?mode=ro", "mysql://localhost/x"):
        assert stored_revision(unreadable) is None


async def test_a_failed_migration_is_one_line_and_the_serving_process_stops(
        empty_database_url: str) -> None:
    """The child's failure reaches the parent as the driver's one line, as `flywheel db upgrade`
    prints it: here a table that is already there, from something other than Flywheel."""
    store = Store(empty_database_url)
    try:
        async with store.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE calls (id INTEGER PRIMARY KEY)"))
        migration = await begin_upgrade(empty_database_url)
        with pytest.raises(MigrationFailed, match=r"(?i)calls.*already exists"):
            await migration.finished(store)
        assert await store.revision() is None  # nothing half-done: the migration rolled back
    finally:
        await store.close()


async def test_ping(store: Store) -> None:
    assert await store.ping()
    unreachable = Store("postgresql://nobody@127.0.0.1:1/none")
    try:
        assert not await unreachable.ping()
    finally:
        await unreachable.close()


def test_async_url() -> None:
    assert async_url("sqlite:////tmp/x.db") == "sqlite+aiosqlite:////tmp/x.db"
    assert async_url("postgresql://u:p%40ss@h:5432/db") == "postgresql+psycopg://u:p%40ss@h:5432/db"
    assert async_url("postgres://u@h/db").startswith("postgresql+psycopg://")
    assert async_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"


# -- idempotency -----------------------------------------------------------------------


async def test_claim_once(store: Store, other: Store) -> None:
    assert await store.claim("event:Ev1")
    assert not await store.claim("event:Ev1")
    # Another process sees the same claims.
    assert not await other.claim("event:Ev1")
    assert await other.claim("event:Ev2")
    assert not await store.claim("event:Ev2")
    assert await store.count(SlackEvent) == 2


async def test_concurrent_claims_have_one_winner(store: Store, other: Store) -> None:
    results = await asyncio.gather(*(s.claim("msg:C1:1.000") for s in (store, other) * 4))
    assert sorted(results) == [False] * 7 + [True]


async def test_claim_long_key(store: Store) -> None:
    key = "msg:C1:" + "9" * 300
    assert await store.claim(key)
    assert not await store.claim(key)


# -- prompts and calls -----------------------------------------------------------------


async def test_save_prompt_version_is_idempotent(store: Store, other: Store) -> None:
    args = {"name": "default", "version": "a" * 64, "path": "prompts/default.md", "source": "---\n…", "model": None}
    await store.save_prompt_version(**args)
    await store.save_prompt_version(**args)
    await other.save_prompt_version(**args)  # another process, no cache: finds the row
    assert await store.count(PromptVersion) == 1

    await other.save_prompt_version(**{**args, "version": "b" * 64, "model": "gpt-4o"})
    assert await store.count(PromptVersion) == 2
    async with store.session() as s:
        saved = (await s.execute(
            PromptVersion.__table__.select().order_by(PromptVersion.version))).mappings().all()
    assert [(r["prompt_name"], r["version"], r["path"], r["source"], r["model"]) for r in saved] == [
        ("default", "a" * 64, "prompts/default.md", "---\n…", None),
        ("default", "b" * 64, "prompts/default.md", "---\n…", "gpt-4o"),
    ]
    assert all(r["first_seen_at"] is not None for r in saved)


async def test_a_rerun_of_a_call_written_later_links_to_it_through_its_message(store: Store) -> None:
    """Regenerate during an outage knows the earlier answer by its Slack message only: the link
    to its row (parent_call_id) is made when the new row is written, the earlier one first."""
    parent = await store.record_call(call_log(channel_id="C1", message_ts=["5.000001", "5.000002"]))
    again = await store.record_call(call_log(channel_id="C1", message_ts=["6.000001"]), parent_ts="5.000002")
    assert (await store.get_call(again)).parent_call_id == parent
    orphan = await store.record_call(call_log(channel_id="C1", message_ts=["7.000001"]), parent_ts="4.000001")
    assert (await store.get_call(orphan)).parent_call_id is None  # no such answer: no link, the row still written


async def test_record_call_round_trips_every_field(store: Store) -> None:
    parent = await store.record_call(call_log())
    log = CallLog(
        trigger="thread",
        prompt_name="summarize",
        prompt_version="f" * 64,
        model="gpt-4o-mini",
        messages=MESSAGES,
        status="incomplete",
        source="playground",
        options={"temperature": 0.2, "stop": ["\n"]},
        team_id="T1",
        channel_id="C9",
        channel_type="mpim",
        user_id="U1",
        request_ts="100.000001",
        thread_ts="99.000001",
        request_text="summarize this ✨",
        answer="Here is the summary…",
        finish_reason="length",
        model_resolved="gpt-4o-mini-2024-07-18",
        response_id="chatcmpl-abc",
        error_type="ModelError.interrupted",
        error_message="the model's stream ended before it finished",
        prompt_tokens=120,
        completion_tokens=30,
        cached_tokens=64,
        usage={"prompt_tokens": 120, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 64}},
        cost_usd=0.000123,
        price={"input": 0.15, "output": 0.6},
        latency_ms=1234,
        ttft_ms=210,
        experiment="tone",
        arm="b",
        content_logged=False,
        parent_call_id=parent,
        message_ts=["100.000002", "100.000003", "100.000002", "100.000004"],
    )
    assert all(getattr(log, f.name) != f.default for f in dataclasses.fields(CallLog)
               if f.default is not dataclasses.MISSING), "every field differs from its default"

    call_id = await store.record_call(log)
    assert call_id != parent

    row = await store.get_call(call_id)
    assert row is not None
    for f in dataclasses.fields(CallLog):
        if f.name != "message_ts":
            assert getattr(row, f.name) == getattr(log, f.name), f.name
    assert row.input_hash == input_hash(MESSAGES)
    assert row.reply_ts == "100.000002"
    assert row.created_at is not None

    for ts in ("100.000002", "100.000003", "100.000004"):
        assert await store.call_for_message("C9", ts) == call_id
    assert await store.call_for_message("C9", "100.000001") is None  # the request is not the answer
    assert await store.call_for_message("C1", "100.000002") is None  # another channel
    assert await store.count(CallMessage) == 3

    [past] = await store.calls_for("C9", ["100.000003"])
    assert past.message_ts == ("100.000002", "100.000003", "100.000004")  # in posting order

    assert [c.id for c in await store.list_calls()] == [parent, call_id]


async def test_record_call_defaults_and_no_channel(store: Store) -> None:
    call_id = await store.record_call(CallLog(trigger="cli", prompt_name="p", prompt_version="v", model="m",
                                              messages=[], message_ts=["5.5"]))
    row = await store.get_call(call_id)
    assert row is not None
    assert (row.status, row.options, row.answer, row.request_text, row.reply_ts) == ("ok", {}, "", "", "5.5")
    assert row.usage is None and row.parent_call_id is None
    assert await store.count(CallMessage) == 0  # no channel, nothing a reaction could find


async def test_input_hash_is_canonical() -> None:
    a = [{"role": "user", "content": "hi"}]
    b = [{"content": "hi", "role": "user"}]
    assert input_hash(a) == input_hash(b)
    assert input_hash(a) != input_hash([{"role": "user", "content": "hi "}])
    assert len(input_hash(a)) == 64


async def test_thread_prompt(store: Store) -> None:
    assert await store.thread_prompt("C1", "10.0") is None
    await store.record_call(call_log(prompt_name="first", thread_ts="10.0"))
    assert await store.thread_prompt("C1", "10.0") == "first"
    await store.record_call(call_log(prompt_name="second", thread_ts="10.0"))
    await store.record_call(call_log(prompt_name="failed", thread_ts="10.0", status="error"))
    assert await store.thread_prompt("C1", "10.0") == "second"
    await store.record_call(call_log(prompt_name="partial", thread_ts="10.0", status="incomplete"))
    assert await store.thread_prompt("C1", "10.0") == "partial"

    await store.record_call(call_log(prompt_name="elsewhere", thread_ts="20.0"))
    assert await store.thread_prompt("C1", "10.0") == "partial"
    assert await store.thread_prompt("C2", "10.0") is None  # same ts, other channel
    assert await store.thread_prompt("C1", "30.0") is None
    await store.record_call(call_log(prompt_name="only-errors", thread_ts="40.0", status="error"))
    assert await store.thread_prompt("C1", "40.0") is None


async def test_calls_for_finds_by_answer_or_request(store: Store) -> None:
    one = await store.record_call(call_log(request_ts="1.0", request_text="q1", answer="a1", user_id="U1",
                                           message_ts=["1.1", "1.2"]))
    two = await store.record_call(call_log(request_ts="2.0", request_text="q2", answer="a2", status="error",
                                           trigger="thread", message_ts=["2.1"]))
    elsewhere = await store.record_call(call_log(channel_id="C2", request_ts="1.0", message_ts=["1.1"]))

    assert await store.calls_for("C1", []) == []
    assert await store.calls_for("C1", ["9.9"]) == []
    assert await store.calls_for("C1", ["1.2"]) == [
        PastCall(one, "ok", "mention", "U1", "1.0", "q1", "a1", "default", ("1.1", "1.2"))]
    assert [c.id for c in await store.calls_for("C1", ["2.0"])] == [two]  # by request ts
    by_both = await store.calls_for("C1", ["2.1", "1.0", "2.1"])
    assert [c.id for c in by_both] == [one, two]
    assert by_both[1] == PastCall(two, "error", "thread", None, "2.0", "q2", "a2", "default", ("2.1",))
    assert [c.id for c in await store.calls_for("C2", ["1.0", "2.0"])] == [elsewhere]


# -- feedback --------------------------------------------------------------------------


async def test_feedback_one_vote_per_person_latest_wins(store: Store) -> None:
    call = await store.record_call(call_log(message_ts=["1.1"]))
    other_call = await store.record_call(call_log(message_ts=["2.1"]))

    async def vote(user: str, source: str, name: str, value: int, call_id: int = call) -> None:
        await store.set_feedback(call_id=call_id, user_id=user, source=source, name=name, value=value)

    async def unvote(user: str, source: str, name: str) -> bool:
        return await store.remove_feedback(call_id=call, user_id=user, source=source, name=name)

    assert await store.votes(call) == {}
    await vote("U1", "reaction", "+1", 1)
    assert await store.votes(call) == {"U1": 1}
    await vote("U1", "reaction", "+1", 1)  # the same signal again: still one vote, one row
    assert await store.votes(call) == {"U1": 1}
    assert await store.count(Feedback) == 1

    await vote("U1", "button", "vote", -1)  # a later signal from another source replaces it
    await vote("U2", "reaction", "-1", -1)
    await vote("U3", "reaction", "+1", 1, call_id=other_call)
    assert await store.votes(call) == {"U1": -1, "U2": -1}
    assert await store.votes(other_call) == {"U3": 1}

    assert await unvote("U1", "button", "vote")  # withdrawing it brings back none of what it replaced
    assert await store.votes(call) == {"U2": -1}
    assert not await unvote("U1", "button", "vote")  # already withdrawn
    assert not await unvote("U9", "reaction", "+1")  # never there
    assert not await unvote("U1", "reaction", "-1")
    assert not await unvote("U1", "reaction", "+1")  # replaced already: removing it changes nothing

    await vote("U1", "button", "vote", -1)  # re-adding re-activates the row
    assert await store.votes(call) == {"U1": -1, "U2": -1}
    await vote("U1", "reaction", "+1", 1)  # the reaction is added again: it replaces the button
    assert await store.votes(call) == {"U1": 1, "U2": -1}

    assert not await unvote("U1", "button", "vote")  # replaced: nothing left to withdraw
    assert await unvote("U1", "reaction", "+1")
    assert await store.votes(call) == {"U2": -1}
    assert await store.count(Feedback) == 4  # U1 reaction, U1 button, U2 reaction, U3 on the other call

    async with store.session() as s:
        withdrawn = await s.scalar(Feedback.__table__.select().where(
            Feedback.user_id == "U1", Feedback.source == "button").with_only_columns(Feedback.removed_at))
    assert withdrawn is not None


async def test_racing_first_votes_do_not_fail_and_the_later_one_wins(store: Store, other: Store) -> None:
    """Another request inserts the same person's signal while set_feedback runs (a double click, a
    quick remove and re-add): set_feedback must not fail on the unique constraint, and its value wins."""
    call = await store.record_call(call_log(message_ts=["1.1"]))
    signal = {"call_id": call, "user_id": "U1", "source": "reaction", "name": "+1"}
    async with other.engine.connect() as conn:
        await conn.begin()
        await conn.execute(Feedback.__table__.insert().values(**signal, value=-1))
        # Not committed yet: set_feedback sees no row, and its insert waits for this transaction.
        racing = asyncio.create_task(store.set_feedback(**signal, value=1))
        await asyncio.sleep(0.2)
        assert not racing.done()
        await conn.commit()
    await asyncio.wait_for(racing, 5)
    assert await store.votes(call) == {"U1": 1}
    assert await store.count(Feedback) == 1


async def test_overlong_values_are_clipped_not_lost(store: Store) -> None:
    """PostgreSQL rejects a string longer than its column; the call must still be logged."""
    call_id = await store.record_call(call_log(model="m" * 300, model_resolved="r" * 300, finish_reason="f" * 99))
    call = await store.get_call(call_id)
    assert call is not None
    assert call.model == "m" * 100 and call.model_resolved == "r" * 100 and call.finish_reason == "f" * 32


async def test_nul_characters_do_not_lose_the_row(store: Store) -> None:
    """PostgreSQL refuses NUL in text and JSON strings; model output may contain one."""
    messages = [{"role": "user", "content": "a\x00b"}]
    call_id = await store.record_call(call_log(answer="x\x00y", messages=messages, request_text="a\x00b"))
    call = await store.get_call(call_id)
    assert call is not None and call.answer == "x\ufffdy" and call.messages[0]["content"] == "a\ufffdb"
    correction = await store.add_correction(call_id=call_id, user_id="U1", text="fixed\x00")
    assert correction and (await store.corrections(call_id))[0].text == "fixed\ufffd"
