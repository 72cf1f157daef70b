"""The write path: Slack is answered at once, and nothing a person did is lost.

A database outage is played for real: on PostgreSQL the bot reaches the server through a
TCP proxy whose link is cut; on SQLite another connection holds the write lock (what a
long migration, a backup or a stuck process does), so every write waits and then fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy.engine import make_url

from bot.journal import Journal
from bot.store import Store
from bot.underway import Orphan, Underway

from conftest import (
    PROMPTS,
    SIGNING_SECRET,
    Harness,
    clean_env,
    flywheel_process,
    free_port,
    serve_bot,
    wait_healthy,
)
from fakes import FakeOpenAI, FakeSlack, SlackSender, wait_until
from fakes.slack_sender import click, mention, reaction, submission
from fakes.tcp_proxy import TcpProxy

OUTAGE_SECONDS = 60.0  # as long as the issue asks for: longer than every timeout on the way


class Outage:
    """The database goes away (``begin``) and comes back (``end``)."""

    def __init__(self, begin: Callable[[], None], end: Callable[[], None]):
        self.begin, self.end = begin, end


@contextlib.asynccontextmanager
async def bot_with_outage(database_url: str, *, slack: FakeSlack, model: FakeOpenAI,
                          journal_dir: Path | None = None, **kwargs: Any) -> AsyncIterator[tuple[Harness, Outage]]:
    if database_url.startswith("postgresql"):
        url = make_url(database_url)
        async with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
            proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
            async with serve_bot(slack, model, proxied, journal_dir=journal_dir, **kwargs) as h:
                yield h, Outage(proxy.cut, proxy.restore)
        return
    path = make_url(database_url).database
    assert path
    release = threading.Event()
    holder: list[threading.Thread] = []

    def hold_the_write_lock(locked: threading.Event) -> None:
        db = sqlite3.connect(path, timeout=30, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait()
        db.execute("ROLLBACK")
        db.close()

    def begin() -> None:
        locked = threading.Event()
        holder.append(threading.Thread(target=hold_the_write_lock, args=(locked,), daemon=True))
        holder[-1].start()
        assert locked.wait(10), "took the write lock"

    def end() -> None:
        release.set()
        holder[-1].join(10)
        release.clear()

    try:
        async with serve_bot(slack, model, database_url, journal_dir=journal_dir, **kwargs) as h:
            yield h, Outage(begin, end)
    finally:
        release.set()


def bot_replies(h: Harness, channel: str, thread_ts: str) -> list[dict[str, Any]]:
    return [m for m in h.slack.thread(channel, thread_ts) if m.get("user") == h.slack.bot_user_id]


async def health(h: Harness) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{h.url}/healthz") as resp:
        return resp.status, await resp.json()


async def asked(h: Harness, text: str, answer: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A mention and the bot's (last) reply message in its thread."""
    h.model.reply(answer)
    event = await h.mention(text, channel="C1")
    await wait_until(lambda: [m for m in bot_replies(h, "C1", event["ts"]) if not m.get("streaming")])
    return event, bot_replies(h, "C1", event["ts"])[-1]


async def opened_fix_modal(h: Harness, message: dict[str, Any], user: str) -> dict[str, Any]:
    before = len(h.slack.views)
    assert (await h.sender.action(click(message, "C1", "fix", "fix", user=user)))[0] == 200
    await wait_until(lambda: len(h.slack.views) > before)
    return list(h.slack.views.values())[-1]


async def react(h: Harness, kind: str, name: str, user: str, message: dict[str, Any]) -> None:
    status, _ = await h.sender.event(reaction(kind, name, user=user, channel="C1", ts=message["ts"]))
    assert status == 200, "acknowledged at once, database or not"


async def vote(h: Harness, message: dict[str, Any], value: str, user: str) -> None:
    status, _ = await h.sender.action(click(message, "C1", "vote", value, user=user, kind="feedback_buttons"))
    assert status == 200


async def rows_by_request(h: Harness) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in await h.store.list_calls():
        counts[call.request_ts] = counts.get(call.request_ts, 0) + 1
    return counts


# -- a long outage while people vote, correct and ask ---------------------------------------------


