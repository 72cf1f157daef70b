"""Live A/B experiments: variant files, sticky arms, per-arm figures and the verdict."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from bot.experiment_cli import format_status
from bot.experiment_status import experiment_status
from bot.experiments import bucket
from bot.figures import wilson_interval
from bot.home import build_experiments
from bot.models import Call, Feedback
from bot.prompts import PromptSet
from bot.significance import compare, fisher_exact, sample_size, z_test
from bot.store import Store

from conftest import PROMPTS, clean_env, serve_bot
from fakes import FakeOpenAI, FakeSlack
from fakes.slack_sender import click

ASK = (PROMPTS / "ask.prompty").read_text()


def variant(text: str = "Answer in one short sentence.", *, weight: float | str = 50, name: str | None = None,
            start: str | None = None, extra: str = "") -> str:
    """ask.prompty's front matter with an experiment block, and a system message of our own."""
    block = f"  experiment:\n    weight: {weight}\n"
    block += f"    name: {name}\n" if name else ""
    block += f"    start: {start}\n" if start else ""
    front = ASK.split("\n---\n", 1)[0].replace("metadata:\n", "metadata:\n" + block + extra, 1)
    return f"{front}\n---\nsystem:\n{text}\n\nuser:\n{{{{ text }}}}\n"


@pytest.fixture
def prompts_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "prompts"
    shutil.copytree(PROMPTS, folder)
    return folder


# -- files ---------------------------------------------------------------------------------------


def test_a_variant_file_next_to_a_prompt_starts_an_experiment(prompts_dir: Path):
    (prompts_dir / "ask.b.prompty").write_text(variant(weight=30))
    prompts = PromptSet.load(prompts_dir)
    assert prompts.problems == []
    experiment = prompts.experiments["ask"]
    assert experiment.name == "ask" and experiment.weights == {"a": 70.0, "b": 30.0}
    assert experiment.versions["b"] != experiment.versions["a"]
    assert [p.name for p in prompts].count("ask") == 1  # a variant is not a skill of its own
    assert all(p.path.name != "ask.b.prompty" for p in prompts)


@pytest.mark.parametrize(("files", "line", "reason"), [
    ({"ask.b.prompty": variant().replace("  experiment:\n    weight: 50\n", "")}, None, "needs a metadata.experiment"),
    ({"ask.b.prompty": variant(weight=0)}, 9, "weight: must be a percent above 0"),
    ({"ask.b.prompty": variant(weight="half")}, 9, "weight: must be a percent"),
    ({"ask.b.prompty": variant(start="next tuesday")}, 10, "start: must be a date"),
    ({"ask.a.prompty": variant()}, None, "'a' is the control's arm"),
    ({"nothing.b.prompty": variant().replace("name: ask", "name: nothing")}, None, "nothing.prompty is missing"),
    ({"ask.b.prompty": variant().replace("name: ask", "name: other")}, 2, "name: must equal"),
    ({"ask.b.prompty": variant().replace("command: /ask", "command: /ask2")}, 11, "must keep its prompt's command"),
    ({"ask.b.prompty": variant(weight=60), "ask.c.prompty": variant(weight=50)}, 8, "add up to 110 %"),
    ({"ask.b.prompty": variant(name="one"), "ask.c.prompty": variant(name="two")}, 8, "name different experiments"),
])
def test_a_variant_that_cannot_run_is_reported_with_its_line_and_everyone_gets_the_control(
        prompts_dir: Path, files: dict[str, str], line: int | None, reason: str):
    for name, text in files.items():
        (prompts_dir / name).write_text(text)
    prompts = PromptSet.load(prompts_dir)
    reported = [p for p in prompts.problems if p.path.name in files]
    assert reported and all(reason in p.reason for p in reported), prompts.problems
    assert reported[0].line == line
    assert "ask" in prompts.prompts  # the control still runs
    assert prompts.experiments == {}
    control = prompts.prompts["ask"]
    assert {prompts.choose(control, f"U{i}").prompt.path.name for i in range(200)} == {"ask.prompty"}
    assert prompts.choose(control, "U1").arm is None  # no experiment: nothing to tag


