"""`flywheel replay`: a candidate prompt on real logged inputs, scored against their references."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import signal
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.checks import checks_of
from bot.errors import PromptError
from bot.export import ExportOptions, export
from bot.export_queries import Filters
from bot.judge import outcome, positions, verdict
from bot.models import PromptVersion
from bot.prompts import Prompt, PromptSet, load_file
from bot.replay_inputs import split
from bot.replay_report import word_diff
from bot.stats import version_stats
from bot.store import CallLog, Store

from conftest import PROMPTS, REPO, Harness, clean_env, flywheel_process, on_terminal
from fakes import FakeOpenAI, wait_until

SKILLS = ["ask", "explain", "review", "rewrite", "summarize"]


# -- the judge is a prompt file, but not a Slack skill ---------------------------------------------


def test_the_shipped_judge_loads_but_is_no_skill() -> None:
    shipped = PromptSet.load(PROMPTS)
    assert shipped.problems == []
    assert list(shipped.prompts) == SKILLS and list(shipped.helpers) == ["judge"]
    assert shipped.get("judge") is None and shipped.by_command("/judge") is None
    assert shipped.route("judge this: A or B?")[0].name == "ask"  # a mention naming it goes to ask
    assert "judge" not in {p.name for p in shipped}


def test_slack_false_keeps_any_prompt_out_of_slack(tmp_path: Path) -> None:
    (tmp_path / "helper.prompty").write_text("---\nname: helper\nmetadata:\n  slack: false\n---\nuser:\n{{ text }}\n")
    (tmp_path / "skill.prompty").write_text("---\nname: skill\nmetadata:\n  slack: {}\n---\nuser:\n{{ text }}\n")
    prompts = PromptSet.load(tmp_path)
    assert list(prompts.prompts) == ["skill"] and list(prompts.helpers) == ["helper"]
    assert prompts.helpers["helper"].slack is False and prompts.get("skill").slack is True


def test_a_candidate_file_may_be_named_otherwise(tmp_path: Path) -> None:
    copy = tmp_path / "my-ask.prompty"
    shutil.copy(PROMPTS / "ask.prompty", copy)
    prompt, problems = load_file(copy, name="ask")
    assert problems == [] and prompt is not None and prompt.name == "ask" and prompt.path == copy
    prompt, problems = load_file(copy, name="summarize")
    assert prompt is None
    assert [str(p) for p in problems] == [
        f"{copy}:2: name: must equal the prompt it stands in for 'summarize', got 'ask'"]


# -- a seeded log, a changed prompt, the real command ----------------------------------------------

ASK = PromptSet.load(PROMPTS).get("ask")
TURNS = [{"role": "user", "content": "The deploy failed with exit code 137."},
         {"role": "assistant", "content": "That is the OOM killer: the container ran out of memory."}]
LONG = "what does this error mean in our billing service, and who owns it?"
CHECKS = '  checks:\n    - contains: "NEW"\n    - name: short\n      max_length: 40\n'


def candidate_file(folder: Path, *, checks: str = CHECKS, system: str = "You are a TERSE teammate.") -> Path:
    """A working copy of ask.prompty, changed: another system text, and checks."""
    text = (PROMPTS / "ask.prompty").read_text()
    text = text.replace('    usage_hint: "[your question]"\n---\n', f'    usage_hint: "[your question]"\n{checks}---\n')
    text = text.replace("You are a helpful, concise teammate", system, 1)
    path = folder / "my-ask.prompty"
    path.write_text(text)
    return path


def prompt_file(prompt: Prompt) -> dict[str, Any]:
    return {"name": prompt.name, "version": prompt.version, "path": str(prompt.path), "source": prompt.source,
            "model": prompt.model}


async def log_call(store: Store, text: str, answer: str, *, prompt: Prompt = ASK, turns: list | None = None,
                   votes: tuple[int, ...] = (), correction: str | None = None, **kw: Any) -> int:
    """One call as the bot logs it: the prompt's rendering with the thread's turns."""
    values: dict[str, Any] = {"trigger": "mention", "user_id": "U0ASKER01", "channel_id": "C0GENERAL",
                              "model": "gpt-5.4-mini", "finish_reason": "stop", "prompt_tokens": 900,
                              "completion_tokens": 60, "cost_usd": 0.0004, "latency_ms": 1800, **kw}
    messages = prompt.messages(text, turns or [], user=values["user_id"], channel=values["channel_id"],
                               date=datetime.now(UTC).date().isoformat())
    call_id = await store.record_call(CallLog(prompt_name=prompt.name, prompt_version=prompt.version,
                                              messages=messages, answer=answer, request_text=text, **values),
                                      prompt=prompt_file(prompt))
    for n, value in enumerate(votes):
        await store.set_feedback(call_id=call_id, user_id=f"U0VOTER0{n}", source="reaction",
                                 name="+1" if value > 0 else "-1", value=value)
    if correction is not None:
        await store.add_correction(call_id=call_id, user_id="U0EDITOR1", text=correction)
    return call_id


async def seed(store: Store, tmp_path: Path) -> dict[str, list[int]]:
    """Nine inputs with a reference (corrected or approved), and calls that are not inputs."""
    old_file = tmp_path / "old" / "ask.prompty"  # an earlier version of ask, logged with its text
    old_file.parent.mkdir()
    old_file.write_text(ASK.source.replace("You are a helpful, concise teammate", "You are an OLD teammate", 1))
    old, problems = load_file(old_file)
    assert old is not None, problems
    ids: dict[str, list[int]] = {"inputs": [], "others": []}
    for i in range(4):
        ids["inputs"].append(await log_call(store, f"question {i}", f"old answer {i}", turns=TURNS if i % 2 else None,
                                            votes=(-1,), correction=f"corrected answer {i}"))
    for i in range(4, 8):
        ids["inputs"].append(await log_call(store, f"question {i}", f"approved answer {i}",
                                            turns=TURNS if i % 2 else None, votes=(1, 1, -1)))
    ids["inputs"].append(await log_call(store, LONG, "It is the payments team's.", prompt=old, turns=TURNS,
                                        votes=(1,)))
    ids["others"] += [
        await log_call(store, "unrated", "nobody voted"),
        await log_call(store, "net down", "bad answer", votes=(-1,)),
        await log_call(store, "practice", "from the playground", votes=(1,), source="playground"),
        await log_call(store, "private", "in a DM", votes=(1,), channel_id="D0PRIVATE", trigger="dm"),
        await log_call(store, "failed", "", votes=(1,), status="error", error_type="ModelError.server"),
        await log_call(store, "other prompt", "summary", prompt=PromptSet.load(PROMPTS).get("summarize"),
                       votes=(1,)),
    ]
    return ids


def fake_model(model: FakeOpenAI, *, judge: Callable[[str, str], str] | None = None, delay: float = 0.0) -> None:
    """Candidates answer "NEW: <text>"; the judge (given answer A and B) answers as ``judge`` says."""
    def answer(text: str) -> str:
        found = re.search(r"<answer_a>\n(.*)\n</answer_a>\n\n<answer_b>\n(.*)\n</answer_b>", text, re.S)
        if found:
            return (judge or prefer_new)(found.group(1), found.group(2))
        return f"NEW: {text}"
    model.default_reply(answer, first_token_delay=delay)


def prefer_new(a: str, b: str) -> str:
    """A judge that knows which answer is the candidate's, wherever it is shown."""
    assert a.startswith("NEW") != b.startswith("NEW"), (a, b)
    return "Both are fine, but one is newer.\n\nVerdict: " + ("A" if a.startswith("NEW") else "B")