async def test_a_database_outage_loses_no_vote_correction_or_call_row(database_url: str):
    async with FakeSlack() as slack, FakeOpenAI() as model, \
            bot_with_outage(database_url, slack=slack, model=model) as (h, outage):
        first, a = await asked(h, "first question", "Answer A.")
        second, b = await asked(h, "second question", "Answer B.")
        await h.written()
        view = await opened_fix_modal(h, a, user="U7")
        # An answer that is still streaming when the database goes away.
        model.reply(chunks=[f"part {i} " for i in range(20)], chunk_delay=0.15)
        streaming = await h.mention("a long one", channel="C1")
        await wait_until(lambda: slack.calls("chat.startStream")[2:])

        outage.begin()
        started = time.monotonic()
        await react(h, "reaction_added", "+1", "U2", a)
        await react(h, "reaction_added", "-1", "U3", b)
        await react(h, "reaction_removed", "+1", "U2", a)
        await react(h, "reaction_added", "+1", "U2", a)  # in order: U2's vote ends up 👍
        await react(h, "reaction_added", "no_entry_sign", "U5", b)
        for value in ("up", "up", "down"):  # 👍, 👍 again (withdrawn), then 👎
            await vote(h, a, value, "U4")
        status, body = await h.sender.action(submission(view, ["Answer A, corrected."], user="U7"))
        assert status == 200 and body in ("", "{}"), "the modal closes: the correction is kept"
        during, d = await asked(h, "asked during the outage", "Answer D.")
        await vote(h, d, "up", "U6")  # on an answer whose row is not in the database yet
        await wait_until(lambda: [m for m in bot_replies(h, "C1", streaming["ts"]) if not m.get("streaming")],
                         timeout=10)
        status, report = await health(h)
        assert status == 503 or report["backlog"]["pending"] > 0
        assert report["backlog"]["pending"] >= 10

        await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - started)))
        outage.end()
        await h.written(timeout=30)

        assert await rows_by_request(h) == {first["ts"]: 1, second["ts"]: 1, streaming["ts"]: 1, during["ts"]: 1}
        calls = {c.request_ts: c for c in await h.store.list_calls()}
        assert calls[streaming["ts"]].status == "ok"
        assert calls[streaming["ts"]].answer == "".join(f"part {i} " for i in range(20))
        assert calls[during["ts"]].answer == "Answer D."
        assert await h.store.votes(calls[first["ts"]].id) == {"U2": 1, "U4": -1}
        assert await h.store.votes(calls[second["ts"]].id) == {"U3": -1}
        assert (await h.store.get_call(calls[second["ts"]].id)).excluded is True
        assert await h.store.votes(calls[during["ts"]].id) == {"U6": 1}
        assert [c.text for c in await h.store.corrections(calls[first["ts"]].id)] == ["Answer A, corrected."]
        await wait_until(lambda: [m for m in bot_replies(h, "C1", first["ts"])
                                  if "corrected <" in slack.text_of(m)], timeout=10)
        status, report = await health(h)
        assert status == 200 and report["backlog"] == {"pending": 0, "oldest_seconds": 0.0, "refused": 0}


async def test_regenerate_during_an_outage_runs_the_answer_again_and_links_it_when_the_database_is_back(
        database_url: str):
    """The answer's row is still in the journal: "Regenerate" runs its exact input again from there
    (it used to do nothing at all: the database knew no such answer yet), and the new row is linked
    to the original once both are written."""
    async with FakeSlack() as slack, FakeOpenAI() as model, \
            bot_with_outage(database_url, slack=slack, model=model) as (h, outage):
        await asked(h, "warm up", "Fine.")
        await h.written()
        outage.begin()
        event, answer = await asked(h, "name a color", "Blue.")
        model.reply("Green.")
        assert (await h.sender.action(click(answer, "C1", "regenerate", "regenerate")))[0] == 200
        await wait_until(lambda: len([m for m in bot_replies(h, "C1", event["ts"]) if not m.get("streaming")]) == 2,
                         timeout=15)
        assert model.requests[-1]["messages"] == model.requests[-2]["messages"]
        assert not slack.calls("chat.postEphemeral"), "nothing to apologise for"
        outage.end()
        await h.written(timeout=30)
        calls = {c.answer: c for c in await h.store.list_calls()}
        assert calls["Green."].parent_call_id == calls["Blue."].id
        assert calls["Green."].trigger == "regenerate" and calls["Green."].input_hash == calls["Blue."].input_hash