def test_assignment_is_sticky_and_close_to_the_weights_over_10000_people(prompts_dir: Path):
    (prompts_dir / "ask.b.prompty").write_text(variant(weight=20))
    (prompts_dir / "ask.c.prompty").write_text(variant("Answer in French.", weight=30))
    prompts = PromptSet.load(prompts_dir)
    control = prompts.prompts["ask"]
    people = [f"U{i:08X}" for i in range(10_000)]
    arms = {u: prompts.choose(control, u).arm for u in people}
    share = Counter(arms.values())
    # 10,000 draws: a share's standard error is at most 0.5 point; allow 2 points (4 sigma)
    assert abs(share["a"] / 100 - 50) < 2 and abs(share["b"] / 100 - 20) < 2 and abs(share["c"] / 100 - 30) < 2
    again = PromptSet.load(prompts_dir)  # a reload (or another process) gives everyone the same arm
    assert all(again.choose(again.prompts["ask"], u).arm == arms[u] for u in people)
    chosen = prompts.choose(control, next(u for u in people if arms[u] == "c"))
    assert chosen.prompt.path.name == "ask.c.prompty" and chosen.experiment == "ask"


def test_experiments_split_people_independently_of_each_other():
    people = [f"U{i}" for i in range(10_000)]
    first = [bucket("tone", u) < 5000 for u in people]
    second = [bucket("length", u) < 5000 for u in people]
    both = sum(a and b for a, b in zip(first, second, strict=True))
    assert abs(both - 2500) < 200  # independent halves overlap on a quarter


def test_an_experiment_before_its_start_gives_everyone_the_control(prompts_dir: Path):
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    (prompts_dir / "ask.b.prompty").write_text(variant(weight=100, start=tomorrow))
    prompts = PromptSet.load(prompts_dir)
    assert prompts.problems == [] and "ask" in prompts.experiments
    chosen = prompts.choose(prompts.prompts["ask"], "U1")
    assert chosen.prompt.path.name == "ask.prompty" and chosen.experiment is None


# -- statistics, against published values ----------------------------------------------------------


def test_the_tests_match_published_values():
    # Wilson 95 % for 8/10 (Newcombe 1998, method 3)
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    # R: prop.test(c(45, 60), c(100, 100), correct = FALSE) -> X-squared = 4.5113, p-value = 0.03367
    assert round(z_test(45, 100, 60, 100), 5) == 0.03367
    # R: fisher.test(matrix(c(3, 1, 1, 3), 2)) -> p-value = 0.4857 (Fisher's tea tasting)
    assert round(fisher_exact(3, 4, 1, 4), 4) == 0.4857
    # R: fisher.test(matrix(c(1, 9, 9, 1), 2)) -> p-value = 0.001093
    assert round(fisher_exact(1, 10, 9, 10), 6) == 0.001093
    # 50 % vs 60 %, two-sided alpha 0.05, power 0.80: 388 per group (Fleiss, no continuity correction)
    assert sample_size(0.5, 0.6) == 388
    assert sample_size(0.5, 0.5) is None
    # small tables go to Fisher's exact test, large ones to the z-test
    assert compare(3, 4, 1, 4)[0] == "fisher" and compare(45, 100, 60, 100)[0] == "z"


async def _seed(store: Store, experiment: str, arm: str, version: str, up: int, down: int, unrated: int = 0,
                *, source: str = "slack", latency: int = 1000) -> None:
    """Calls of one arm: ``up`` approved, ``down`` disapproved, ``unrated`` without votes (one
    transaction: the figures, not the write path, are under test here)."""
    async with store.session.begin() as s:
        for i in range(up + down + unrated):
            call = Call(trigger="mention", source=source, prompt_name="ask", prompt_version=version,
                        model="gpt-5.4-mini", messages=[], input_hash="x", status="ok", channel_id="C1",
                        user_id=f"U{i}", experiment=experiment, arm=arm, cost_usd=0.001, latency_ms=latency + i)
            s.add(call)
            await s.flush()
            if i < up + down:
                s.add(Feedback(call_id=call.id, user_id=f"V{i}", source="reaction", name="+1" if i < up else "-1",
                               value=1 if i < up else -1))