def model_env(model: FakeOpenAI, database_url: str, **extra: str) -> dict[str, str]:
    return clean_env(OPENAI_API_KEY=model.api_key, OPENAI_BASE_URL=model.url, DATABASE_URL=database_url,
                     FLYWHEEL_MODEL="gpt-5.4-mini", PROMPTS_DIR=str(PROMPTS), **extra)


async def flywheel(*args: str, env: dict[str, str], cwd: Path, timeout: float = 60) -> tuple[int, str, str]:
    async with flywheel_process(*args, cwd=cwd, env=env) as proc:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


async def test_a_progress_bar_on_a_terminal_and_nothing_in_a_pipe(tmp_path: Path):
    url, _ = await seeded_sqlite(tmp_path)
    args = ("replay", "ask", "--candidate", str(candidate_file(tmp_path)), "--judge", "judge")
    async with FakeOpenAI() as model:
        fake_model(model)
        code, out, terminal = await on_terminal(*args, env=model_env(model, url), cwd=tmp_path)
        assert code == 0, terminal
        bars = re.findall(r"replaying \[([█░]+)\] (\d)/9 +(\d+)% · (\d) error\(s\)(.*?)(?:\r|$)", terminal)
        assert len(bars) >= 2 and bars[0][1] != "9"  # drawn as inputs finish
        assert set(bars[-1][0]) == {"█"} and bars[-1][1:] == ("9", "100", "0", " · judged 9: 9 W 0 T 0 L")
        assert terminal.endswith("\r\x1b[K")  # erased for what follows
        assert out.decode().startswith("ask: candidate ")

        code, out_piped, err = await flywheel(*args, env=model_env(model, url), cwd=tmp_path)
    assert code == 0 and err == "" and out_piped.startswith("ask: candidate ")


