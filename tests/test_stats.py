"""`flywheel stats` and the App Home view against hand-computed figures, on SQLite and PostgreSQL.

The seeded log (see `seed`):

    ask  v1 (first seen Jan 1)  5 calls on Jan 10-14, latencies 400 5000 100 300 200 ms,
                                cost $0.001 each except the error (no cost); ok calls: 100 + 20 tokens
         call 1: U1 👍, U2 👍                          -> up
         call 2: U1 👎                                -> down
         call 3: U1 👍, U2 👎, then U1 changes to 👎    -> down (2 👎, U1 counted once)
         call 4: U3 👍, then withdrawn                -> not rated
         call 5: error, no votes
    ask  v2 (first seen Feb 1)  10 calls on Feb 10, latencies 100, 90, ..., 10 ms, $0.002 each,
                                ttft 5..50 ms; calls 1-8: U1 👍; call 9: U1 👎; call 10: U1 👍 U2 👎 (tie)
    summarize (Feb 15)          3 calls, no known cost, latencies 900, none, 700; call 1 👎; call 3 error
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import sys
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import update

from bot import cli
from bot.figures import wilson_interval
from bot.home import MAX_VERSIONS, build_home, home_view, publish_home
from bot.models import Call, PromptVersion
from bot.stats import VersionStats, version_stats
from bot.stats_cli import format_table, parse_when
from bot.store import CallLog, Store

from fakes import FakeSlack

pytestmark = pytest.mark.db

FLYWHEEL = Path(sys.executable).with_name("flywheel")
V1 = hashlib.sha256(b"ask 1").hexdigest()  # sorts after V2: ordering must follow first_seen
V2 = hashlib.sha256(b"ask 2").hexdigest()
VS = hashlib.sha256(b"summarize v1").hexdigest()
assert V1 > V2


def prompt_files(folder: Path, **files: bytes) -> None:
    """The prompts folder as it is now: ``ask.prompty`` holding b"ask 2" is version V2."""
    (folder / "prompts").mkdir(exist_ok=True)
    for name, raw in files.items():
        (folder / "prompts" / f"{name}.prompty").write_bytes(raw)


NOW = {"ask": b"ask 2", "summarize": b"summarize v1"}  # V2 and VS are in the files now


def day(month: int, d: int, hour: int = 12) -> datetime:
    return datetime(2025, month, d, hour, tzinfo=UTC)


def wilson(k: int, n: int) -> tuple[float, float]:
    """By hand: the roots p of (k/n - p)^2 = z^2 p (1 - p) / n, the Wilson score interval."""
    z = 1.959963984540054
    a, b, c = 1 + z * z / n, -(2 * k / n + z * z / n), (k / n) ** 2
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


async def add_call(store: Store, prompt: str, version: str, when: datetime | None, *, latency: int | None,
                   cost: float | None, status: str = "ok", ttft: int | None = None, model: str = "gpt-test",
                   source: str = "slack") -> int:
    call_id = await store.record_call(CallLog(
        trigger="mention", prompt_name=prompt, prompt_version=version, model=model, source=source,
        messages=[{"role": "user", "content": "hi"}], status=status, answer="" if status == "error" else "ok",
        latency_ms=latency, ttft_ms=ttft, cost_usd=cost, channel_id="C1",
        prompt_tokens=None if status == "error" else 100, completion_tokens=None if status == "error" else 20,
        error_type="ModelError.timeout" if status == "error" else None))
    if when is not None:
        async with store.session.begin() as s:
            await s.execute(update(Call).where(Call.id == call_id).values(created_at=when))
    return call_id


async def vote(store: Store, call_id: int, user: str, value: int) -> None:
    await store.set_feedback(call_id=call_id, user_id=user, source="reaction", name="+1" if value > 0 else "-1",
                             value=value)


async def seed(store: Store) -> None:
    for name, version, first_seen in (("ask", V1, day(1, 1)), ("ask", V2, day(2, 1)), ("summarize", VS, day(2, 14))):
        await store.save_prompt_version(name=name, version=version, path=f"prompts/{name}.prompty", source="…",
                                        model=None)
        async with store.session.begin() as s:
            await s.execute(update(PromptVersion).where(PromptVersion.version == version)
                            .values(first_seen_at=first_seen))

    c1, c2, c3, c4, _ = [
        await add_call(store, "ask", V1, day(1, 10 + i), latency=latency, cost=None if i == 4 else 0.001,
                       status="error" if i == 4 else "ok")
        for i, latency in enumerate((400, 5000, 100, 300, 200))
    ]
    await vote(store, c1, "U1", +1)
    await vote(store, c1, "U2", +1)
    await vote(store, c2, "U1", -1)
    await vote(store, c3, "U1", +1)
    await vote(store, c3, "U2", -1)
    await vote(store, c3, "U1", -1)  # U1 changes their mind: the newer 👎 counts, the 👍 not
    await vote(store, c4, "U3", +1)
    assert await store.remove_feedback(call_id=c4, user_id="U3", source="reaction", name="+1")

    v2 = [await add_call(store, "ask", V2, day(2, 10) + timedelta(minutes=i), latency=100 - 10 * i,
                         cost=0.002, ttft=5 * (i + 1)) for i in range(10)]
    for call_id in v2[:8]:
        await vote(store, call_id, "U1", +1)
    await vote(store, v2[8], "U1", -1)
    await vote(store, v2[9], "U1", +1)
    await vote(store, v2[9], "U2", -1)

    s1, _, _ = [await add_call(store, "summarize", VS, day(2, 15, hour), latency=latency, cost=None,
                               status="error" if hour == 3 else "ok")
                for hour, latency in ((1, 900), (2, None), (3, 700))]
    await vote(store, s1, "U2", -1)


# The expected figures, worked out by hand from the table in the module docstring.
ASK_V1 = {"prompt": "ask", "version": V1, "newest": False, "calls": 5, "rated": 3, "up": 1, "down": 2, "tied": 0,
          "votes_up": 2, "votes_down": 3, "errors": 1, "cost_usd": 0.004, "priced_calls": 4,
          "prompt_tokens": 400, "completion_tokens": 80,
          "cost_per_call_usd": 0.001, "latency_p50_ms": 300, "latency_p95_ms": 5000, "ttft_p50_ms": None}
ASK_V2 = {"prompt": "ask", "version": V2, "newest": True, "calls": 10, "rated": 10, "up": 8, "down": 1, "tied": 1,
          "votes_up": 9, "votes_down": 2, "errors": 0, "cost_usd": 0.02, "priced_calls": 10,
          "cost_per_call_usd": 0.002, "latency_p50_ms": 50, "latency_p95_ms": 100, "ttft_p50_ms": 25}
SUMMARIZE = {"prompt": "summarize", "version": VS, "newest": True, "calls": 3, "rated": 1, "up": 0, "down": 1,
             "tied": 0, "votes_up": 0, "votes_down": 1, "errors": 1, "cost_usd": None, "priced_calls": 0,
             "cost_per_call_usd": None, "latency_p50_ms": 700, "latency_p95_ms": 900, "ttft_p50_ms": None}
APPROVAL = {V1: (1, 3), V2: (8, 9), VS: (0, 1)}  # up, up + down


def check(row: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, value in expected.items():
        if isinstance(value, float):
            assert row[key] == pytest.approx(value, abs=1e-12), key
        else:
            assert row[key] == value, key
    up, n = APPROVAL[row["version"]]
    low, high = wilson(up, n)
    assert row["approval"] == pytest.approx(up / n)
    assert (round(row["approval_low"], 4), round(row["approval_high"], 4)) == (round(low, 4), round(high, 4))
    assert row["rated_share"] == pytest.approx(row["rated"] / row["calls"])
    assert row["error_rate"] == pytest.approx(row["errors"] / row["calls"])


def test_wilson_interval_matches_the_textbook_values():
    assert [round(x, 4) for x in wilson_interval(8, 10)] == [0.4902, 0.9433]  # 80 % of 10
    assert [round(x, 4) for x in wilson_interval(1, 3)] == [0.0615, 0.7923]
    assert [round(x, 4) for x in wilson_interval(0, 1)] == [0.0, 0.7935]
    assert wilson_interval(0, 0) is None
    for k, n in ((1, 3), (8, 9), (0, 1), (57, 60)):
        assert wilson_interval(k, n) == pytest.approx(wilson(k, n), abs=1e-12)


def test_dates_are_utc_and_a_bare_until_date_includes_its_day():
    assert parse_when("2025-02-01") == day(2, 1, 0)
    assert parse_when("2025-02-01", end_of_day=True) == day(2, 2, 0)
    assert parse_when("2025-02-01T14:30") == datetime(2025, 2, 1, 14, 30, tzinfo=UTC)
    assert parse_when("2025-02-01T14:30+02:00") == datetime(2025, 2, 1, 12, 30, tzinfo=UTC)


async def test_library_figures_match_the_hand_computed_ones(store: Store):
    await seed(store)
    rows = [r.to_json() for r in await version_stats(store)]
    assert [(r["prompt"], r["version"]) for r in rows] == [("ask", V1), ("ask", V2), ("summarize", VS)]
    for row, expected in zip(rows, (ASK_V1, ASK_V2, SUMMARIZE), strict=True):
        check(row, expected)
    assert rows[0]["first_seen"] == "2025-01-01T12:00:00+00:00"
    assert rows[1]["first_call_at"] == "2025-02-10T12:00:00+00:00"


async def test_filters_by_time_window_and_prompt(store: Store):
    await seed(store)
    feb = await version_stats(store, since=day(2, 1, 0))
    assert [(r.prompt, r.version) for r in feb] == [("ask", V2), ("summarize", VS)]
    assert feb[0].newest and feb[0].calls == 10
    january = await version_stats(store, until=parse_when("2025-01-14", end_of_day=True))
    assert [(r.version, r.calls, r.up, r.down) for r in january] == [(V1, 5, 1, 2)]
    # Jan 11-12 only (calls 2 and 3, latencies 5000 and 100): both down.
    window = await version_stats(store, since=day(1, 11, 0), until=day(1, 12, 23))
    assert [(r.calls, r.rated, r.down, r.latency_p50_ms, r.latency_p95_ms) for r in window] == [(2, 2, 2, 100, 5000)]
    assert [r.version for r in await version_stats(store, prompt="summarize")] == [VS]
    assert await version_stats(store, prompt="nope") == []
    assert await version_stats(store, since=day(3, 1)) == []
    # An aware datetime in another zone means the same instant.
    berlin = datetime(2025, 2, 10, 12, 5, tzinfo=UTC).astimezone(ZoneInfo("Europe/Berlin"))  # 13:05 there
    later = await version_stats(store, since=berlin, prompt="ask")
    assert [(r.version, r.calls) for r in later] == [(V2, 5)]


async def test_percentiles_are_nearest_rank(store: Store):
    latencies = [((i * 37) % 41) * 10 + 3 for i in range(41)]  # 41 distinct values, shuffled
    for latency in latencies:
        await add_call(store, "p", "v", None, latency=latency, cost=0.0)
    [row] = await version_stats(store)
    ordered = sorted(latencies)
    assert row.latency_p50_ms == ordered[math.ceil(0.50 * 41) - 1] == 203
    assert row.latency_p95_ms == ordered[math.ceil(0.95 * 41) - 1] == 383  # the 39th of 41
    assert row.cost_usd == 0.0 and row.cost_per_call_usd == 0.0


@pytest.fixture
async def seeded(store: Store) -> Store:
    await seed(store)
    return store


def test_cli_json_filters_and_table(seeded: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]):
    """`flywheel stats` in this process (fast), on both databases."""
    monkeypatch.chdir(tmp_path)
    prompt_files(tmp_path, **NOW)
    monkeypatch.setenv("DATABASE_URL", seeded.url)

    assert cli.main(["stats", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    for row, expected in zip(rows, (ASK_V1, ASK_V2, SUMMARIZE), strict=True):
        check(row, expected)
    assert [r["current"] for r in rows] == [False, True, True]

    assert cli.main(["stats", "--json", "--since", "2025-02-01", "--prompt", "ask"]) == 0
    assert [(r["version"], r["calls"]) for r in json.loads(capsys.readouterr().out)] == [(V2, 10)]
    assert cli.main(["stats", "--json", "--until", "2025-01-12"]) == 0  # Jan 10, 11 and 12
    assert [(r["version"], r["calls"], r["latency_p50_ms"]) for r in json.loads(capsys.readouterr().out)] == [
        (V1, 3, 400)]

    assert cli.main(["stats"]) == 0
    check_table(capsys.readouterr().out)

    assert cli.main(["stats", "--prompt", "nope"]) == 0
    assert capsys.readouterr().out.strip() == "no calls logged for prompt 'nope' yet"
    assert cli.main(["stats", "--since", "2025-02-01", "--until", "2025-01-01"]) == 2
    assert "--until must be later than --since" in capsys.readouterr().err


def test_the_star_marks_the_version_in_the_prompt_file_now_not_the_newest_seen(
        seeded: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """ask.prompty rolled back to v1 (v2 is still the newest seen), summarize.prompty since edited."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", seeded.url)
    prompt_files(tmp_path, ask=b"ask 1", summarize=b"summarize v2, not yet used")

    def starred() -> list[str]:
        assert cli.main(["stats"]) == 0
        return [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:4] if " * " in line]

    assert starred() == [V1[:12]]
    monkeypatch.setenv("PROMPTS_DIR", str(tmp_path / "elsewhere"))  # read from the prompts folder in use
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "summarize.prompty").write_bytes(b"summarize v1")
    assert starred() == [VS[:12]]
    assert cli.main(["stats", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["newest"], r["current"]) for r in rows] == [
        (V1, False, False), (V2, True, False), (VS, True, True)]