@pytest.mark.db
async def test_status_per_arm_matches_hand_computed_values(store: Store):
    await _seed(store, "tone", "a", "v" * 64, up=45, down=55, unrated=10)
    await _seed(store, "tone", "b", "w" * 64, up=60, down=40)
    await _seed(store, "tone", "b", "w" * 64, up=0, down=0, unrated=3, source="playground")  # practice
    [status] = await experiment_status(store, None)
    assert (status.name, status.prompt, status.state) == ("tone", "ask", "ended")
    a, b = status.arms
    assert (a.arm, a.calls, a.rated, a.up, a.down) == ("a", 110, 100, 45, 55)
    assert (b.arm, b.calls, b.rated, b.up, b.down) == ("b", 100, 100, 60, 40)
    assert b.approval_interval == wilson_interval(60, 100) and a.approval == 0.45
    assert a.cost_usd == pytest.approx(0.110) and a.latency_p50_ms == 1000 + 54  # 55th of 110
    assert status.test == "z" and round(status.p_value or 0, 5) == 0.03367
    assert status.verdict == "better:b" and "b is better: 60 % vs 45 %" in status.summary
    shown = status.to_json()
    assert {"name", "prompt", "arms", "p_value", "needed_per_arm", "verdict"} <= set(shown)
    assert {"arm", "version", "weight", "calls", "rated", "up", "down", "approval", "approval_low",
            "approval_high", "cost_usd", "latency_p50_ms"} <= set(shown["arms"][0])
    assert "better" in format_status([status])


@pytest.mark.db
async def test_not_yet_significant_says_how_many_more_votes_and_no_difference_when_enough(store: Store):
    await _seed(store, "small", "a", "v" * 64, up=5, down=5)
    await _seed(store, "small", "b", "w" * 64, up=6, down=4)
    await _seed(store, "same", "a", "v" * 64, up=450, down=50)
    await _seed(store, "same", "b", "w" * 64, up=455, down=45)
    by_name = {s.name: s for s in await experiment_status(store, None)}
    small, same = by_name["small"], by_name["same"]
    assert small.verdict == "running" and small.test == "fisher"
    # 50 % vs 60 % needs 388 rated answers per arm; each arm has 10
    assert (small.required_per_arm, small.needed_per_arm) == (388, 378)
    assert "about 378 more rated answers per arm" in small.summary
    # 90 % vs 95 % needs 435 per arm: with 500 each, a 5-point difference would have shown
    assert same.verdict == "no_difference", same.summary
    assert same.needed_per_arm == 0


# -- through Slack ----------------------------------------------------------------------------------


@pytest.mark.db
async def test_each_person_gets_their_arm_on_every_call_and_votes_count_per_arm(
        database_url: str, prompts_dir: Path):
    (prompts_dir / "ask.b.prompty").write_text(variant("You are arm B.", weight=50))
    async with FakeSlack() as slack, FakeOpenAI() as model, \
            serve_bot(slack, model, database_url, PROMPTS_DIR=str(prompts_dir)) as h:
        people = [f"U{i}" for i in range(1, 13)]
        for user in people + people[:4]:  # four people ask twice
            await h.mention(f"which arm? ({user})", user=user, channel="C1")
        calls = await h.calls(16)
        await h.settle()
        arms = {(c.user_id, c.arm) for c in calls}
        assert len(arms) == 12, "each person got one arm, every time"
        assert {c.experiment for c in calls} == {"ask"} and {c.arm for c in calls} == {"a", "b"}
        asked = {r["messages"][-1]["content"]: r for r in model.requests}
        for call in calls:
            request = asked[call.request_text]
            system = request["messages"][0]["content"]
            assert (system == "You are arm B.") == (call.arm == "b")
            assert call.messages == request["messages"]
        versions = {c.arm: c.prompt_version for c in calls}
        assert versions["b"] != versions["a"]

        arm_b = next(c for c in calls if c.arm == "b")
        [answer] = [m for m in slack.thread("C1", arm_b.thread_ts) if m.get("user") == slack.bot_user_id]
        await h.react("reaction_added", "+1", user="U99", channel="C1", ts=answer["ts"])
        model.reply("again")
        status, _ = await h.sender.action(click(answer, "C1", "regenerate", "regenerate"))
        assert status == 200
        calls = await h.calls(17)
        regenerated = max(calls, key=lambda c: c.id)
        assert (regenerated.experiment, regenerated.arm) == ("ask", "b")  # the same arm's input, again

        [result] = await experiment_status(h.store, h.fw.conversation.prompts)
        assert result.state == "running"
        b = next(a for a in result.arms if a.arm == "b")
        assert (b.weight, b.up, b.rated, b.version) == (50.0, 1, 1, versions["b"])

        home = build_experiments([result])
        text = json.dumps(home)
        assert "ask" in text and "running" in text.lower()