def report_figures(page: str) -> dict[str, str]:
    """The summary numbers of a report, by element id (data-value where there is one)."""
    found = {}
    for element_id in ("win-rate", "cost", "latency-p50"):
        found[element_id] = re.search(rf'id="{element_id}"[^>]*data-value="([^"]*)"', page).group(1)
    for element_id in ("wins", "ties", "losses", "judged", "answered", "errors", "inputs-count",
                       "reference-checks"):
        match = re.search(rf'id="{element_id}">([^<]*)<', page)
        found[element_id] = match.group(1) if match else None
    checks = re.search(r'id="checks" data-passed="([^"]*)" data-total="([^"]*)"', page)
    found["checks_passed"], found["checks_total"] = checks.groups()
    return found


@pytest.mark.db
async def test_a_changed_prompt_on_the_logged_inputs_report_and_json_agree(database_url: str, tmp_path: Path):
    store = Store(database_url)
    await store.upgrade()
    try:
        ids = await seed(store, tmp_path)
        candidate_path = candidate_file(tmp_path)
        candidate, _ = load_file(candidate_path, name="ask")
        async with FakeOpenAI() as model:
            fake_model(model)
            code, out, err = await flywheel("replay", "ask", "--candidate", str(candidate_path), "--judge", "judge",
                                            "--report", str(tmp_path / "r.html"), "--json", "--concurrency", "3",
                                            env=model_env(model, database_url), cwd=tmp_path)
        assert code == 0, err
        assert "Traceback" not in err
        result = json.loads(out)  # one object, nothing else on stdout
        assert {k: result[k] for k in ("prompt", "candidate_version", "inputs", "answered", "errors", "wins", "ties",
                                       "losses", "win_rate", "checks_passed", "checks_total", "partial")} == {
            "prompt": "ask", "candidate_version": candidate.version, "inputs": 9, "answered": 9, "errors": 0,
            "wins": 9, "ties": 0, "losses": 0, "win_rate": 1.0, "checks_passed": 17, "checks_total": 18,
            "partial": False}
        assert result["reference_checks_passed"] == 9  # no reference says NEW; all are short
        assert 0.66 < result["win_rate_low"] < 0.71 and result["win_rate_high"] == 1.0  # Wilson, 9 of 9
        assert result["cost_usd"] > 0 and result["latency_p50_ms"] is not None
        assert result["reference_cost_usd"] == pytest.approx(9 * 0.0004)
        assert result["reference_latency_p50_ms"] == 1800
        assert sorted(item["call_id"] for item in result["items"]) == ids["inputs"]
        assert {item["position"] for item in result["items"]} == {"A", "B"}  # the content-aware judge still wins
        references = {item["call_id"]: item["reference"] for item in result["items"]}
        assert [references[i] for i in ids["inputs"]] == ["correction"] * 4 + ["approved"] * 5
        assert all(item["exact"] for item in result["items"])

        # What the candidate was sent: its own prompt, with each input's text and thread turns.
        sent = [r["messages"] for r in model.requests if "TERSE" in r["messages"][0]["content"]]
        assert len(sent) == 9
        for messages in sent:
            text = messages[-1]["content"]
            turns = messages[1:-1]
            assert turns in ([], TURNS) and (turns == TURNS) == (text in ("question 1", "question 3", "question 5",
                                                                          "question 7", LONG))
            assert messages == candidate.messages(text, turns, date=datetime.now(UTC).date().isoformat())
        assert not any("OLD teammate" in r["messages"][0]["content"] for r in model.requests)

        # Every call is a row like any other, from source replay, linked to what it replays.
        rows = await store.list_calls()
        replays = [c for c in rows if c.source == "replay"]
        answers = [c for c in replays if c.trigger == "replay"]
        judged = [c for c in replays if c.trigger == "judge"]
        assert len(answers) == 9 and len(judged) == 9 and len(rows) == len(ids["inputs"]) + len(ids["others"]) + 18
        assert {c.parent_call_id for c in answers} == set(ids["inputs"])
        assert {c.parent_call_id for c in judged} == {c.id for c in answers}
        assert all(c.prompt_name == "ask" and c.prompt_version == candidate.version and c.model == "gpt-5.4-mini"
                   and c.status == "ok" and c.answer.startswith("NEW: ") and c.prompt_tokens and c.cost_usd
                   and c.latency_ms is not None and c.channel_id is None for c in answers)
        assert all(c.prompt_name == "judge" for c in judged)
        async with store.session() as s:
            kept = await s.scalar(select(PromptVersion.source).where(PromptVersion.version == candidate.version))
        assert kept == candidate_path.read_text()  # the hash leads back to the text, though it was never live

        # Stats count Slack traffic: the replay shows only when asked for.
        assert {r.version for r in await version_stats(store, prompt="ask")} == {
            c.prompt_version for c in rows if c.id in ids["inputs"]}
        practice = await version_stats(store, sources=("replay",))
        assert {(r.prompt, r.version, r.calls) for r in practice} == {
            ("ask", candidate.version, 9), ("judge", PromptSet.load(PROMPTS).helpers["judge"].version, 9)}
    finally:
        await store.close()

    page = (tmp_path / "r.html").read_text()
    assert report_figures(page) == {
        "win-rate": str(result["win_rate"]), "cost": str(result["cost_usd"]),
        "latency-p50": str(result["latency_p50_ms"]), "wins": "9", "ties": "0", "losses": "0", "judged": "9",
        "answered": "9", "errors": "0", "inputs-count": "9", "reference-checks": "9", "checks_passed": "17",
        "checks_total": "18"}
    assert page.count("<article") == 9 and "<script" not in page
    assert "<del>corrected</del>" in page and "<ins>NEW" in page  # side by side, the differences marked
    assert (tmp_path / "r.html").stat().st_mode & 0o077 == 0  # like an export: it holds what people wrote


