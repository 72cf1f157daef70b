"""`flywheel export`: every format on a seeded database (SQLite and PostgreSQL), and the real CLI."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from bot.cli import main
from bot.export import ExportOptions, Filters, export
from bot.models import Call
from bot.store import CallLog, Store

from conftest import Harness, on_terminal
from fakes.slack_sender import message as message_event
from fakes.slack_sender import reaction

pytestmark = pytest.mark.db

RAW_ID = re.compile(r"[UW][A-Z0-9]{8,}")
ASKER, OTHER, ASKER2 = "U0123ABCD", "U0456EFGH", "W0789IJKL"
VOTERS = ("U0000VOTE1", "U0000VOTE2", "U0000VOTE3")
V1, V2 = "aaaa1111" + "0" * 56, "bbbb2222" + "0" * 56
SYS = {"role": "system", "content": "Be brief."}
DAY = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
TRANSCRIPT = (f"Summarise:\n<@{ASKER}>: ship it friday?\n\n"
              f"<@{OTHER}|alice>: email me at alice@example.com or +1 415 555 0100")
JSONL_FORMATS = ("openai-chat", "openai-dpo", "kto", "eval")
FLYWHEEL = Path(sys.executable).with_name("flywheel")


def user(text: str) -> list[dict[str, str]]:
    return [SYS, {"role": "user", "content": text}]


async def call(store: Store, text: str | list[dict[str, str]], answer: str, *, votes: tuple[int, ...] = (),
               correction: str | None = None, at: datetime = DAY, **kw: Any) -> int:
    """Log one call (with ``votes`` from distinct people and an optional correction)."""
    values: dict[str, Any] = {"trigger": "mention", "prompt_name": "ask", "prompt_version": V1,
                              "model": "gpt-5.4-mini", "user_id": ASKER, "channel_id": "C1",
                              "finish_reason": "stop", "request_text": "", **kw}
    excluded = values.pop("excluded", False)
    messages = user(text) if isinstance(text, str) else text
    call_id = await store.record_call(CallLog(messages=messages, answer=answer, **values))
    for voter, value in zip(VOTERS, votes, strict=False):
        await store.set_feedback(call_id=call_id, user_id=voter, source="reaction",
                                 name="+1" if value > 0 else "-1", value=value)
    if correction is not None:
        await store.add_correction(call_id=call_id, user_id="U0000EDIT1", text="an older fix")
        await store.add_correction(call_id=call_id, user_id="U0000EDIT1", text=correction)
    async with store.session.begin() as s:
        await s.execute(update(Call).where(Call.id == call_id).values(created_at=at, excluded=excluded))
    return call_id


async def seed(store: Store) -> dict[str, int]:
    """The small case every exact expectation below refers to."""
    ids = {}
    ids["approved"] = await call(store, f"What is 2+2? cc <@{OTHER}>", "4", votes=(1,), at=DAY)
    ids["corrected"] = await call(store, "Capital of France?", "Lyon", votes=(-1,), correction="Paris",
                                  at=DAY + timedelta(minutes=1))
    ids["down"] = await call(store, "Name a prime.", "9", votes=(-1,), user_id=ASKER2, channel_id="C2",
                             at=DAY + timedelta(minutes=2))
    ids["regen"] = await call(store, "Name a prime.", "7", votes=(1, 1, -1), user_id=ASKER2, channel_id="C2",
                              parent_call_id=ids["down"], at=DAY + timedelta(minutes=3))
    ids["unrated"] = await call(store, "Say hi", "hi", at=DAY + timedelta(minutes=4), experiment="tone", arm="b")
    # Never fit to train on, whatever the votes say.
    await call(store, "bad error", "", votes=(1,), status="error", error_type="ModelError.server",
               finish_reason=None)
    await call(store, "bad truncated", "It was a dark", votes=(1,), status="truncated", finish_reason="length")
    await call(store, "bad incomplete", "Partial", votes=(1,), status="incomplete", finish_reason=None)
    await call(store, "bad excluded", "Secret", votes=(1,), excluded=True)
    await call(store, "bad length", "Cut", votes=(1,), finish_reason="length")
    ids["summary"] = await call(
        store, [{"role": "system", "content": "You summarise threads."}, {"role": "user", "content": TRANSCRIPT}],
        "Ship on Friday; mail alice@example.com.", votes=(1, 1), prompt_name="summarize", prompt_version=V2,
        user_id=ASKER2, channel_id="C2", request_text=f"summarize for {ASKER2}", at=DAY + timedelta(days=4))
    return ids


async def run_export(store: Store, fmt: str, *, redact: bool = False, **filters: Any) -> tuple[list[Any], str]:
    out, err = io.BytesIO(), io.StringIO()
    await export(store, ExportOptions(fmt, Filters(**filters), redact=redact), stdout=out, stderr=err)
    text = out.getvalue().decode()
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(text, newline=""))), err.getvalue()
    return [json.loads(line) for line in text.splitlines()], err.getvalue()


def pseudonym(salt: str, user_id: str) -> str:
    return "user_" + hashlib.sha256((salt + user_id).encode()).hexdigest()[:12]


# -- an independent validator: the published rules ---------------------------------------


def check_messages(messages: Any, *, chat: bool) -> None:
    assert isinstance(messages, list) and messages
    for m in messages:
        assert set(m) == {"role", "content"}, m
        assert m["role"] in ("system", "user", "assistant")
        assert isinstance(m["content"], str) and m["content"].strip()
    assert any(m["role"] == "user" for m in messages)
    if chat:
        assert messages[-1]["role"] == "assistant"
    else:
        assert messages[-1]["role"] != "assistant"


def check_completion(outputs: Any) -> str:
    assert isinstance(outputs, list) and len(outputs) == 1
    assert set(outputs[0]) == {"role", "content"} and outputs[0]["role"] == "assistant"
    assert isinstance(outputs[0]["content"], str) and outputs[0]["content"].strip()
    return outputs[0]["content"]


def check_line(fmt: str, row: dict[str, Any]) -> None:
    if fmt == "openai-chat":
        assert set(row) == {"messages"}
        check_messages(row["messages"], chat=True)
    elif fmt == "openai-dpo":
        assert set(row) == {"input", "preferred_output", "non_preferred_output"}
        assert set(row["input"]) == {"messages"}
        check_messages(row["input"]["messages"], chat=False)
        assert check_completion(row["preferred_output"]) != check_completion(row["non_preferred_output"])
    elif fmt == "kto":
        assert set(row) == {"prompt", "completion", "label"} and isinstance(row["label"], bool)
        check_messages(row["prompt"], chat=False)
        check_completion(row["completion"])
    else:
        assert set(row) == {"item", "sample"}
        assert set(row["item"]) == {"input", "ideal", "prompt", "prompt_version", "call_id"}
        check_messages(row["item"]["input"], chat=False)
        assert row["item"]["ideal"].strip() and isinstance(row["sample"]["output_text"], str)


# -- every format, exactly ------------------------------------------------------------------


def expected_inputs(salt: str) -> dict[str, list[dict[str, str]]]:
    transcript = TRANSCRIPT.replace(f"<@{ASKER}>", f"<@{pseudonym(salt, ASKER)}>").replace(
        f"<@{OTHER}|alice>", f"<@{pseudonym(salt, OTHER)}>")
    return {
        "approved": user(f"What is 2+2? cc <@{pseudonym(salt, OTHER)}>"),
        "corrected": user("Capital of France?"),
        "prime": user("Name a prime."),
        "summary": [{"role": "system", "content": "You summarise threads."}, {"role": "user", "content": transcript}],
    }


def a(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


async def test_every_format_gives_the_exact_lines_for_a_small_case(store: Store) -> None:
    ids = await seed(store)
    salt = await store.salt()
    inp = expected_inputs(salt)
    summary = "Ship on Friday; mail alice@example.com."

    chat, err = await run_export(store, "openai-chat")
    assert chat == [
        {"messages": inp["approved"] + a("4")},
        {"messages": inp["corrected"] + a("Paris")},  # the newest correction is the target
        {"messages": inp["prime"] + a("7")},  # one example per input: the approved regeneration
        {"messages": inp["summary"] + a(summary)},
    ]
    assert "only 4 openai-chat examples" in err and "at least 10" in err

    dpo, _ = await run_export(store, "openai-dpo")
    assert dpo == [
        {"input": {"messages": inp["corrected"]}, "preferred_output": a("Paris"), "non_preferred_output": a("Lyon")},
        {"input": {"messages": inp["prime"]}, "preferred_output": a("7"), "non_preferred_output": a("9")},
    ]

    kto, _ = await run_export(store, "kto")
    assert kto == [
        {"prompt": inp["approved"], "completion": a("4"), "label": True},
        {"prompt": inp["corrected"], "completion": a("Paris"), "label": True},
        {"prompt": inp["corrected"], "completion": a("Lyon"), "label": False},
        {"prompt": inp["prime"], "completion": a("7"), "label": True},
        {"prompt": inp["prime"], "completion": a("9"), "label": False},
        {"prompt": inp["summary"], "completion": a(summary), "label": True},
    ]

    evals, _ = await run_export(store, "eval")

    def item(key: str, ideal: str, output: str, call_id: int, prompt: str = "ask", version: str = V1) -> dict:
        return {"item": {"input": inp[key], "ideal": ideal, "prompt": prompt, "prompt_version": version,
                         "call_id": call_id}, "sample": {"output_text": output}}

    assert evals == [
        item("approved", "4", "4", ids["approved"]),
        item("corrected", "Paris", "Lyon", ids["corrected"]),
        item("prime", "7", "7", ids["regen"]),
        item("summary", summary, summary, ids["summary"], "summarize", V2),
    ]

    rows, _ = await run_export(store, "csv")
    assert [r["id"] for r in rows] == [str(ids[k]) for k in ("approved", "corrected", "regen", "summary")]
    assert list(rows[0]) == ["id", "created_at", "prompt", "version", "model", "experiment", "arm", "user",
                             "channel", "request", "answer", "correction", "up", "down", "status", "cost_usd",
                             "latency_ms"]
    assert rows[1] | {"cost_usd": "", "latency_ms": ""} == {
        "id": str(ids["corrected"]), "created_at": "2026-03-01T10:01:00Z", "prompt": "ask", "version": V1,
        "model": "gpt-5.4-mini", "experiment": "", "arm": "", "user": pseudonym(salt, ASKER),
        "channel": channel_pseudonym(salt, "C1"),
        "request": "",
        "answer": "Lyon", "correction": "Paris", "up": "0", "down": "1", "status": "ok", "cost_usd": "",
        "latency_ms": ""}
    assert rows[2]["up"] == "2" and rows[2]["down"] == "1"
    every, _ = await run_export(store, "csv", rating="any", include_unrated=True)
    [ab] = [r for r in every if r["experiment"]]
    assert (ab["id"], ab["experiment"], ab["arm"]) == (str(ids["unrated"]), "tone", "b"), "which arm, to compare them"
    assert rows[3]["request"] == f"summarize for {pseudonym(salt, ASKER2)}"

    for fmt, lines in (("openai-chat", chat), ("openai-dpo", dpo), ("kto", kto), ("eval", evals)):
        for row in lines:
            check_line(fmt, row)


async def test_errors_truncated_incomplete_excluded_and_length_never_appear(store: Store) -> None:
    await seed(store)
    for fmt in JSONL_FORMATS + ("csv",):
        lines, _ = await run_export(store, fmt, rating="any", include_unrated=True)
        text = json.dumps(lines)
        assert lines and "bad " not in text and "Secret" not in text and "It was a dark" not in text, fmt
        for row in lines if fmt != "csv" else ():
            check_line(fmt, row)


async def test_rating_and_scope_filters(store: Store) -> None:
    await seed(store)

    async def targets(**filters: Any) -> list[str]:
        lines, _ = await run_export(store, "openai-chat", **filters)
        return [row["messages"][-1]["content"] for row in lines]

    summary = "Ship on Friday; mail alice@example.com."
    assert await targets(rating="up") == ["4", "7", summary]
    assert await targets(rating="down") == ["Paris", "9"]
    assert await targets(rating="any") == ["4", "Paris", "7", summary]
    assert await targets(include_unrated=True) == ["4", "Paris", "7", "hi", summary]
    assert await targets(prompt="summarize") == [summary]
    assert await targets(version="bbbb") == [summary]
    assert await targets(version=V1) == ["4", "Paris", "7"]
    assert await targets(channel="C2") == ["7", summary]
    assert await targets(since=DAY + timedelta(days=1)) == [summary]
    assert await targets(until=DAY + timedelta(minutes=2)) == ["4", "Paris"]
    kto, _ = await run_export(store, "kto", rating="down")
    assert [(r["completion"][0]["content"], r["label"]) for r in kto] == [("Paris", True), ("Lyon", False),
                                                                           ("9", False)]


async def test_dedupe_prefers_the_corrected_call_then_the_newest(store: Store) -> None:
    await call(store, "Same question", "old approved", votes=(1,), at=DAY)
    await call(store, "Same question", "corrected answer", correction="the fix", at=DAY + timedelta(minutes=1))
    await call(store, "Same question", "newest approved", votes=(1,), at=DAY + timedelta(minutes=2))
    await call(store, "Other question", "older", votes=(1,), at=DAY)
    await call(store, "Other question", "newer", votes=(1, 1), at=DAY + timedelta(minutes=5))
    lines, _ = await run_export(store, "openai-chat")
    assert [row["messages"][-1]["content"] for row in lines] == ["the fix", "newer"]
    dpo, _ = await run_export(store, "openai-dpo")
    assert [(r["preferred_output"][0]["content"], r["non_preferred_output"][0]["content"]) for r in dpo] == [
        ("the fix", "corrected answer")]


async def test_regenerations_with_up_and_down_votes_give_one_dpo_pair_on_one_input(store: Store) -> None:
    first = await call(store, "Write a haiku", "bad haiku", votes=(-1, -1))
    await call(store, "Write a haiku", "good haiku", votes=(1,), parent_call_id=first,
               at=DAY + timedelta(minutes=1))
    await call(store, "Write a haiku", "another bad one", votes=(-1,), parent_call_id=first,
               at=DAY + timedelta(minutes=2))
    dpo, err = await run_export(store, "openai-dpo")
    assert dpo == [{"input": {"messages": user("Write a haiku")}, "preferred_output": a("good haiku"),
                    "non_preferred_output": a("another bad one")}]
    assert "skipped" not in err


async def test_no_raw_slack_user_id_and_redact_removes_email_and_phone(store: Store) -> None:
    await seed(store)
    salt = await store.salt()
    for fmt in JSONL_FORMATS + ("csv",):
        lines, _ = await run_export(store, fmt, rating="any", include_unrated=True)
        text = json.dumps(lines, ensure_ascii=False)
        assert not RAW_ID.findall(text), fmt
        assert pseudonym(salt, ASKER) in text or fmt in ("openai-dpo",), fmt
        redacted, _ = await run_export(store, fmt, rating="any", include_unrated=True, redact=True)
        text = json.dumps(redacted, ensure_ascii=False)
        assert not RAW_ID.findall(text) and "alice@example.com" not in text and "415 555 0100" not in text, fmt
        if fmt not in ("openai-dpo", "csv"):  # csv has the request, not the transcript sent
            assert "@user: ship it friday?" in text and "[phone]" in text, fmt
        if fmt != "openai-dpo":
            assert "[email]" in text, fmt


async def test_at_least_ten_openai_chat_examples_do_not_warn(store: Store) -> None:
    for i in range(10):
        await call(store, f"question {i}", f"answer {i}", votes=(1,))
    await call(store, "  ", "an answer to nothing", votes=(1,))  # invalid: empty user content
    lines, err = await run_export(store, "openai-chat")
    assert len(lines) == 10 and "warning" not in err
    assert "skipped 1 invalid candidate" in err and "empty message content" in err


async def test_exports_are_byte_identical_and_the_split_is_stable(store: Store, tmp_path: Path) -> None:
    for i in range(30):
        await call(store, f"question {i} Grüße 👋", f"answer {i}", votes=(1,), at=DAY + timedelta(minutes=i))
    out = tmp_path / "data.jsonl"

    async def split_export(directory: Path) -> dict[str, bytes]:
        directory.mkdir(exist_ok=True)
        await export(store, ExportOptions("openai-chat", output=directory / out.name, split=0.7),
                     stderr=io.StringIO())
        return {p.name: p.read_bytes() for p in directory.iterdir()}

    first = await split_export(tmp_path / "a")
    second = await split_export(tmp_path / "b")
    assert set(first) == {"data.train.jsonl", "data.validation.jsonl", "data.manifest.json"}
    assert first["data.train.jsonl"] == second["data.train.jsonl"]
    assert first["data.validation.jsonl"] == second["data.validation.jsonl"]
    train, validation = (first[f"data.{k}.jsonl"].decode().splitlines() for k in ("train", "validation"))
    assert train and validation and len(train) + len(validation) == 30
    assert train[0].startswith('{"messages":[{"role":"system","content":"Be brief."},') and "Grüße 👋" in train[0]

    manifest = json.loads(first["data.manifest.json"])
    assert manifest["format"] == "openai-chat" and manifest["format_version"] == 1
    assert manifest["counts"] == {"train": len(train), "validation": len(validation)}
    assert manifest["filters"]["rating"] is None and manifest["flywheel_version"] and manifest["created_at"]
    for f in manifest["files"]:
        data = first[f["path"]]
        assert f["sha256"] == hashlib.sha256(data).hexdigest() and f["rows"] == len(data.splitlines())

    # More data later: nothing that was exported moves to the other set.
    for i in range(30, 60):
        await call(store, f"question {i}", f"answer {i}", votes=(1,))
    third = await split_export(tmp_path / "c")
    assert set(train) <= set(third["data.train.jsonl"].decode().splitlines())
    assert set(validation) <= set(third["data.validation.jsonl"].decode().splitlines())


# -- the real command ----------------------------------------------------------------------


async def cli(*args: str, db: Path, cwd: Path) -> tuple[int, str, str]:
    """`flywheel export …` as a user runs it: a subprocess with only DATABASE_URL set."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    proc = await asyncio.create_subprocess_exec(
        str(FLYWHEEL), "export", *args, cwd=cwd, env={**env, "DATABASE_URL": f"sqlite:///{db}"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.fixture
async def seeded_file(tmp_path: Path) -> Path:
    db = tmp_path / "flywheel.db"
    store = Store(f"sqlite:///{db}")
    await store.upgrade()
    await seed(store)
    await store.close()
    return db


async def test_cli_writes_split_files_and_a_manifest(seeded_file: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    code, out, err = await cli("--format", "kto", "--output", "out/kto.jsonl", "--split", "0.5",
                               db=seeded_file, cwd=tmp_path)
    assert code == 0, err
    assert out == "" and "Traceback" not in err
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["kto.manifest.json", "kto.train.jsonl", "kto.validation.jsonl"]
    lines = [json.loads(line) for name in files[1:] for line in (tmp_path / "out" / name).read_text().splitlines()]
    assert len(lines) == 6
    for row in lines:
        check_line("kto", row)
    everything = "".join((tmp_path / "out" / name).read_text() for name in files)
    assert not RAW_ID.findall(everything)
    manifest = json.loads((tmp_path / "out" / "kto.manifest.json").read_text())
    assert sum(manifest["counts"].values()) == 6 and manifest["split"]["train"] == 0.5

    code, out, err = await cli("--format", "openai-chat", "--rating", "any", db=seeded_file, cwd=tmp_path)
    assert code == 0, err
    assert len(out.splitlines()) == 4 and not RAW_ID.findall(out)
    assert "OpenAI fine-tuning needs at least 10" in err


async def test_a_progress_bar_on_a_terminal_and_nothing_in_a_pipe(tmp_path: Path) -> None:
    db = tmp_path / "flywheel.db"
    store = Store(f"sqlite:///{db}")
    await store.upgrade()
    for i in range(30):
        await call(store, f"Question {i}?", f"Answer {i}.", votes=(1,), at=DAY + timedelta(minutes=i))
    await store.close()
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    env["DATABASE_URL"] = f"sqlite:///{db}"
    args = ("export", "--format", "csv", "--rating", "any", "--include-unrated")

    code, _, terminal = await on_terminal(*args, "-o", "all.csv", cwd=tmp_path, env=env)
    assert code == 0, terminal
    bar = re.findall(r"exporting \[([█░]+)\] (\d+)/30 +(\d+)%", terminal)
    assert bar and bar[-1] == ("█" * 20, "30", "100")  # ends full, 20 cells
    # …then erased: the report starts on a clean line.
    assert terminal.rstrip().endswith("\r\x1b[Kflywheel: wrote 30 csv row(s): all.csv (30); manifest all.manifest.json")

    code, out, err = await cli(*args[1:], "-o", "piped.csv", db=db, cwd=tmp_path)
    assert code == 0 and out == ""
    assert err == "flywheel: wrote 30 csv row(s): piped.csv (30); manifest piped.manifest.json\n"

    # Rows going to the same terminal: no bar drawn across them.
    code, _, terminal = await on_terminal(*args, cwd=tmp_path, env=env, stdout_too=True)
    assert code == 0 and "Answer 29." in terminal and "exporting" not in terminal and "\x1b[K" not in terminal


BAD_OPTIONS = [
    (("--format", "openai-chat", "--split", "0.9"), "--split needs --output"),
    (("--format", "openai-chat", "--since", "last tuesday"), "--since must be an ISO date"),
    (("--format", "openai-chat", "--split", "1.5", "-o", "x.jsonl"), "--split must be a fraction"),
    (("--format", "parquet"), "invalid choice"),
    (("--rating", "up"), "--format"),
]


def test_cli_bad_options_exit_2_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = asyncio.run(cli("--format", "openai-chat", "--split", "0.9", db=tmp_path / "none.db", cwd=tmp_path))
    assert code == 2 and out == "" and err == "flywheel: --split needs --output FILE (it writes FILE.train and " \
        "FILE.validation)\n"
    # The rest in-process, through the same entry point as the console script.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'none.db'}")
    for args, message in [*BAD_OPTIONS, (("--format", "kto"), "DATABASE_URL: no database file")]:
        try:
            code = main(["export", *args])
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        assert code == 2 and out == "", args
        assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err, (args, err)


# -- privacy: channel ids and names, direct messages, file modes ----------------------------

RAW_CHANNEL = re.compile(r"[CDG][A-Z0-9]{8,}")
HOME, INCIDENTS, DM = "C0123HOME9", "C0456WXYZ9", "D0789DMXY1"
MENTIONS = (f"Post it in <#{INCIDENTS}|incidents> (or <#{INCIDENTS}>), like "
            f"<https://acme.slack.com/archives/{INCIDENTS}/p1700000000000100|this one>.")


def channel_pseudonym(salt: str, channel_id: str) -> str:
    return "channel_" + hashlib.sha256((salt + channel_id).encode()).hexdigest()[:12]


async def seed_private(store: Store) -> dict[str, int]:
    """Two calls in one channel, whose texts name another channel; conversations in a DM."""
    ids = {}
    templated = [{"role": "system", "content": f"You answer in channel {HOME}."},
                 {"role": "user", "content": f"Where do outages go? {MENTIONS}"}]
    ids["mentions"] = await call(store, templated, f"Yes: {MENTIONS}", votes=(1,), channel_id=HOME,
                                 request_text=f"where do outages go? (asked in {HOME})")
    ids["home"] = await call(store, "Second question", "Second answer", votes=(1,), channel_id=HOME,
                             at=DAY + timedelta(minutes=1))
    ids["dm"] = await call(store, "my private question", "private answer", votes=(1,), channel_id=DM,
                           trigger="dm", at=DAY + timedelta(minutes=2))
    ids["dm_down"] = await call(store, "private haiku", "bad private haiku", votes=(-1,), channel_id=DM,
                                trigger="dm", at=DAY + timedelta(minutes=3))
    ids["dm_regen"] = await call(store, "private haiku", "good private haiku", votes=(1,), channel_id=DM,
                                 trigger="regenerate", parent_call_id=ids["dm_down"],
                                 at=DAY + timedelta(minutes=4))
    # The same input asked in a DM (corrected) and in a channel (approved): without DMs the
    # channel's call is the example, not nothing and not the DM's correction.
    ids["shared_dm"] = await call(store, "Shared question", "dm answer", correction="private fix",
                                  channel_id=DM, trigger="dm", at=DAY + timedelta(minutes=5))
    ids["shared"] = await call(store, "Shared question", "channel answer", votes=(1,), channel_id=HOME,
                               at=DAY + timedelta(minutes=6))
    return ids


async def raw_export(store: Store, fmt: str, **kw: Any) -> tuple[str, str]:
    out, err = io.BytesIO(), io.StringIO()
    filters = {"rating": "any", "include_unrated": True, **kw.pop("filters", {})}
    await export(store, ExportOptions(fmt, Filters(**filters), **kw), stdout=out, stderr=err)
    return out.getvalue().decode(), err.getvalue()


async def test_channel_ids_become_salted_pseudonyms_in_fields_and_texts(store: Store) -> None:
    ids = await seed_private(store)
    salt = await store.salt()
    home, incidents = channel_pseudonym(salt, HOME), channel_pseudonym(salt, INCIDENTS)
    for fmt in JSONL_FORMATS + ("csv",):
        text, _ = await raw_export(store, fmt, filters={"include_dms": True})
        assert text and not RAW_CHANNEL.findall(text), (fmt, RAW_CHANNEL.findall(text))
        if fmt != "openai-dpo":  # DPO's only pair here is the DM's
            # Mentions keep their shape (and, without --redact, the channel's name).
            assert f"<#{incidents}|incidents>" in text and f"<#{incidents}>" in text, fmt
            assert f"/archives/{incidents}/p1700000000000100" in text, fmt
        if fmt in ("openai-chat", "kto", "eval"):
            assert f"You answer in channel {home}." in text, fmt
    rows, _ = await run_export(store, "csv", rating="any", include_dms=True)
    by_id = {int(r["id"]): r for r in rows}
    # Rows of one channel still group together; a DM gets its own pseudonym.
    assert by_id[ids["mentions"]]["channel"] == by_id[ids["home"]]["channel"] == home
    assert by_id[ids["dm"]]["channel"] == channel_pseudonym(salt, DM) != home
    assert by_id[ids["mentions"]]["request"] == f"where do outages go? (asked in {home})"
    # The same salt gives the same pseudonyms on the next run.
    again, _ = await run_export(store, "csv", rating="any", include_dms=True)
    assert again == rows


async def test_redact_removes_channel_names_and_dm_ids(store: Store) -> None:
    await seed_private(store)
    for fmt in JSONL_FORMATS + ("csv",):
        text, _ = await raw_export(store, fmt, redact=True, filters={"include_dms": True})
        assert text and not RAW_CHANNEL.findall(text) and not RAW_ID.findall(text), fmt
        assert "incidents" not in text and DM not in text, fmt
        if fmt != "openai-dpo":
            assert "Post it in #channel (or #channel)" in text, fmt


async def test_direct_messages_are_left_out_unless_asked_for(store: Store, tmp_path: Path) -> None:
    await seed_private(store)
    private = ("private", "dm answer")
    for fmt in JSONL_FORMATS + ("csv",):
        text, err = await raw_export(store, fmt, filters={"rating": None, "include_unrated": False})
        assert not any(p in text for p in private), fmt
        assert "direct messages" in err and "--include-dms" in err, (fmt, err)
        text, err = await raw_export(store, fmt, filters={"rating": None, "include_unrated": False,
                                                          "include_dms": True})
        assert "private haiku" in text and "direct messages" not in err, fmt
        if fmt != "openai-dpo":
            assert "private answer" in text, fmt
    # The input asked in both places: the channel's answer, not the DM's correction.
    chat, err = await run_export(store, "openai-chat")
    assert [r["messages"][-1]["content"] for r in chat][1:] == ["Second answer", "channel answer"]
    assert len(chat) == 3 and "private" not in json.dumps(chat)
    assert "left out 3 call(s) in direct messages" in err
    with_dms, _ = await run_export(store, "openai-chat", include_dms=True)
    assert "private fix" in json.dumps(with_dms) and "channel answer" not in json.dumps(with_dms)
    # The manifest says how many were left out, and why.
    await export(store, ExportOptions("openai-chat", output=tmp_path / "sft.jsonl"), stderr=io.StringIO())
    manifest = json.loads((tmp_path / "sft.manifest.json").read_text())
    assert manifest["direct_messages"]["included"] is False and manifest["direct_messages"]["left_out"] == 3
    assert "--include-dms" in manifest["direct_messages"]["why"]
    assert manifest["filters"]["include_dms"] is False


async def test_a_group_dm_is_left_out_like_a_dm(bot: Harness) -> None:
    """A group DM's id looks like a channel's (G…, or C… nowadays): only its message events say
    ``mpim``, and the mention event does not. The mention asked there (whose message event came
    along as Slack sends it) and the follow-up in its thread are logged as a group DM's and left
    out of exports unless --include-dms, like a DM's. Before, they were exported as a channel's."""
    for answer in ("Group answer.", "Group follow-up.", "Channel answer."):
        bot.model.reply(answer)
    asked = await bot.mention("what do we ship?", channel="G0GROUP1")
    twin = message_event(asked["text"], channel="G0GROUP1", channel_type="mpim", ts=asked["ts"])
    status, _ = await bot.sender.event(twin)  # the same message, as the message event Slack sends with it
    assert status == 200
    await bot.calls(1)
    await bot.message("and when?", channel="G0GROUP1", channel_type="mpim", thread_ts=asked["ts"])
    await bot.calls(2)
    await bot.mention("what do we ship?", channel="C1")
    calls = await bot.calls(3)
    assert [(c.answer, c.channel_type) for c in calls] == [
        ("Group answer.", "mpim"), ("Group follow-up.", "mpim"), ("Channel answer.", None)]

    rows, err = await run_export(bot.store, "csv", rating="any", include_unrated=True)
    assert [r["answer"] for r in rows] == ["Channel answer."], err
    assert "left out 2 call(s) in direct messages and group DMs" in err
    rows, _ = await run_export(bot.store, "csv", rating="any", include_unrated=True, include_dms=True)
    assert [r["answer"] for r in rows] == ["Group answer.", "Group follow-up.", "Channel answer."]


async def test_a_reaction_in_a_group_dm_tells_the_bot_what_the_conversation_is(bot: Harness) -> None:
    """Reactions say the conversation's kind too (``item.channel_type``): a mention asked there
    afterwards is logged as a group DM's even when its own message event never comes."""
    bot.model.reply("Later answer.")
    status, _ = await bot.sender.event(reaction("reaction_added", "eyes", user="U1", channel="G0GROUP3",
                                                ts="1.000001", item_user="U2", channel_type="mpim"))
    assert status == 200
    await bot.mention("and now?", channel="G0GROUP3")
    [call] = await bot.calls(1)
    assert call.channel_type == "mpim"


async def test_a_call_in_a_group_dm_not_logged_as_one_is_left_out_with_the_rest_of_it(store: Store) -> None:
    """A mention whose message event went to another process is logged without the kind: any other
    call of that conversation logged as a group DM's keeps it out too."""
    await call(store, "first", "unknown kind", votes=(1,), channel_id="C0GROUP2")
    await call(store, "second", "known kind", votes=(1,), channel_id="C0GROUP2", channel_type="mpim")
    await call(store, "third", "a channel", votes=(1,), channel_id="C0CHANNEL", channel_type="channel")
    rows, err = await run_export(store, "openai-chat")
    assert [r["messages"][-1]["content"] for r in rows] == ["a channel"]
    assert "left out 2 call(s)" in err


async def test_manifest_names_the_channel_filter_by_its_pseudonym(store: Store, tmp_path: Path) -> None:
    await seed_private(store)
    salt = await store.salt()
    await export(store, ExportOptions("csv", Filters(channel=HOME), output=tmp_path / "home.csv"),
                 stderr=io.StringIO())
    data = (tmp_path / "home.csv").read_text() + (tmp_path / "home.manifest.json").read_text()
    assert HOME not in data and not RAW_CHANNEL.findall(data)
    manifest = json.loads((tmp_path / "home.manifest.json").read_text())
    assert manifest["filters"]["channel"] == channel_pseudonym(salt, HOME)
    assert "channel_" in manifest["channel_ids"] and "user_" in manifest["user_ids"]
    assert manifest["redacted"].startswith("nothing")


async def test_export_files_are_readable_by_their_owner_only(store: Store, tmp_path: Path) -> None:
    await seed_private(store)
    folder = tmp_path / "exports"  # the database is in tmp_path
    folder.mkdir()
    out = folder / "data.jsonl"
    names = ("data.train.jsonl", "data.validation.jsonl", "data.manifest.json")
    for name in names:  # an earlier export, or a file someone made, readable by everyone
        (folder / name).write_text("old")
        (folder / name).chmod(0o644)
    old_umask = os.umask(0o022)
    try:
        await export(store, ExportOptions("openai-chat", output=out, split=0.5), stderr=io.StringIO())
        await export(store, ExportOptions("csv", output=folder / "all.csv"), stderr=io.StringIO())
    finally:
        os.umask(old_umask)
    written = sorted(p.name for p in folder.iterdir())
    assert written == sorted([*names, "all.csv", "all.manifest.json"])  # no temporary file left
    for name in written:
        assert (folder / name).stat().st_mode & 0o777 == 0o600, name
        assert (folder / name).read_text() != "old", name


async def test_cli_include_dms_redact_and_private_files(tmp_path: Path) -> None:
    db = tmp_path / "flywheel.db"
    store = Store(f"sqlite:///{db}")
    await store.upgrade()
    await seed_private(store)
    await store.close()
    (tmp_path / "out").mkdir()
    code, out, err = await cli("--format", "csv", "--rating", "any", "--include-unrated", "--include-dms",
                               "--redact", "-o", "out/all.csv", db=db, cwd=tmp_path)
    assert code == 0, err
    data = b"".join(p.read_bytes() for p in (tmp_path / "out").iterdir()).decode()
    assert "private answer" in data and "incidents" not in data and not RAW_CHANNEL.findall(data)
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()} == {0o600}
    code, out, err = await cli("--format", "openai-chat", db=db, cwd=tmp_path)
    assert code == 0 and "private" not in out and "left out 3 call(s) in direct messages" in err, err
    code, out, _ = await cli("--help", db=db, cwd=tmp_path)
    assert code == 0 and "--include-dms" in out and "channel" in out


def test_bare_channel_ids_are_found_but_hex_and_model_names_stay() -> None:
    from bot.export_formats import Scrubber

    scrub = Scrubber("salt")
    text = "see C0123HOME9 and D0789DMXY1; sha DEADBEEF1234, CAFE00112233; GPT4TURBO1; C_GENERAL; <#else>"
    assert scrub.text(text) == (f"see {channel_pseudonym('salt', HOME)} and {channel_pseudonym('salt', DM)}; "
                                "sha DEADBEEF1234, CAFE00112233; GPT4TURBO1; C_GENERAL; <#else>")
    # The call's own channel is found whatever its shape (the playground's C_GENERAL).
    assert scrub.text("in C_GENERAL.", channel_id="C_GENERAL") == f"in {channel_pseudonym('salt', 'C_GENERAL')}."


async def test_practice_calls_are_not_data_unless_asked_for(tmp_path: Path) -> None:
    """An afternoon in the playground (echo model), a `flywheel try`, one real Slack answer:
    the default export is the Slack answer; --source and --model choose otherwise."""
    db = tmp_path / "flywheel.db"
    store = Store(f"sqlite:///{db}")
    await store.upgrade()
    await call(store, "real question", "real answer", votes=(1,))
    for i in range(4):
        await call(store, f"practice {i}", f"Echo model (offline): practice {i}", votes=(1,), model="echo",
                   source="playground", channel_id="C_GENERAL", team_id="T_PLAY")
    await call(store, "tried", "tried answer", votes=(1,), trigger="cli", source="try", channel_id=None)
    await store.close()

    async def answers(*args: str) -> list[str]:
        code, out, err = await cli("--format", "openai-chat", *args, db=db, cwd=tmp_path)
        assert code == 0, err
        return sorted(json.loads(line)["messages"][-1]["content"] for line in out.splitlines())

    assert await answers() == ["real answer"]
    assert await answers("--source", "playground") == [f"Echo model (offline): practice {i}" for i in range(4)]
    assert await answers("--source", "slack", "--source", "try") == ["real answer", "tried answer"]
    assert await answers("--source", "playground", "--model", "gpt-5.4-mini") == []
    assert await answers("--source", "try", "--model", "gpt-5.4-mini") == ["tried answer"]
    code, _, err = await cli("--format", "csv", "--source", "staging", db=db, cwd=tmp_path)
    assert code == 2 and "invalid choice: 'staging'" in err
    code, _, err = await cli("--format", "csv", "--output", "all.csv", db=db, cwd=tmp_path)
    assert code == 0, err
    assert json.loads((tmp_path / "all.manifest.json").read_text())["filters"]["sources"] == ["slack"]