# -- votes that arrive before their answer's row ----------------------------------------------------


async def test_a_vote_on_an_answer_still_being_written_counts_once_its_row_is(bot: Harness):
    bot.model.reply(chunks=[f"part {i} " for i in range(15)], chunk_delay=0.1)
    event = await bot.mention("a long one", channel="C1")
    [streaming] = await wait_until(lambda: bot_replies(bot, "C1", event["ts"]))
    assert streaming.get("streaming"), "still being written"
    await react(bot, "reaction_added", "+1", "U2", streaming)
    await react(bot, "reaction_added", "-1", "U3", streaming)
    await react(bot, "reaction_removed", "-1", "U3", streaming)
    [call] = await bot.calls(1)
    await bot.written()
    assert await bot.store.votes(call.id) == {"U2": 1}


async def test_a_reaction_on_a_message_that_is_no_answer_is_not_kept_waiting(bot: Harness):
    root = bot.slack.add_message("C1", "just people talking", user="U1")
    await react(bot, "reaction_added", "+1", "U2", {"ts": root})
    await bot.written(timeout=2)
    assert await bot.store.list_calls() == []


# -- a restart in the middle of an outage ----------------------------------------------------------


async def test_a_restart_during_an_outage_keeps_the_backlog_and_writes_it_once(database_url: str, tmp_path: Path):
    journal_dir = tmp_path / "journal"
    async with FakeSlack() as slack, FakeOpenAI() as model:
        async with bot_with_outage(database_url, slack=slack, model=model, journal_dir=journal_dir,
                                   FLYWHEEL_SHUTDOWN_GRACE="1") as (h, outage):
            first, a = await asked(h, "first question", "Answer A.")
            await h.written()
            view = await opened_fix_modal(h, a, user="U7")
            outage.begin()
            await react(h, "reaction_added", "+1", "U2", a)
            await vote(h, a, "down", "U3")
            assert (await h.sender.action(submission(view, ["Fixed A."], user="U7")))[0] == 200
            during, _ = await asked(h, "asked during the outage", "Answer D.")
            await wait_until(lambda: h.fw.journal.backlog >= 4)  # vote, click, correction, the new row
        # The process is gone; its journal is on disk. The database comes back; a new process starts.
        outage.end()
        assert [p.suffix for p in journal_dir.iterdir()].count(".jsonl") == 1
        async with serve_bot(slack, model, database_url, journal_dir=journal_dir) as again:
            await wait_until(lambda: again.fw.journal.backlog == 0, timeout=15)
            assert await rows_by_request(again) == {first["ts"]: 1, during["ts"]: 1}
            call = (await again.store.list_calls())[0]
            assert await again.store.votes(call.id) == {"U2": 1, "U3": -1}
            assert [c.text for c in await again.store.corrections(call.id)] == ["Fixed A."]
        assert not [p for p in journal_dir.glob("*.jsonl")], "an adopted journal is removed once written"


# -- a correction that can be neither stored nor kept ----------------------------------------------


async def test_a_correction_that_cannot_be_kept_leaves_the_modal_open_with_the_reason(database_url: str,
                                                                                   tmp_path: Path):
    async with FakeSlack() as slack, FakeOpenAI() as model, \
            bot_with_outage(database_url, slack=slack, model=model) as (h, outage):
        _, a = await asked(h, "a question", "An answer.")
        await h.written()
        view = await opened_fix_modal(h, a, user="U7")
        h.fw.journal.max_bytes = 0  # the local disk is full

        status, body = await h.sender.action(submission(view, ["Stored directly."], user="U7"))
        assert status == 200 and body in ("", "{}"), "the database is up: stored directly"
        [call] = await h.store.list_calls()
        assert [c.text for c in await h.store.corrections(call.id)] == ["Stored directly."]

        outage.begin()
        status, body = await h.sender.action(submission(view, ["Lost?"], user="U7"))
        assert status == 200
        assert '"response_action":"errors"' in body.replace(" ", "")
        assert "could not save" in body
        outage.end()
        assert [c.text for c in await h.store.corrections(call.id)] == ["Stored directly."]


# -- the journal on its own --------------------------------------------------------------------------