@pytest.mark.db
async def test_what_the_bot_logged_replays_with_the_same_conversation(bot: Harness, database_url: str,
                                                                        tmp_path: Path):
    """Calls logged by the real bot: the thread's turns (or its transcript) reach the candidate as
    they reached the model the first time; the same version sends exactly the same messages."""
    root = bot.slack.add_message("C1", "We need to pick a database for the billing service.", user="U1")
    bot.slack.add_message("C1", "Postgres has JSONB & row locks.", user="U2", thread_ts=root)
    await bot.mention("which one should we pick?", channel="C1", thread_ts=root)
    incident = bot.slack.add_message("C1", "Incident: checkout 500s since 14:02.", user="U1")
    bot.slack.add_message("C1", "Rolled back release 812, errors gone.", user="U2", thread_ts=incident)
    await bot.mention("summarize", channel="C1", thread_ts=incident)
    calls = await bot.calls(2)
    for call in calls:
        await bot.react("reaction_added", "+1", user="U9", channel="C1", ts=call.reply_ts)
    first = {c.prompt_name: bot.model.requests[i]["messages"] for i, c in enumerate(calls)}
    env = model_env(bot.model, database_url)
    slack_calls = len(bot.slack.requests)

    code, out, err = await flywheel("replay", "summarize", "--json", env=env, cwd=tmp_path)
    assert code == 0, err
    assert json.loads(out)["answered"] == 1
    assert bot.model.requests[-1]["messages"] == first["summarize"]  # "<@U1>: Incident…" as it was

    code, out, err = await flywheel("replay", "ask", "--candidate", str(candidate_file(tmp_path)), "--json",
                                    env=env, cwd=tmp_path)
    assert code == 0, err
    sent = bot.model.requests[-1]["messages"]
    assert sent[0]["content"].startswith("You are a TERSE teammate") and sent[1:] == first["ask"][1:]
    assert [m["content"] for m in sent[1:]] == ["We need to pick a database for the billing service.",
                                                "Postgres has JSONB & row locks.", "which one should we pick?"]
    assert len(bot.slack.requests) == slack_calls  # never posted to Slack