def test_practice_calls_are_left_out_unless_asked_for_and_each_model_gets_its_own_row(
        seeded: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """An afternoon in the playground with the echo model, a `flywheel try` and a model switch
    in Slack: the default figures are the Slack traffic's, per model."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", seeded.url)

    async def practice() -> None:
        for i in range(4):
            await add_call(seeded, "ask", V2, day(2, 11) + timedelta(minutes=i), latency=2, cost=None,
                           model="echo", source="playground")
        await add_call(seeded, "ask", V2, day(2, 11), latency=900, cost=0.01, source="try")
        for i in range(3):
            await add_call(seeded, "ask", V2, day(2, 12) + timedelta(minutes=i), latency=700, cost=0.003,
                           model="gpt-other")

    asyncio.run(practice())

    def rows(*args: str) -> list[tuple[str, str, str, int]]:
        assert cli.main(["stats", "--json", "--prompt", "ask", *args]) == 0
        return [(r["version"][:2], r["model"], r["source"], r["calls"]) for r in json.loads(capsys.readouterr().out)]

    v1, v2 = V1[:2], V2[:2]
    assert rows() == [(v1, "gpt-test", "slack", 5), (v2, "gpt-other", "slack", 3), (v2, "gpt-test", "slack", 10)]
    assert rows("--source", "playground") == [(v2, "echo", "playground", 4)]
    assert rows("--source", "slack", "--source", "try", "--model", "gpt-test") == [
        (v1, "gpt-test", "slack", 5), (v2, "gpt-test", "slack", 10), (v2, "gpt-test", "try", 1)]
    assert rows("--model", "echo") == []

    assert cli.main(["stats", "--source", "playground", "--source", "slack", "--prompt", "ask"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["PROMPT", "VERSION", "MODEL", "SOURCE"]
    assert [[c for c in line.split() if c != "*"][2:4] for line in table[1:5]] == [
        ["gpt-test", "slack"], ["echo", "playground"], ["gpt-other", "slack"], ["gpt-test", "slack"]]

    assert cli.main(["stats", "--model", "echo"]) == 0  # nothing real: say where the practice went
    assert capsys.readouterr().out.splitlines() == [
        "no calls logged to echo yet",
        "(4 practice calls from playground not counted: add --source playground to see them)"]
    with pytest.raises(SystemExit):
        cli.main(["stats", "--source", "staging"])
    assert "invalid choice: 'staging'" in capsys.readouterr().err


async def test_the_home_tab_shows_the_traffic_of_where_it_is_opened(store: Store):
    await add_call(store, "ask", V1, None, latency=100, cost=0.001)
    await add_call(store, "ask", V1, None, latency=100, cost=None, model="echo", source="playground")
    await add_call(store, "ask", V1, None, latency=100, cost=None, model="echo", source="playground")
    slack = json.dumps(await home_view(store))
    playground = json.dumps(await home_view(store, source="playground"))
    assert "*1* call" in slack and "gpt-test" in slack and "echo" not in slack
    assert "*2* calls" in playground and "echo" in playground and "gpt-test" not in playground


async def test_the_real_command_reads_a_seeded_sqlite_file(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'seeded.db'}"
    store = Store(url)
    await store.upgrade()
    await seed(store)
    await store.close()
    prompt_files(tmp_path, **NOW)
    (code, out, err), (tcode, table, terr) = await asyncio.gather(
        flywheel("stats", "--json", database_url=url, cwd=tmp_path),
        flywheel("stats", database_url=url, cwd=tmp_path),
    )
    assert (code, tcode) == (0, 0), err + terr
    for row, expected in zip(json.loads(out), (ASK_V1, ASK_V2, SUMMARIZE), strict=True):
        check(row, expected)
    check_table(table)


def check_table(table: str) -> None:
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["PROMPT", "VERSION", "MODEL", "CALLS", "RATED"]
    assert lines[1].split() == ["ask", V1[:12], "gpt-test", "5", "60%", "1", "2", "33%", "(6–79)", "███░░░░░░░", "20%", "480",
                                "$0.0040", "$0.0010", "300", "ms", "5.0", "s"]
    assert lines[2].split() == ["ask", V2[:12], "*", "gpt-test", "10", "100%", "8", "1", "89%", "(57–98)", "█████████░", "0%", "1.2k",
                                "$0.020", "$0.0020", "50", "ms", "100", "ms"]
    assert lines[3].split() == ["summarize", VS[:12], "*", "gpt-test", "3", "33%", "0", "1", "0%", "(0–79)", "░░░░░░░░░░",
                                "33%", "240", "–", "–", "700", "ms", "900", "ms"]
    assert "* the version in its prompt file now" in table
    # Columns line up on a terminal, where 👍, 👎 take two cells each: ERRORS ends where "20%" does.
    assert cells(lines[0][:lines[0].index("ERRORS") + 6]) == cells(lines[1][:lines[1].index("20%") + 3])
    assert cells(lines[0][:lines[0].index("ERRORS") + 6]) == cells(lines[3][:lines[3].index("33%", 60) + 3])


def cells(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def test_cli_on_a_missing_database_and_bad_dates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]):
    missing = tmp_path / "none.db"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{missing}")
    assert cli.main(["stats", "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
    assert cli.main(["stats"]) == 0
    assert capsys.readouterr().out.strip() == "no calls logged yet"
    assert not missing.exists()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["stats", "--since", "last week"])
    assert exit_.value.code == 2 and "not an ISO date" in capsys.readouterr().err


def test_table_in_plain_ascii_when_the_terminal_cannot_show_emoji():
    row = stats_row("ask", "a" * 64, calls=4, rated=2, up=1, down=1)
    table = format_table([row], ascii_only=True)
    table.encode("ascii")
    assert "50% (9-91)" in table and "#####....." in table


# -- App Home ---------------------------------------------------------------------------------


async def test_home_view_of_an_empty_database(store: Store):
    view = await home_view(store)
    assert_valid_view(view)
    assert view["type"] == "home"
    text = json.dumps(view, ensure_ascii=False)
    assert "No calls yet" in text and "Mention me in a channel" in text


async def test_home_view_shows_each_prompt_with_its_versions(store: Store):
    await seed(store)
    view = await home_view(store)
    assert_valid_view(view)
    sections = [b["text"]["text"] for b in view["blocks"] if b["type"] == "section"]
    total, ask, summarize = sections
    assert "*18* calls" in total and "*$0.024* spent" in total and "1 error" not in total
    assert "*69% (42–87)* approval from 14 rated" in total  # 9 up, 4 down: pooled over the versions
    assert "2 errors" in total
    assert ask.startswith("*`ask`* · 15 calls")
    ask_lines = ask.splitlines()[1:]
    assert ask_lines[0].startswith(f"`{V2[:12]}` (newest)") and "*89% (57–98)*" in ask_lines[0]  # newest first
    assert "10 calls, 10 rated" in ask_lines[0] and "$0.020" in ask_lines[0] and "p50 50 ms" in ask_lines[0]
    assert ask_lines[1].startswith(f"`{V1[:12]}`") and "*33% (6–79)*" in ask_lines[1] and "1 error" in ask_lines[1]
    assert summarize.startswith("*`summarize`*") and "p50 700 ms" in summarize and "cost unknown" in summarize
    contexts = [b["elements"][0]["text"] for b in view["blocks"] if b["type"] == "context"]
    assert any(V2[:12] in c and V1[:12] in c and c.index(V2[:12]) < c.index(V1[:12]) for c in contexts)

    since = await home_view(store, since=day(2, 12))
    assert_valid_view(since)
    assert [b["text"]["text"].split(" · ")[0] for b in since["blocks"] if b["type"] == "section"][1:] == [
        "*`summarize`*"]


def test_home_view_stays_within_slack_limits_with_many_prompts_and_versions():
    rows = [stats_row(f"prompt-{p:02d}", hashlib.sha256(f"{p}/{v}".encode()).hexdigest(), calls=p + 1,
                      first_seen=day(1, 1 + v), newest=v == 4)
            for p in range(60) for v in range(5)]
    view = build_home(rows)
    assert_valid_view(view)
    sections = [b["text"]["text"] for b in view["blocks"] if b["type"] == "section"][1:]
    assert len(sections) == 30 and sections[0].startswith("*`prompt-30`*")  # the most used, by name
    assert all(len(s.splitlines()) == 1 + MAX_VERSIONS for s in sections)
    assert "30 less used prompts not shown" in json.dumps(view)


async def test_publish_home_calls_views_publish(store: Store):
    await seed(store)
    async with FakeSlack() as slack:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.url)
        await publish_home(client, store, "U123")
        [call] = slack.calls("views.publish")
    assert call["user_id"] == "U123"
    view = call["view"] if isinstance(call["view"], dict) else json.loads(call["view"])
    assert view["type"] == "home" and len(view["blocks"]) > 3


# -- helpers ----------------------------------------------------------------------------------


def assert_valid_view(view: dict[str, Any]) -> None:
    blocks = view["blocks"]
    assert 0 < len(blocks) <= 100
    for block in blocks:
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text" and 0 < len(block["text"]["text"]) <= 150
        elif block["type"] == "section":
            assert block["text"]["type"] == "mrkdwn" and 0 < len(block["text"]["text"]) <= 3000
        elif block["type"] == "context":
            assert 0 < len(block["elements"]) <= 10
            assert all(0 < len(e["text"]) <= 2000 for e in block["elements"])
        else:
            assert block == {"type": "divider"}
    assert len(json.dumps(view)) < 250_000


def stats_row(prompt: str, version: str, *, calls: int, rated: int = 0, up: int = 0, down: int = 0,
              first_seen: datetime | None = None, newest: bool = True) -> VersionStats:
    return VersionStats(
        prompt=prompt, version=version, model="gpt-test", source="slack", first_seen=first_seen or day(1, 1),
        newest=newest,
        first_call_at=day(1, 1), last_call_at=day(1, 2), calls=calls, rated=rated, up=up, down=down,
        votes_up=up, votes_down=down, errors=0, cost_usd=0.01 * calls, priced_calls=calls, prompt_tokens=None,
        completion_tokens=None, latency_p50_ms=800, latency_p95_ms=2400, ttft_p50_ms=None)


async def flywheel(*args: str, database_url: str, cwd: Path) -> tuple[int, str, str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "LANG": "C.UTF-8", "DATABASE_URL": database_url}
    proc = await asyncio.create_subprocess_exec(
        str(FLYWHEEL), *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()