async def test_a_journal_left_behind_is_adopted_and_applied_once_even_if_replayed(store, tmp_path: Path):
    from bot.journal import new_op
    from bot.store import CallLog

    directory = tmp_path / "journal"
    directory.mkdir()
    log_ = CallLog(trigger="mention", prompt_name="ask", prompt_version="v1", model="m", channel_id="C1",
                   request_ts="1.0", messages=[{"role": "user", "content": "hi"}], answer="hello",
                   message_ts=["2.0"])
    import dataclasses
    import json

    call = new_op("call", log=dataclasses.asdict(log_), prompt=None)
    up = new_op("reaction", channel="C1", ts="2.0", user="U2", name="+1", value=1, added=True, event_ts="3.0")
    # A crash: both ops were applied, but the "done" line never made it; then a torn last line.
    text = json.dumps(call) + "\n" + json.dumps(up) + "\n" + '{"id": "cut off in the mid'
    (directory / "dead-process.jsonl").write_text(text)
    await store.apply([call, up])

    journal = Journal(directory, store)
    journal.open()
    assert journal.backlog == 2
    journal.start()
    await wait_until(lambda: journal.backlog == 0)
    [row] = await store.list_calls()
    assert row.op_id == call["id"] and await store.votes(row.id) == {"U2": 1}
    assert not (directory / "dead-process.jsonl").exists()
    await journal.close()
    assert not directory.exists(), "nothing left: the folder goes too"


async def test_an_op_the_database_refuses_for_good_is_set_aside_and_the_rest_go_on(store, tmp_path: Path):
    from bot.journal import new_op

    journal = Journal(tmp_path / "journal", store)
    journal.open()
    journal.start()
    bad = await journal.keep(new_op("mystery", channel="C1", ts="1.0"))
    good = await journal.keep(new_op("correction", call_id=None, channel="C9", ts="9.9", user="U1", text="x"))
    await wait_until(lambda: journal.backlog == 0)
    assert bad.result() is None and good.result() is None  # not an answer: nothing to attach it to
    assert journal.dead == 1
    dead = tmp_path / "journal" / "dead.jsonl"
    assert "mystery" in dead.read_text()
    assert {path.stat().st_mode & 0o777 for path in (dead, journal.path)} == {0o600}, "what people wrote"
    await journal.close()


# -- SIGTERM during a burst: accepted work is answered or apologised for --------------------------