async def seeded_sqlite(tmp_path: Path) -> tuple[str, dict[str, list[int]]]:
    url = f"sqlite:///{tmp_path / 'flywheel.db'}"
    store = Store(url)
    await store.upgrade()
    try:
        return url, await seed(store, tmp_path)
    finally:
        await store.close()


async def test_the_judge_sees_the_candidate_first_half_the_time_so_an_always_a_judge_scores_half(tmp_path: Path):
    url, _ = await seeded_sqlite(tmp_path)
    async with FakeOpenAI() as model:
        fake_model(model, judge=lambda a, b: "A")
        runs = []
        for seed_ in ("0", "1"):
            code, out, err = await flywheel("replay", "ask", "--candidate", str(candidate_file(tmp_path)), "--judge",
                                            "judge", "--seed", seed_, "--json", env=model_env(model, url),
                                            cwd=tmp_path)
            assert code == 0, err
            runs.append(json.loads(out))
        judged = [r["messages"][-1]["content"] for r in model.requests if "<answer_a>" in r["messages"][-1]["content"]]
    for result in runs:
        positions = [item["position"] for item in result["items"]]
        assert sorted(positions) == ["A"] * 5 + ["B"] * 4  # both orders, balanced (9 inputs: one more A)
        assert all(item["verdict"] == "A" for item in result["items"])
        assert (result["wins"], result["ties"], result["losses"]) == (5, 0, 4)
        assert result["win_rate"] == pytest.approx(5 / 9) and result["judge_said_a"] == 9
        assert result["win_rate_low"] < 0.5 < result["win_rate_high"]  # no evidence either way
    assert [i["position"] for i in runs[0]["items"]] != [i["position"] for i in runs[1]["items"]]  # the seed
    assert runs[0]["seed"] == 0 and runs[1]["seed"] == 1
    first = sum(bool(re.search(r"<answer_a>\nNEW", text)) for text in judged)
    assert first == 10 and len(judged) == 18  # the candidate's answer shown as A 5 times a run, as B 4 times


async def test_model_failures_are_counted_not_fatal(tmp_path: Path):
    url, ids = await seeded_sqlite(tmp_path)
    async with FakeOpenAI() as model:
        fake_model(model)
        model.reply(status=400, error="invalid_request", message="This model is having a bad day.")
        model.reply(status=400, error="invalid_request", message="So is this one.")
        code, out, err = await flywheel("replay", "ask", "--judge", "judge", "--concurrency", "1", "--json",
                                        "--report", str(tmp_path / "r.html"), env=model_env(model, url), cwd=tmp_path)
    assert code == 0, err
    result = json.loads(out)
    assert (result["inputs"], result["answered"], result["errors"], result["judged"]) == (9, 7, 2, 7)
    failed = [item for item in result["items"] if item["status"] == "error"]
    assert [item["call_id"] for item in failed] == ids["inputs"][:2]
    assert all("bad day" in item["error"] or "So is this" in item["error"] for item in failed)
    assert result["checks_passed"] is None and result["checks_total"] is None  # the shipped ask declares none
    store = Store(url)
    try:
        rows = [c for c in await store.list_calls() if c.source == "replay"]
    finally:
        await store.close()
    assert sorted(c.status for c in rows if c.trigger == "replay") == ["error"] * 2 + ["ok"] * 7
    assert report_figures((tmp_path / "r.html").read_text())["errors"] == "2"


def balanced(page: str) -> list[str]:
    """The tags of an HTML page left open or closed out of order (void elements aside)."""
    from html.parser import HTMLParser

    void = {"meta", "br", "hr", "img", "input", "link"}
    stack: list[str] = []
    wrong: list[str] = []

    class Checker(HTMLParser):
        def handle_starttag(self, tag: str, attrs: Any) -> None:
            if tag not in void:
                stack.append(tag)

        def handle_endtag(self, tag: str) -> None:
            if stack and stack[-1] == tag:
                stack.pop()
            else:
                wrong.append(tag)

    checker = Checker()
    checker.feed(page)
    checker.close()
    return wrong + stack