async def test_a_broken_variant_is_reported_and_its_people_get_the_control(tmp_path: Path, prompts_dir: Path):
    (prompts_dir / "ask.b.prompty").write_text(variant(weight=100).replace("weight: 100", "weight: all"))
    url = f"sqlite:///{tmp_path / 'x.db'}"
    async with FakeSlack() as slack, FakeOpenAI() as model, \
            serve_bot(slack, model, url, PROMPTS_DIR=str(prompts_dir)) as h:
        for user in ("U1", "U2", "U3"):
            await h.mention("hello", user=user, channel="C1")
        calls = await h.calls(3)
        assert {c.arm for c in calls} == {None} and {c.experiment for c in calls} == {None}
        assert all(r["messages"][0]["content"] != "Answer in one short sentence." for r in model.requests)
        async with aiohttp.ClientSession() as http, http.get(f"{h.url}/healthz") as resp:
            health = await resp.json()
        assert any("ask.b.prompty:9" in p and "weight" in p for p in health.get("prompt_problems", [])), health


def test_experiment_status_command(tmp_path: Path, prompts_dir: Path):
    (prompts_dir / "ask.b.prompty").write_text(variant(weight=25))
    env = clean_env(DATABASE_URL=f"sqlite:///{tmp_path / 'none.db'}", PROMPTS_DIR=str(prompts_dir))
    out = subprocess.run([sys.executable, "-m", "bot", "experiment", "status", "--json"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    [shown] = json.loads(out.stdout)
    assert shown["name"] == "ask" and shown["verdict"] == "running"
    assert [(a["arm"], a["weight"], a["calls"]) for a in shown["arms"]] == [("a", 75.0, 0), ("b", 25.0, 0)]
    text = subprocess.run([sys.executable, "-m", "bot", "experiment", "status"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert "no votes yet" in text.stdout and "25 %" in text.stdout
    listed = subprocess.run([sys.executable, "-m", "bot", "prompts"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert "experiment ask on ask: a 75 % (ask.prompty) · b 25 % (ask.b.prompty)" in listed.stdout


@pytest.mark.db
async def test_promoting_a_variant_keeps_its_version_and_the_history(store: Store, prompts_dir: Path):
    (prompts_dir / "ask.b.prompty").write_text(variant(weight=50))
    running = PromptSet.load(prompts_dir)
    b_version = running.experiments["ask"].versions["b"]
    await _seed(store, "ask", "a", running.experiments["ask"].versions["a"], up=3, down=1)
    await _seed(store, "ask", "b", b_version, up=4, down=0)

    (prompts_dir / "ask.b.prompty").replace(prompts_dir / "ask.prompty")  # b won
    promoted = PromptSet.load(prompts_dir)
    assert promoted.problems == [] and promoted.experiments == {}
    assert promoted.prompts["ask"].version == b_version  # its calls and the new ones share a version
    assert promoted.choose(promoted.prompts["ask"], "U1").arm is None
    [ended] = await experiment_status(store, promoted)
    assert ended.state == "ended" and [(a.arm, a.weight, a.up) for a in ended.arms] == [("a", None, 3), ("b", None, 4)]
    assert "ended" in format_status([ended])