async def test_sigterm_during_a_burst_answers_or_apologises_for_every_acked_mention(database_url: str,
                                                                                   tmp_path: Path):
    """The real `flywheel run` process, HTTP mode. Mentions arrive all at once; SIGTERM comes when
    half of them are acknowledged. Each acknowledged mention ends in an answer or an apology in
    its thread and exactly one row; each refused one (503, or no connection) in neither."""
    n, grace = 40, 3.0
    async with FakeSlack() as slack, FakeOpenAI() as model:
        for k in range(n):  # every fourth answer would never finish: the grace runs out on it
            if k % 4 == 3:
                model.reply(chunks=[f"Never finished {k}. "], stall_after=1)
            else:
                model.reply(chunks=[f"Answer {k} ", "is ", "complete."], chunk_delay=0.3)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = clean_env(SLACK_BOT_TOKEN=slack.bot_token, SLACK_SIGNING_SECRET=SIGNING_SECRET,
                        SLACK_API_URL=slack.url, OPENAI_API_KEY=model.api_key, OPENAI_BASE_URL=model.url,
                        PROMPTS_DIR=str(PROMPTS), DATABASE_URL=database_url,
                        FLYWHEEL_SHUTDOWN_GRACE=str(grace), FLYWHEEL_JOURNAL_DIR=str(tmp_path / "journal"))
        async with flywheel_process("run", "--http", "--port", str(port), cwd=tmp_path, env=env) as proc:
            await wait_healthy(url, proc)
            events = [mention(f"question {k}", channel=f"C{k % 20}") for k in range(n)]
            for event in events:
                slack.add_message(event["channel"], event["text"], user=event["user"], ts=event["ts"])
            acked: list[dict[str, Any]] = []

            async def deliver(event: dict[str, Any]) -> None:
                try:
                    status, _ = await sender.event(event)
                except aiohttp.ClientError:
                    return  # the port is closed: not acknowledged, Slack would deliver it again
                if status == 200:
                    acked.append(event)
                else:
                    assert status == 503, status

            async def terminate() -> None:
                await wait_until(lambda: len(acked) >= n // 2, timeout=10)
                proc.send_signal(signal.SIGTERM)

            async with SlackSender(f"{url}/slack/events", SIGNING_SECRET) as sender:
                stopping = asyncio.create_task(terminate())
                await asyncio.gather(*(deliver(e) for e in events[: n // 2]))
                await stopping
                await asyncio.gather(*(deliver(e) for e in events[n // 2:]))
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()[-3000:]

    store = Store(database_url)
    try:
        rows = await store.list_calls()
    finally:
        await store.close()
    by_request: dict[str, list[Any]] = {}
    for row in rows:
        by_request.setdefault(row.request_ts, []).append(row)
    assert len(acked) >= n // 2
    assert sorted(by_request) == sorted(e["ts"] for e in acked), "a row for every acknowledged mention, no other"
    interrupted = 0
    for event in acked:
        [row] = by_request[event["ts"]]
        [reply] = [m for m in slack.thread(event["channel"], event["ts"]) if m.get("user") == slack.bot_user_id]
        assert not reply.get("streaming")
        text = slack.text_of(reply)
        if row.status == "ok":
            assert text == row.answer and text.endswith("is complete.")
        else:
            interrupted += 1
            assert row.error_type == "Interrupted" and "restarted" in text
    for event in events:
        if event not in acked:
            assert slack.thread(event["channel"], event["ts"])[1:] == []
    assert 0 < interrupted < len(acked), "both ways were taken: finished within the grace, and interrupted"


# -- a crash mid-answer: the next start apologises ---------------------------------------------------


async def test_a_crash_mid_answer_ends_in_an_apology_and_one_row_after_the_restart(database_url: str,
                                                                                  tmp_path: Path):
    """kill -9 while answers stream (no shutdown, no chance to apologise): at the next start, each
    answer that was under way gets the apology and the error row a shutdown would have given it.
    Before, the people who asked waited for ever and the paid calls had no row. The apology ends
    what the crash left open: the half-streamed answer stops with it, the Thinking… note becomes
    it (before, the stream and the note stayed as they were, with the apology under them). An
    answer that had finished before the crash gets neither a second row nor an apology."""
    async with FakeSlack() as slack, FakeOpenAI() as model:
        model.reply("Finished before the crash.")
        for k in range(3):
            model.reply(chunks=[f"Cut off {k}. "] * 100, chunk_delay=0.1)  # 10 s: the crash comes first
        model.reply("Too late.", first_token_delay=10)  # the thread shows Thinking… when the crash comes
        env = clean_env(SLACK_BOT_TOKEN=slack.bot_token, SLACK_SIGNING_SECRET=SIGNING_SECRET,
                        SLACK_API_URL=slack.url, OPENAI_API_KEY=model.api_key, OPENAI_BASE_URL=model.url,
                        PROMPTS_DIR=str(PROMPTS), DATABASE_URL=database_url,
                        FLYWHEEL_JOURNAL_DIR=str(tmp_path / "journal"))

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        finished = mention("finished", channel="C1")
        cut = [mention(f"question {k}", channel=f"C{k + 2}") for k in range(3)]
        slow = mention("a question the model is slow to take up", channel="C9")
        for event in (finished, *cut, slow):
            slack.add_message(event["channel"], event["text"], user=event["user"], ts=event["ts"])
        async with flywheel_process("run", "--http", "--port", str(port), cwd=tmp_path, env=env) as proc:
            await wait_healthy(url, proc)
            async with SlackSender(f"{url}/slack/events", SIGNING_SECRET) as sender:
                assert (await sender.event(finished))[0] == 200
                await wait_until(lambda: [m for m in slack.thread("C1", finished["ts"])[1:] if not m.get("streaming")])
                for event in cut:
                    assert (await sender.event(event))[0] == 200
                await wait_until(lambda: all(slack.thread(e["channel"], e["ts"])[1:] for e in cut), timeout=10)
                assert (await sender.event(slow))[0] == 200
                await wait_until(lambda: slack.thread("C9", slow["ts"])[1:], timeout=10)
            left = {e["ts"]: [dict(m) for m in slack.thread(e["channel"], e["ts"])[1:]] for e in (*cut, slow)}
            killed = datetime.now(UTC).replace(tzinfo=None)
            proc.kill()  # SIGKILL: nothing runs after this
            await proc.wait()

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        async with flywheel_process("run", "--http", "--port", str(port), cwd=tmp_path, env=env) as proc:
            await wait_healthy(url, proc)

            def apologies(event: dict[str, Any]) -> list[dict[str, Any]]:
                return [m for m in slack.thread(event["channel"], event["ts"])
                        if m.get("user") == slack.bot_user_id and "restarted" in slack.text_of(m)]

            await wait_until(lambda: all(apologies(e) for e in (*cut, slow)), timeout=15)
            store = Store(database_url)
            try:
                async def rows() -> list[Any]:
                    return await store.list_calls()

                for _ in range(100):
                    if len(await rows()) >= 5:
                        break
                    await asyncio.sleep(0.1)
                calls = {c.request_ts: c for c in await rows()}
                assert len(await rows()) == 5, "one row per question, no more"
            finally:
                await store.close()
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err.decode()[-3000:]

    assert calls[finished["ts"]].status == "ok" and not apologies(finished)
    for event in (*cut, slow):
        row = calls[event["ts"]]
        assert (row.status, row.error_type, row.prompt_name) == ("error", "Interrupted", "ask")
        assert row.created_at.replace(tzinfo=None) < killed, "logged when the answer started, not at the restart"
        assert row.request_text.endswith(event["text"].split("> ", 1)[-1])
        assert len(apologies(event)) == 1
    for k, event in enumerate(cut):
        [streamed] = left[event["ts"]]
        assert streamed["streaming"] and slack.text_of(streamed).startswith(f"Cut off {k}.")
        [answer] = slack.thread(event["channel"], event["ts"])[1:]  # the same message, no other
        assert answer["ts"] == streamed["ts"] and not answer["streaming"]
        text = slack.text_of(answer)
        assert text.startswith(f"Cut off {k}.") and text.rstrip().endswith("_") and "restarted" in text
    [note] = left[slow["ts"]]
    assert "Thinking" in slack.text_of(note)
    [apology] = slack.thread("C9", slow["ts"])[1:]
    assert apology["ts"] == note["ts"] and "restarted" in slack.text_of(apology) and "Thinking" not in slack.text_of(apology)
    assert not list((tmp_path / "journal").glob("*.underway")), "nothing left to apologise for at the next start"


def test_the_underway_notes_of_a_running_process_are_not_taken_and_a_dead_ones_are(tmp_path: Path):
    """bot.underway on its own: what each start adopts, what a torn line or a crossed-off answer
    leaves, and that the file of a steady stream of answers starts over instead of growing."""
    row = {"trigger": "mention", "prompt_name": "ask", "prompt_version": "v", "model": "m", "messages": []}
    running, dead = Underway(tmp_path), Underway(tmp_path)
    assert running.open() == [] and dead.open() == []
    running.started("r1", channel_id="C1", thread_ts="1.1", row=row)
    for key in ("d1", "d2", "d3"):
        dead.started(key, channel_id="C2", thread_ts=f"{key}.0", row=row)
    dead.shows("d1", ("status", "5.1"))  # Thinking…
    dead.shows("d1", ("stream", "5.2"))  # the answer streams (the note is gone)
    dead.shows("d3", ("stream", "6.1"))
    dead.shows("d3", None)  # stopped: a long answer goes on in a new message...
    dead.finished("d2")
    with dead.path.open("ab") as f:
        f.write(b'{"key": "d4", "chan')  # the crash cut the last line short
    os.close(dead._lock_fd)  # the process is gone: its lock with it
    dead._lock_fd = -1

    after = Underway(tmp_path)
    orphans = after.open()
    assert sorted(o.key for o in orphans) == ["d1", "d3"], "not the running process's, not the crossed-off one"
    assert {o.thread_ts for o in orphans} == {"d1.0", "d3.0"} and orphans[0].row == row
    assert {o.key: o.message for o in orphans} == {"d1": ("stream", "5.2"), "d3": None}, "what each left open"
    after.settled(orphans[0])
    again = Underway(tmp_path)
    assert again.open() == [], "adopted already: locked by the process that took it"
    after.close()  # stopped before it was done: what was not settled is adopted next time
    assert [o.key for o in Underway(tmp_path).open()] == ["d3"]

    for n in range(100):  # one answer after another: the file starts over each time none is open
        running.finished(f"r{n}")
        running.started(f"r{n + 1}", channel_id="C1", thread_ts="1.1", row=row)
    assert running.path.stat().st_size < 300
    running.finished("r100")
    assert running.path.stat().st_size == 0
    os.close(running._lock_fd)  # it dies with nothing under way: the next start just clears its file away
    running._lock_fd = -1
    assert Underway(tmp_path).open() == [] and not running.path.exists()


async def test_an_answer_cut_off_by_a_crash_long_ago_gets_its_row_but_no_apology(bot: Harness):
    """The bot was down for days after the crash: the row is written, the thread left alone."""
    row = {"trigger": "mention", "prompt_name": "ask", "prompt_version": "v1", "model": "m", "messages": [],
           "channel_id": "C1", "request_ts": "1.000001", "request_text": "hello?"}
    old = Orphan("k-old", "C1", "1.000001", row, Path("/nonexistent"), time.time() - 3 * 86400)
    assert await bot.fw.conversation.apologise_for([old], bot.fw.client) == 1
    await bot.written()
    [call] = await bot.store.list_calls()
    assert (call.status, call.error_type, call.request_text) == ("error", "Interrupted", "hello?")
    assert not bot.slack.calls("chat.postMessage")


async def test_the_stream_a_crash_left_open_ends_with_the_apology_or_gets_it_under_it(bot: Harness):
    """The half-streamed answer stops with the apology, even days later (an edit pings no one);
    a stream Slack has closed meanwhile gets the apology as a new message under it, as before."""
    row = {"trigger": "mention", "prompt_name": "ask", "prompt_version": "v1", "model": "m", "messages": [],
           "channel_id": "C1", "request_ts": "1.000001", "request_text": "hello?"}
    bot.slack.add_message("C1", "hello?", user="U1", ts="1.000001")
    opened = [await bot.fw.client.chat_startStream(channel="C1", thread_ts="1.000001", markdown_text=f"Half {k}",
                                                   recipient_team_id="T1", recipient_user_id="U1")
              for k in range(2)]
    await bot.fw.client.chat_stopStream(channel="C1", ts=opened[1]["ts"])  # Slack closed this one
    old = Orphan("k-old", "C1", "1.000001", row, Path("/nonexistent"), time.time() - 3 * 86400,
                 message=("stream", opened[0]["ts"]))
    closed = Orphan("k-closed", "C1", "1.000001", {**row, "request_ts": "1.000002"}, Path("/nonexistent"),
                    time.time(), message=("stream", opened[1]["ts"]))
    assert await bot.fw.conversation.apologise_for([old, closed], bot.fw.client) == 2
    half, other, apology = bot.slack.thread("C1", "1.000001")[1:]
    assert not half["streaming"] and bot.slack.text_of(half).startswith("Half 0") and "restarted" in bot.slack.text_of(half)
    assert bot.slack.text_of(other) == "Half 1"
    assert "restarted" in bot.slack.text_of(apology)


async def test_an_apology_for_a_dm_cut_off_by_a_crash_goes_where_the_answer_would_have(bot: Harness):
    """A direct message is answered in the conversation itself, not in a thread: so is its apology."""
    bot.model.reply(chunks=["Hi ", "there."], chunk_delay=0.3)
    await bot.message("hello bot", channel="D1", channel_type="im")
    [noted] = await wait_until(lambda: [f for f in bot.fw.settings.journal_dir.glob("*.underway") if f.stat().st_size])
    note = json.loads(noted.read_bytes().splitlines()[0])
    assert (note["channel"], note["thread_ts"]) == ("D1", None)
    await bot.calls(1)
    cut_off = Orphan("k-dm", "D1", None, note["row"], Path("/nonexistent"), time.time())  # as a crash leaves it
    assert await bot.fw.conversation.apologise_for([cut_off], bot.fw.client) == 1
    [apology] = [m for m in bot.slack.bot_messages("D1") if "restarted" in bot.slack.text_of(m)]
    assert apology.get("thread_ts", apology["ts"]) == apology["ts"], "in the conversation, not a thread"