async def test_ctrl_c_stops_and_still_writes_a_valid_partial_report(tmp_path: Path):
    url, _ = await seeded_sqlite(tmp_path)
    report = tmp_path / "r.html"
    async with FakeOpenAI() as model:
        fake_model(model, delay=1.0)
        async with flywheel_process("replay", "ask", "--judge", "judge", "--concurrency", "2", "--json",
                                    "--report", str(report), cwd=tmp_path, env=model_env(model, url)) as proc:
            db = sqlite3.connect(tmp_path / "flywheel.db")
            await wait_until(lambda: db.execute("select count(*) from calls where source = 'replay' and "
                                                "trigger = 'replay'").fetchone()[0] >= 2, timeout=30)
            db.close()
            await asyncio.sleep(0.3)  # the calls that follow those answers are under way: 1 s to go
            before = len(model.requests)
            proc.send_signal(signal.SIGINT)
            started = time.monotonic()
            out, err = await asyncio.wait_for(proc.communicate(), 30)
        stopped_in = time.monotonic() - started
        started_after = len(model.requests) - before
    assert proc.returncode == 130, err.decode()
    assert stopped_in < 6  # in flight: finished within the grace period, or cut
    assert "interrupted" in err.decode() and "Traceback" not in err.decode()
    result = json.loads(out)
    assert result["partial"] is True and result["inputs"] == 9
    assert result["answered"] >= 2 and result["not_run"] >= 1
    assert result["answered"] + result["errors"] + result["not_run"] == 9
    assert started_after == 0  # nothing new after Ctrl-C
    page = report.read_text()
    assert balanced(page) == [] and page.rstrip().endswith("</html>")
    assert 'id="partial"' in page
    assert report_figures(page)["answered"] == str(result["answered"])
    assert report_figures(page)["wins"] == str(result["wins"])


async def test_ctrl_c_twice_cuts_what_is_in_flight(tmp_path: Path):
    url, _ = await seeded_sqlite(tmp_path)
    async with FakeOpenAI() as model:
        fake_model(model, delay=60)  # a model that does not answer
        async with flywheel_process("replay", "ask", "--concurrency", "3", "--json", "--report",
                                    str(tmp_path / "r.html"), cwd=tmp_path, env=model_env(model, url)) as proc:
            await wait_until(lambda: len(model.requests) == 3, timeout=30)
            proc.send_signal(signal.SIGINT)
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            out, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 130, err.decode()
    result = json.loads(out)
    assert (result["partial"], result["answered"], result["not_run"]) == (True, 0, 9)
    assert sum(item["error"] == "interrupted (Ctrl-C)" for item in result["items"]) == 3
    rows = sqlite3.connect(tmp_path / "flywheel.db").execute(
        "select status, error_type from calls where source = 'replay'").fetchall()
    assert rows == [("error", "Interrupted")] * 3  # the calls it cut are logged as cut
    assert balanced((tmp_path / "r.html").read_text()) == []


async def test_bad_arguments_and_files_say_where_and_exit_1(tmp_path: Path):
    url, _ = await seeded_sqlite(tmp_path)
    env = clean_env(OPENAI_API_KEY="sk-test", DATABASE_URL=url, PROMPTS_DIR=str(PROMPTS))
    broken = candidate_file(tmp_path).read_text().replace("Today's date is {{ date }}", "Today is {{ dat }}")
    (tmp_path / "broken.prompty").write_text(broken)
    line = broken.splitlines().index("Today is {{ dat }}.") + 1
    bad_checks = candidate_file(tmp_path, checks='  checks:\n    - regex: "(unclosed"\n')
    check_line = bad_checks.read_text().splitlines().index('    - regex: "(unclosed"') + 1
    (tmp_path / "eval.jsonl").write_text('{"item": {"input": [{"role": "user", "content": "hi"}], "ideal": "hello", '
                                         '"prompt": "ask", "prompt_version": "x", "call_id": 1}, "sample": '
                                         '{"output_text": "hey"}}\n{"item": {}}\n')
    cases = [
        (["--candidate", str(tmp_path / "broken.prompty")],
         f"{tmp_path / 'broken.prompty'}:{line}: unknown template variable 'dat'"),
        (["--candidate", str(bad_checks)], f"{bad_checks}:{check_line}: metadata.checks: regex: not a valid regular "
                                           "expression"),
        (["--candidate", str(tmp_path / "missing.prompty")], f"{tmp_path / 'missing.prompty'}: cannot read the file"),
        (["--judge", "ask"], f"{PROMPTS / 'ask.prompty'}: a judge prompt must declare the inputs answer_a "
                             "and answer_b"),
        (["--judge", "nope"], "flywheel: --judge: no prompt named 'nope'"),
        (["--concurrency", "0"], "flywheel: --concurrency must be at least 1"),
        (["--limit", "many"], "flywheel: argument --limit: invalid int value: 'many'"),
        (["--since", "last tuesday"], "flywheel: --since must be an ISO date"),
        (["--report", str(tmp_path / "nowhere" / "r.html")], "flywheel: cannot write --report"),
        (["--on", str(tmp_path / "eval.jsonl")], f"{tmp_path / 'eval.jsonl'}:2: not an eval item"),
        (["--on", str(tmp_path / "eval.jsonl"), "--since", "2026-01-01"], "flywheel: --since, --until"),
    ]
    for args, expected in cases:
        code, out, err = await flywheel("replay", "ask", *args, env=env, cwd=tmp_path)
        assert (code, out) == (1, ""), (args, err)
        assert err.startswith(expected), (args, err)
        assert "Traceback" not in err
    code, _, err = await flywheel("replay", "nope", env=env, cwd=tmp_path)
    assert code == 1 and "no prompt named 'nope'" in err


