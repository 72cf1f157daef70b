"""Team controls (prompts/team.yaml): channel defaults, budgets, what is kept, and prune."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from bot.budgets import estimate
from bot.home import build_home
from bot.models import Call, CallStatus
from bot.prompts import PromptSet, load_file
from bot.store import CallLog, Store

from conftest import PROMPTS, clean_env, serve_bot
from fakes import FakeOpenAI, FakeSlack, wait_until

SUPPORT = "C0SUPPORT1"
TINY = ("---\nname: tiny\ndescription: A tiny prompt for budget tests\nmodel:\n  options:\n    max_tokens: 100\n"
        "metadata:\n  slack:\n    command: /tiny\n---\nsystem:\nBe brief.\n\nuser:\n{{ text }}\n")


@pytest.fixture
def prompts_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "prompts"
    shutil.copytree(PROMPTS, folder)
    (folder / "tiny.prompty").write_text(TINY)
    return folder


def team(folder: Path, text: str) -> PromptSet:
    (folder / "team.yaml").write_text(text)
    return PromptSet.load(folder)


# -- the file ---------------------------------------------------------------------------------------


def test_team_file_is_read_and_its_mistakes_are_reported_with_their_line(prompts_dir: Path):
    good = team(prompts_dir, f"admins: [UADMIN1]\nbudgets:\n  per_user: {{tokens: 5000}}\n  total: {{cost_usd: 50}}\n"
                             f"channels:\n  {SUPPORT}:\n    prompt: summarize\n    model: gpt-5.4-nano\n"
                             "    log_content: false\n    budget: {cost_usd: 5}\n")
    assert good.problems == []
    rules = good.team.channel(SUPPORT)
    assert (rules.prompt, rules.model, rules.log_content) == ("summarize", "gpt-5.4-nano", False)
    assert good.team.channel_limits(SUPPORT).cost_usd == 5 and good.team.per_user.tokens == 5000
    assert good.team.channel("C0OTHER01").prompt is None and good.team.logs_content("C0OTHER01")

    bad = team(prompts_dir, f"budgets:\n  per_user: {{tokens: lots}}\nchannels:\n  '#support':\n    prompt: ask\n"
                            f"  {SUPPORT}:\n    log_content: false\n    colour: blue\n")
    reasons = [(p.path.name, p.line, p.reason) for p in bad.problems]
    assert ("team.yaml", 2, "budgets.per_user.tokens: must be a whole number of tokens per day, got 'lots'") in reasons
    assert any(line == 4 and "by its id" in why for _, line, why in reasons)
    assert any(line == 8 and "colour: unknown" in why for _, line, why in reasons)
    assert not bad.team.limited  # a mistake in a budget must not leave half the budgets in force
    assert not bad.team.logs_content(SUPPORT)  # ... but an opt-out of content logging still holds

    missing = team(prompts_dir, f"channels:\n  {SUPPORT}:\n    prompt: nosuch\n")
    [problem] = missing.problems
    assert problem.line == 3 and "no valid prompt named 'nosuch'" in problem.reason
    assert missing.route("hello", channel=SUPPORT)[0].name == "ask"


# -- channels -----------------------------------------------------------------------------------------


@pytest.mark.db
async def test_a_channel_gets_its_own_default_prompt_and_model(database_url: str, prompts_dir: Path):
    (prompts_dir / "team.yaml").write_text(f"channels:\n  {SUPPORT}:\n    prompt: tiny\n    model: gpt-5.4-nano\n")
    async with FakeSlack() as slack, FakeOpenAI() as model, \
            serve_bot(slack, model, database_url, PROMPTS_DIR=str(prompts_dir)) as h:
        await h.mention("where is my invoice?", channel=SUPPORT)
        await h.mention("where is my invoice?", channel="C1")
        await h.mention("explain: a monad", channel=SUPPORT)  # a named prompt still wins
        calls = sorted(await h.calls(3), key=lambda c: (c.channel_id, c.prompt_name))
        assert [(c.channel_id, c.prompt_name, c.model) for c in calls] == [
            ("C0SUPPORT1", "explain", "gpt-5.4-nano"), ("C0SUPPORT1", "tiny", "gpt-5.4-nano"),
            ("C1", "ask", "gpt-5.4-mini")]
        assert {r["model"] for r in model.requests} == {"gpt-5.4-nano", "gpt-5.4-mini"}

        view = build_home([], team=h.fw.conversation.prompts.team)
        shown = json.dumps(view)
        assert f"<#{SUPPORT}>" in shown and "tiny" in shown and "gpt-5.4-nano" in shown


async def test_a_prompt_kept_to_some_channels_answers_only_there(tmp_path: Path, prompts_dir: Path):
    (prompts_dir / "tiny.prompty").write_text(TINY.replace("    command: /tiny\n",
                                                           f"    command: /tiny\n    channels: [{SUPPORT}]\n"))
    async with FakeSlack() as slack, FakeOpenAI() as model, \
            serve_bot(slack, model, f"sqlite:///{tmp_path / 'c.db'}", PROMPTS_DIR=str(prompts_dir)) as h:
        status, body = await h.sender.command("/tiny", "hi", channel_id="C1")
        assert status == 200 and "works only in <#C0SUPPORT1>" in body
        await h.mention("tiny: hello", channel="C1")  # not a prompt here: the words are the question
        await h.mention("tiny: hello", channel=SUPPORT)
        calls = await h.calls(2)
        assert sorted((c.channel_id, c.prompt_name, c.request_text) for c in calls) == [
            ("C0SUPPORT1", "tiny", "hello"), ("C1", "ask", "tiny: hello")]


# -- budgets -----------------------------------------------------------------------------------------


def held(question: str) -> int:
    """What one call of the tiny prompt holds against a token budget."""
    tiny, problems = load_file(Path("tiny.prompty"), raw=TINY.encode())
    assert tiny is not None, problems
    return sum(estimate(tiny.messages(question), tiny.options))


@pytest.mark.db
async def test_a_budget_refuses_politely_at_the_limit_logs_it_exempts_admins_and_resets(
        database_url: str, prompts_dir: Path):
    one = held("question 1")
    (prompts_dir / "team.yaml").write_text(
        f"admins: [UADMIN1]\nbudgets:\n  per_user: {{tokens: {2 * one}}}\n")
    async with FakeSlack() as slack, FakeOpenAI() as model, \
            serve_bot(slack, model, database_url, PROMPTS_DIR=str(prompts_dir)) as h:
        for _ in range(3):
            model.reply("ok", usage=(one - 100, 100))  # each uses exactly what it held
        for i in (1, 2, 3):
            event = await h.mention(f"tiny: question {i}", user="U7", channel="C1")
            await h.calls(i)
        refused = max(await h.calls(3), key=lambda c: c.id)
        assert refused.status == CallStatus.REFUSED and refused.error_type == "Budget.user_tokens"
        assert refused.prompt_tokens is None and len(model.requests) == 2  # the model was not asked
        [note] = [m for m in slack.thread("C1", event["ts"]) if m.get("user") == slack.bot_user_id]
        text = slack.text_of(note)
        assert "your daily Flywheel budget" in text and f"{2 * one:,} tokens" in text and "resets at 00:00 UTC, in " in text
        assert not note.get("blocks") or "feedback" not in json.dumps(note["blocks"])  # nothing to rate

        await h.mention("tiny: question 4", user="UADMIN1", channel="C1")  # admins are exempt
        await h.calls(4)
        assert len(model.requests) == 3

        tomorrow = datetime.now(UTC) + timedelta(days=1)
        h.fw.conversation.budgets.clock = lambda: tomorrow  # a new UTC day: a fresh budget
        await h.mention("tiny: question 5", user="U7", channel="C1")
        five = max(await h.calls(5), key=lambda c: c.id)
        assert five.status == CallStatus.OK and len(model.requests) == 4

        rows = [r for r in await h.store.usage_by_version(sources=None)]
        assert sum(r["calls"] for r in rows) == 4  # stats count model calls, not refusals


@pytest.mark.db
async def test_a_budget_holds_across_two_processes(database_url: str, prompts_dir: Path):
    one = held("question 00")
    (prompts_dir / "team.yaml").write_text(f"budgets:\n  total: {{tokens: {3 * one + one // 2}}}\n")
    async with FakeSlack() as slack, FakeOpenAI() as model, \
            serve_bot(slack, model, database_url, PROMPTS_DIR=str(prompts_dir)) as first, \
            serve_bot(slack, model, database_url, PROMPTS_DIR=str(prompts_dir)) as second:
        model.default_reply(lambda _: "ok", first_token_delay=1.0)  # every hold is taken before any settles
        await asyncio.gather(*(bot.mention(f"tiny: question {i:02d}", user=f"U{i}", channel=f"C{i:02d}")
                               for i, bot in zip(range(12), [first, second] * 6, strict=True)))
        await second.settle()
        calls = await first.calls(12, timeout=15)
        assert sorted(c.status for c in calls).count(CallStatus.OK) == 3
        assert [c.status for c in calls].count(CallStatus.REFUSED) == 9
        assert len(model.requests) == 3


# -- what is kept ------------------------------------------------------------------------------------


@pytest.mark.db
async def test_a_channel_that_opts_out_keeps_tokens_and_cost_but_no_text(database_url: str, prompts_dir: Path):
    (prompts_dir / "team.yaml").write_text(f"channels:\n  {SUPPORT}:\n    log_content: false\n")
    async with FakeSlack() as slack, FakeOpenAI() as model, \
            serve_bot(slack, model, database_url, PROMPTS_DIR=str(prompts_dir)) as h:
        model.reply(chunks=["Your invoice ", "is in Billing."], chunk_delay=0.3, usage=(30, 7))
        event = await h.mention("my card number is 4111 1111 1111 1111, where is my invoice?", channel=SUPPORT)
        [noted] = await wait_until(lambda: [f for f in h.fw.settings.journal_dir.glob("*.underway")
                                            if f.stat().st_size])  # the answer under way, on disk
        assert b"4111" not in noted.read_bytes(), "not on disk either, while it streams"
        [call] = await h.calls(1)
        assert (call.messages, call.request_text, call.answer, call.content_logged) == ([], "", "", False)
        assert (call.prompt_tokens, call.completion_tokens) == (30, 7) and call.cost_usd
        # a follow-up still sees the answer (from Slack), though the log has no text
        model.reply("Yes.")
        await h.message("and the one before?", user="U1", channel=SUPPORT, thread_ts=event["ts"])
        await h.calls(2)
        assert any(m["role"] == "assistant" and "Billing" in m["content"] for m in model.requests[1]["messages"])
        env = clean_env(DATABASE_URL=database_url, PROMPTS_DIR=str(prompts_dir))
        out = subprocess.run([sys.executable, "-m", "bot", "export", "--format", "sft", "--all"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert "4111" not in out.stdout + out.stderr


@pytest.mark.db
async def test_prune_removes_old_text_in_batches_while_the_bot_answers(database_url: str, prompts_dir: Path):
    async with FakeSlack() as slack, FakeOpenAI() as model, \
            serve_bot(slack, model, database_url, PROMPTS_DIR=str(prompts_dir)) as h:
        store: Store = h.store
        old_ids = [await store.record_call(CallLog(
            trigger="mention", prompt_name="ask", prompt_version="v1", model="gpt-5.4-mini",
            messages=[{"role": "user", "content": f"old secret {i}"}], request_text=f"old secret {i}",
            answer="old answer", channel_id="C1", message_ts=[f"1000.{i:06d}"], prompt_tokens=5,
            completion_tokens=5, cost_usd=0.01)) for i in range(12)]
        await store.add_correction(call_id=old_ids[0], user_id="U1", text="fixed old answer")
        await store.set_feedback(call_id=old_ids[1], user_id="U2", source="reaction", name="+1", value=1)
        async with store.session.begin() as s:
            await s.execute(update(Call).where(Call.id.in_(old_ids)).values(
                created_at=datetime.now(UTC) - timedelta(days=120)))

        dry = await store.prune(datetime.now(UTC) - timedelta(days=90), dry_run=True)
        assert (dry["calls"], dry["corrections"], dry["message_links"]) == (12, 1, 12)
        assert (await store.get_call(old_ids[0])).answer == "old answer"  # a dry run changes nothing

        pruning = asyncio.create_task(store.prune(datetime.now(UTC) - timedelta(days=90), batch=5))
        model.default_reply(lambda _: "new answer")
        await h.mention("a new question", channel="C1")
        counts = await pruning
        calls = await h.calls(13)
        assert (counts["calls"], counts["corrections"], counts["message_links"]) == (12, 1, 12)
        old = [c for c in calls if c.id in old_ids]
        assert all(c.answer == "" and c.messages == [] and not c.content_logged for c in old)
        assert all(c.prompt_tokens == 5 and c.cost_usd == 0.01 for c in old)  # the figures stay
        assert await store.votes(old_ids[1]) == {"U2": 1}
        assert await store.corrections(old_ids[0]) == []
        assert await store.call_for_message("C1", "1000.000003") is None
        [new] = [c for c in calls if c.id not in old_ids]
        assert new.answer == "new answer" and new.content_logged


def test_prune_command(tmp_path: Path):
    env = clean_env(DATABASE_URL=f"sqlite:///{tmp_path / 'p.db'}")
    subprocess.run([sys.executable, "-m", "bot", "db", "upgrade"], env=env, check=True, capture_output=True,
                   timeout=60)
    out = subprocess.run([sys.executable, "-m", "bot", "prune", "--older-than", "90d", "--dry-run"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("would remove the text of 0 call(s)"), out
    bad = subprocess.run([sys.executable, "-m", "bot", "prune", "--older-than", "ninety"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a duration like 90d" in bad.stderr