async def test_an_eval_file_replays_against_its_ideal_answers(tmp_path: Path):
    url, ids = await seeded_sqlite(tmp_path)
    store = Store(url)
    try:
        with (tmp_path / "eval.jsonl").open("wb") as f:
            await export(store, ExportOptions("eval", Filters()), stdout=f, stderr=io.StringIO())
    finally:
        await store.close()
    rows = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert {r["item"]["prompt"] for r in rows} == {"ask", "summarize"}
    async with FakeOpenAI() as model:
        fake_model(model)
        code, out, err = await flywheel("replay", "ask", "--on", str(tmp_path / "eval.jsonl"), "--candidate",
                                        str(candidate_file(tmp_path)), "--limit", "8", "--json",
                                        env=model_env(model, url), cwd=tmp_path)
        sent = [r["messages"] for r in model.requests]
    assert code == 0, err
    assert "skipped 1 item(s) of other prompts" in err
    result = json.loads(out)
    assert (result["inputs"], result["answered"], result["inputs_from"]) == (8, 8, str(tmp_path / "eval.jsonl"))
    assert all(item["reference"] == "ideal" and item["exact"] for item in result["items"])
    assert [item["call_id"] for item in result["items"]] == ids["inputs"][:8]  # the same database: linked
    assert result["checks_total"] == 16 and result["checks_passed"] == 16  # NEW and short
    assert result["reference_checks_passed"] == 8
    for messages in sent:  # the text and the turns came back out of the exported messages
        assert messages[0]["content"].startswith("You are a TERSE teammate")
        assert messages[1:-1] in ([], TURNS) and re.fullmatch(r"question \d", messages[-1]["content"])


# -- the pieces ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("answer", "expected"), [
    ("Verdict: A", "A"), ("A", "A"), ("**B**", "B"), (" b. ", "B"), ("Answer B", "B"), ("tie", "tie"),
    ("B reads better.\n\nVerdict: tie", "tie"), ("Verdict: a tie", "tie"), ("Final verdict: [[B]]", "B"),
    ("verdict - **answer A**", "A"), ("At first A looked right. Verdict: B", "B"), ("Verdict:\nA", "A"),
    ("Verdict: A\n...on reflection, Verdict: B", "B"), ("I cannot decide.", None), ("", None),
    ("A is wrong and B is wrong", None),
])
def test_the_verdict_is_read_from_what_judges_write(answer: str, expected: str | None) -> None:
    assert verdict(answer) == expected


def test_positions_are_balanced_and_seeded() -> None:
    for n in (1, 2, 9, 200):
        order = positions(n, seed=7)
        assert order.count("A") == (n + 1) // 2 and order.count("B") == n // 2
        assert order == positions(n, seed=7)
    assert positions(200, seed=1) != positions(200, seed=2)
    assert [outcome(p, v) for p, v in [("A", "A"), ("A", "B"), ("B", "A"), ("B", "B"), ("B", "tie")]] == [
        "win", "loss", "loss", "win", "tie"]


def test_logged_messages_come_apart_into_text_turns_and_thread() -> None:
    shipped = PromptSet.load(PROMPTS)
    ask, summarize, review = shipped.get("ask"), shipped.get("summarize"), shipped.get("review")
    day = "2026-02-03"
    sent = ask.messages("and now?", TURNS, user="U1", channel="C1", date=day)
    for text in ("and now?", None):  # the logged text, or none (an eval file): read from the messages
        parts = split(sent, ask, text=text, user="", channel="", date=None)
        assert (parts.text, parts.turns, parts.date, parts.exact) == ("and now?", TURNS, day, True)
    cut = review.messages("def f(): pass\n\n(The rest of this message was left out", TURNS, date=day)
    parts = split(cut, review, text="def f(): pass and much more", user="", channel="", date=None)
    assert parts.text.startswith("def f(): pass\n\n(The rest") and parts.turns == TURNS  # it was cut to fit
    transcript = "<@U1>: Incident: checkout 500s.\n\n<@U2>: Rolled back."
    for text in ("just the actions", ""):
        parts = split(summarize.messages(text, [], thread=transcript, date=day), summarize, text=None, user="",
                      channel="", date=None)
        assert (parts.text, parts.thread, parts.turns, parts.exact) == (text, transcript, [], True)
    bare = split(ask.messages("", TURNS, date=day), ask, text=None, user="", channel="", date=None)
    assert (bare.text, bare.turns) == ("", TURNS)  # a bare mention: the template's own words are not the text
    unknown = split(review.messages("x = 1", TURNS, date=day), None, text=None, user="", channel="", date=None)
    assert (unknown.text, unknown.turns, unknown.exact) == ("Review this:\n\nx = 1", TURNS, False)
    assert unknown.thread == f"someone: {TURNS[0]['content']}\n\nyou: {TURNS[1]['content']}"


def test_checks_are_declared_in_the_prompt_file_and_checked(tmp_path: Path) -> None:
    path = candidate_file(tmp_path, checks=(
        '  checks:\n    - contains: "**TL;DR:**"\n    - not_contains: "As an AI"\n    - regex: "^- "\n'
        '    - json: true\n    - min_length: 5\n    - name: fits a message\n      max_length: 25\n'))
    prompt, _ = load_file(path, name="ask")
    checks = checks_of(prompt)
    assert [c.name for c in checks] == ["contains '**TL;DR:**'", "does not contain 'As an AI'", "matches '^- '",
                                        "is JSON", "at least 5 characters", "fits a message"]
    assert [c("**TL;DR:** ok\n- one") for c in checks] == [True, True, True, False, True, True]
    assert [c('```json\n{"a": [1]}\n```') for c in checks] == [False, True, False, True, True, True]
    assert [c("As an AI, I cannot") for c in checks][1] is False
    for block, reason in [
        ("  checks: yes\n", "must be a list"),
        ("  checks:\n    - contains: x\n      regex: y\n", "exactly one of"),
        ("  checks:\n    - containz: x\n", "unknown key 'containz'"),
        ("  checks:\n    - max_length: -1\n", "max_length: must be a whole number"),
        ("  checks:\n    - json: yes please\n", "json: write json: true"),
    ]:
        prompt, _ = load_file(candidate_file(tmp_path, checks=block), name="ask")
        with pytest.raises(PromptError, match=re.escape(reason)) as failed:
            checks_of(prompt)
        assert failed.value.line == 11 + (block.count("\n") > 1)  # the line of checks:, or of the item
    prompt, _ = load_file(PROMPTS / "ask.prompty")
    assert checks_of(prompt) == []


def test_the_word_diff_marks_changed_words_and_escapes_everything() -> None:
    left, right = word_diff("Run <b>make</b> & wait", "Run <script>alert(1)</script> & wait now")
    assert left == "Run &lt;<del>b</del>&gt;<del>make</del>&lt;/<del>b</del>&gt; &amp; wait"
    assert right.startswith("Run &lt;<ins>script</ins>&gt;<ins>alert(1)</ins>&lt;/<ins>script</ins>&gt; &amp; wait")
    assert "<script" not in left + right


def test_the_checks_example_in_the_prompts_readme_is_valid(tmp_path: Path) -> None:
    readme = (REPO / "prompts" / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```\n(metadata:\n.*?)```", readme, re.S).group(1)
    (tmp_path / "summarize.prompty").write_text(f"---\nname: summarize\ndescription: d\n{example}---\nuser:\n"
                                                "{{ text }}\n")
    prompt, problems = load_file(tmp_path / "summarize.prompty")
    assert problems == []
    checks = checks_of(prompt)
    assert [c.kind for c in checks] == ["contains", "not_contains", "regex", "json", "max_length", "min_length",
                                        "max_length"]
    assert checks[-1].name == "fits one Slack message"
