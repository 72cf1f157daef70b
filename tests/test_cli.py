"""The `flywheel` command as a user runs it: a real subprocess, a clean environment."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from sqlalchemy import make_url

from conftest import FLYWHEEL, PROMPTS, SIGNING_SECRET, clean_env, flywheel_process, free_port
from fakes import FakeOpenAI, FakeSlack, SlackSender, wait_until
from fakes.slack_sender import mention


async def run(*args: str, cwd: Path, env: dict[str, str], timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(FLYWHEEL), *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


def test_console_script_is_installed():
    assert FLYWHEEL.exists() or shutil.which("flywheel"), "pip install -e . provides `flywheel`"


async def test_run_without_settings_prints_one_line_per_missing_setting_and_exits_2(tmp_path: Path):
    code, out, err = await run("run", cwd=tmp_path, env=clean_env())
    assert code == 2
    lines = err.strip().splitlines()
    assert [line.split()[1] for line in lines] == ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "OPENAI_API_KEY"]
    assert all(line.startswith("flywheel: ") and "is not set" in line for line in lines)
    assert "Traceback" not in err and out == ""


async def test_malformed_settings_are_named_with_what_to_do(tmp_path: Path):
    env = clean_env(SLACK_BOT_TOKEN="xoxp-user-token", SLACK_SIGNING_SECRET="s", OPENAI_API_KEY="k",
                    PORT="eighty", LOG_LEVEL="LOUD")
    code, _, err = await run("run", cwd=tmp_path, env=env)
    assert code == 2
    assert "SLACK_BOT_TOKEN must be a bot token starting with xoxb-" in err
    assert "PORT must be a port number" in err and "LOG_LEVEL must be one of" in err
    assert "Traceback" not in err


async def test_settings_come_from_dotenv_in_the_working_directory(tmp_path: Path):
    (tmp_path / ".env").write_text("SLACK_BOT_TOKEN=xoxb-from-dotenv\nSLACK_SIGNING_SECRET=abc\n")
    code, _, err = await run("run", cwd=tmp_path, env=clean_env())
    assert code == 2
    assert [line.split()[1] for line in err.strip().splitlines()] == ["OPENAI_API_KEY"]


async def test_manifest_lists_every_command_event_scope_and_the_mode(tmp_path: Path):
    code, out, err = await run("manifest", "--url", "https://bot.example.com", cwd=PROMPTS.parent, env=clean_env())
    assert code == 0, err
    doc = yaml.safe_load(out)
    commands = {c["command"]: c for c in doc["features"]["slash_commands"]}
    assert {"/ask", "/summarize"} <= set(commands)
    # judge.prompty says `slack: false`: it is for `flywheel replay --judge`, not a skill
    shipped = {p.stem for p in (PROMPTS).glob("*.prompty")} - {"judge"}
    assert {c.lstrip("/") for c in commands} == shipped
    assert all(c["url"] == "https://bot.example.com/slack/events" and c["description"] for c in commands.values())
    events = doc["settings"]["event_subscriptions"]
    assert events["request_url"] == "https://bot.example.com/slack/events"
    assert {"app_mention", "message.channels", "message.im", "reaction_added", "reaction_removed"} <= set(
        events["bot_events"])
    scopes = set(doc["oauth_config"]["scopes"]["bot"])
    assert {"app_mentions:read", "chat:write", "commands", "reactions:read", "channels:history",
            "im:history", "users:read"} <= scopes
    assert doc["settings"]["interactivity"] == {"is_enabled": True,
                                                "request_url": "https://bot.example.com/slack/events"}
    assert doc["settings"]["socket_mode_enabled"] is False


async def test_manifest_in_socket_mode_has_no_urls(tmp_path: Path):
    code, out, _ = await run("manifest", cwd=PROMPTS.parent, env=clean_env(SLACK_APP_TOKEN="xapp-1-abc"))
    assert code == 0
    doc = yaml.safe_load(out)
    assert doc["settings"]["socket_mode_enabled"] is True
    assert "request_url" not in doc["settings"]["event_subscriptions"]
    assert all("url" not in c for c in doc["features"]["slash_commands"])


async def test_manifest_refuses_a_url_slack_would_not_call(tmp_path: Path):
    code, out, err = await run("manifest", "--url", "http://bot.example.com", cwd=PROMPTS.parent, env=clean_env())
    assert (code, out) == (2, "") and "--url must be an https:// URL" in err
    code, out, err = await run("manifest", "--socket", "--url", "https://bot.example.com", cwd=PROMPTS.parent,
                               env=clean_env())
    assert (code, out) == (2, "") and "--url is for HTTP mode" in err


async def test_prompts_lists_prompts_and_reports_invalid_files_with_path_and_line(tmp_path: Path):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    shutil.copy(PROMPTS / "ask.prompty", prompts)
    (prompts / "broken.prompty").write_text("---\nname: broken\nmodel:\n  options: {temperature: hot}\n---\n"
                                            "user:\n{{ text }}\n")
    (prompts / "deaf.prompty").write_text("---\nname: deaf\n---\nsystem:\nSay hi.\nuser:\nHello!\n")
    code, out, err = await run("prompts", cwd=tmp_path, env=clean_env())
    assert code == 1
    assert "ask" in out and "/ask" in out and "deaf" in out  # a warning does not leave the prompt out
    assert f"{prompts / 'broken.prompty'}:4:" in err or "broken.prompty:4:" in err
    assert "temperature" in err
    assert "warning: " in err and "deaf.prompty:6: the template never uses {{ text }}" in err


async def test_try_prints_the_answer_and_logs_the_call(tmp_path: Path):
    async with FakeOpenAI() as model:
        model.reply("Hello from the fake model!", usage=(12, 5))
        env = clean_env(OPENAI_API_KEY=model.api_key, OPENAI_BASE_URL=model.url,
                        DATABASE_URL=f"sqlite:///{tmp_path / 'f.db'}", PROMPTS_DIR=str(PROMPTS))
        code, out, err = await run("try", "ask", "hi", cwd=tmp_path, env=env)
    assert code == 0, err
    assert out.strip() == "Hello from the fake model!"
    assert model.requests[0]["messages"][-1] == {"role": "user", "content": "hi"}
    rows = sqlite3.connect(tmp_path / "f.db").execute(
        "select trigger, source, prompt_name, answer, prompt_tokens, completion_tokens, status from calls").fetchall()
    assert rows == [("cli", "try", "ask", "Hello from the fake model!", 12, 5, "ok")]  # practice, not traffic


async def test_try_without_a_model_uses_the_echo_model_as_the_playground_does_and_says_so(tmp_path: Path):
    env = clean_env(DATABASE_URL=f"sqlite:///{tmp_path / 'f.db'}", PROMPTS_DIR=str(PROMPTS))
    code, out, err = await run("try", "ask", "hello there", cwd=tmp_path, env=env)
    assert code == 0, err
    assert "Echo model (offline)" in out and "hello there" in out
    assert "the offline echo model answers" in err and " · echo · " in err  # which model answered
    rows = sqlite3.connect(tmp_path / "f.db").execute("select model, model_resolved, source from calls").fetchall()
    assert rows == [("echo", "echo", "try")]


async def test_try_unknown_prompt_says_which_exist(tmp_path: Path):
    env = clean_env(OPENAI_API_KEY="sk-x", PROMPTS_DIR=str(PROMPTS))
    code, _, err = await run("try", "nope", "hi", cwd=tmp_path, env=env)
    assert code == 2 and "no valid prompt named 'nope'" in err and "ask" in err


async def test_db_upgrade_creates_the_schema(tmp_path: Path):
    code, out, err = await run("db", "upgrade", cwd=tmp_path, env=clean_env())
    assert code == 0, err
    assert "revision" in out
    tables = {r[0] for r in sqlite3.connect(tmp_path / "flywheel.db").execute(
        "select name from sqlite_master where type='table'")}
    assert {"calls", "call_messages", "feedback", "prompt_versions", "slack_events"} <= tables


async def test_unreachable_database_is_one_clear_line(tmp_path: Path):
    env = clean_env(DATABASE_URL="postgresql://postgres@127.0.0.1:1/none")
    code, _, err = await run("db", "upgrade", cwd=tmp_path, env=env)
    assert code == 2
    assert err.startswith("flywheel: DATABASE_URL: cannot open or migrate the database")
    assert "Traceback" not in err


async def test_run_on_a_database_it_cannot_migrate_stops_with_one_clear_line(tmp_path: Path):
    """`flywheel run` migrates in a child process; its failure still reads like `db upgrade`'s."""
    with sqlite3.connect(tmp_path / "flywheel.db") as db:
        db.execute("CREATE TABLE calls (id INTEGER PRIMARY KEY)")  # someone else's table
    async with FakeSlack() as slack:
        env = clean_env(SLACK_BOT_TOKEN=slack.bot_token, SLACK_SIGNING_SECRET=SIGNING_SECRET,
                        SLACK_API_URL=slack.url, OPENAI_API_KEY="sk-test", PROMPTS_DIR=str(PROMPTS))
        code, _, err = await run("run", "--port", str(free_port()), cwd=tmp_path, env=env)
    assert code == 2, err
    assert err.strip().splitlines()[-1] == ("flywheel: DATABASE_URL: cannot open or migrate the database: "
                                            "table calls already exists"), err
    assert "Traceback" not in err
    with sqlite3.connect(tmp_path / "flywheel.db") as db:  # their table untouched, no revision claimed
        assert [r[1] for r in db.execute("pragma table_info(calls)")] == ["id"]
        assert db.execute("select count(*) from alembic_version").fetchone() == (0,)


async def test_python_dash_m_bot_is_flywheel(tmp_path: Path):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--help", cwd=tmp_path, env=clean_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and b"manifest" in out and b"run" in out


def test_the_bot_starts_without_the_reporting_commands_migrations_or_model_sdk():
    """Start time and idle memory: `flywheel run` loads what serving needs; export, stats, replay,
    experiment and prune (SQL and statistics), Alembic (a migration runs in a child process) and the
    model SDK (on the first answer) wait until used. Their options still show in their --help."""
    script = ("import sys; from bot.cli import parser; parser({'run'}).parse_args(['run', '--http']);"
              "import bot.app, bot.server;"
              "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'openai')"
              " or m.startswith(('bot.export', 'bot.stats', 'bot.replay', 'bot.experiment_', 'bot.prune',"
              " 'bot.significance', 'bot.judge')))))")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env=clean_env(), check=True).stdout.split()
    assert loaded == []
    for command, option in (("export", "--format"), ("stats", "--since"), ("replay", "--judge"),
                            ("experiment", "status"), ("prune", "--older-than")):
        helped = subprocess.run([str(FLYWHEEL), command, "--help"], capture_output=True, text=True, timeout=60,
                                env=clean_env(), check=True).stdout
        assert option in helped, (command, helped)


async def test_run_serves_slack_over_http_and_stops_gracefully_on_sigterm(tmp_path: Path):
    """`flywheel run` end to end: migrate, serve /healthz and /slack/events, answer, exit on SIGTERM."""
    async with FakeSlack() as slack, FakeOpenAI() as model:
        model.reply("Answered by the real process.", chunk_delay=0.05)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = clean_env(SLACK_BOT_TOKEN=slack.bot_token, SLACK_SIGNING_SECRET=SIGNING_SECRET,
                        SLACK_API_URL=slack.url, OPENAI_API_KEY=model.api_key, OPENAI_BASE_URL=model.url,
                        PROMPTS_DIR=str(PROMPTS), LOG_LEVEL="DEBUG")
        proc = await asyncio.create_subprocess_exec(
            str(FLYWHEEL), "run", "--port", str(port), cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            async def healthy() -> bool:
                try:
                    async with session.get(f"{base}/healthz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            for _ in range(200):
                if await healthy():
                    break
                await asyncio.sleep(0.05)
            else:
                proc.kill()
                raise AssertionError((await proc.communicate())[1].decode())
            async with SlackSender(f"{base}/slack/events", SIGNING_SECRET, session) as sender:
                event = mention("<@UBOT> hello")
                slack.add_message("C1", event["text"], ts=event["ts"])
                status, _ = await sender.event(event)
                assert status == 200
            await wait_until(lambda: slack.calls("chat.startStream"))
            proc.send_signal(signal.SIGTERM)  # mid-answer: it must finish first
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        replies = [m for m in slack.thread("C1", event["ts"]) if m.get("user") == slack.bot_user_id]
        assert [slack.text_of(m) for m in replies] == ["Answered by the real process."]
        assert not replies[0].get("streaming")
        logged = sqlite3.connect(tmp_path / "flywheel.db").execute("select status from calls").fetchall()
        assert logged == [("ok",)]
        text = err.decode()
        for secret in (slack.bot_token, SIGNING_SECRET, model.api_key):
            assert secret not in text, "secrets never reach the log, DEBUG included"
        assert "database schema created (revision " in text  # by the child process, said by the bot


async def test_run_with_a_bot_token_slack_refuses_fails_with_one_clear_line(tmp_path: Path):
    async with FakeSlack() as slack:
        env = clean_env(SLACK_BOT_TOKEN="xoxb-revoked", SLACK_SIGNING_SECRET=SIGNING_SECRET,
                        SLACK_API_URL=slack.url, OPENAI_API_KEY="sk-test", PROMPTS_DIR=str(PROMPTS))
        code, _, err = await run("run", "--port", "0", cwd=tmp_path, env=env, timeout=30)
    assert code == 2
    assert "flywheel: SLACK_BOT_TOKEN was refused by Slack (invalid_auth)" in err
    assert "Traceback" not in err and "xoxb-revoked" not in err


async def test_dev_with_no_settings_answers_a_mention_with_the_echo_model_within_a_second(tmp_path: Path):
    """The README's first command after the install: the playground, no settings at all."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        str(FLYWHEEL), "dev", "--port", str(port), cwd=tmp_path, env=clean_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(f"{base}/") as resp:
                        if resp.status == 200 and "<html" in (await resp.text()).lower():
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            started = time.monotonic()
            async with session.post(f"{base}/playground/api/messages",
                                    json={"channel": "C_GENERAL", "text": "@flywheel hello there"}) as resp:
                asked = await resp.json()

            async def answer() -> dict | None:
                async with session.get(f"{base}/playground/api/state") as resp:
                    state = await resp.json()
                return next((m for m in state["messages"]["C_GENERAL"] if m.get("user") == "UBOT"
                             and m.get("thread_ts") == asked["ts"] and not m.get("streaming")), None)

            while (done := await answer()) is None and time.monotonic() - started < 10:
                await asyncio.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert done is not None, err.decode()
    assert "Echo model (offline)" in done["text"] and "hello there" in done["text"]
    assert done["metadata"]["event_payload"]["model"] == "echo"
    assert f"Flywheel playground: {base}/" in out.decode()
    assert proc.returncode == 0
    logged = sqlite3.connect(tmp_path / "flywheel.db").execute("select model, source, status from calls").fetchall()
    assert logged == [("echo", "playground", "ok")]  # practice: not counted as Slack traffic


async def _dev_banner(tmp_path: Path, env: dict[str, str]) -> str:
    """What `flywheel dev` prints up to its database line (it is stopped then)."""
    async with flywheel_process("dev", "--port", str(free_port()), cwd=tmp_path, env=env) as proc:
        assert proc.stdout is not None
        lines: list[str] = []
        try:
            while not any("database:" in line for line in lines):
                line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
                if not line:
                    break
                lines.append(line)
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.communicate(), 30)
    return "".join(lines)


async def test_dev_names_the_database_and_the_model_server_without_their_credentials(
        tmp_path: Path, database_url: str):
    if database_url.startswith("postgresql"):  # the local server trusts loopback: any password goes
        url = make_url(database_url)
        database_url = url.set(password="db-pass-word-1", query={"application_name": "qs-secret-2"}
                               ).render_as_string(hide_password=False)
        shown = f"postgresql://{url.host}:{url.port}/{url.database}"
    else:
        shown = database_url
    env = clean_env(DATABASE_URL=database_url, OPENAI_API_KEY="sk-test-key-3",
                    OPENAI_BASE_URL="http://llm-user:llm-pass-4@127.0.0.1:9/v1?api-key=llm-key-5",
                    PROMPTS_DIR=str(PROMPTS))
    out = await _dev_banner(tmp_path, env)
    assert f"database: {shown}\n" in out, out
    assert "at http://127.0.0.1:9/v1\n" in out, out
    for secret in ("db-pass-word-1", "qs-secret-2", "sk-test-key-3", "llm-user", "llm-pass-4", "llm-key-5"):
        assert secret not in out


async def test_dev_with_a_database_it_cannot_open_says_so_in_one_line(tmp_path: Path):
    env = clean_env(DATABASE_URL="postgresql://flywheel:db-pass-word-1@127.0.0.1:1/none")
    code, out, err = await run("dev", "--port", str(free_port()), cwd=tmp_path, env=env)
    assert code == 2 and out == ""
    assert err.startswith("flywheel: DATABASE_URL: cannot open or migrate the database") and len(err.splitlines()) == 1
    assert "Traceback" not in err and "db-pass-word-1" not in err


async def test_dev_refuses_a_page_that_rebinds_its_name_to_this_machine(tmp_path: Path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    async with flywheel_process("dev", "--port", str(port), cwd=tmp_path, env=clean_env()) as proc, \
            aiohttp.ClientSession(base) as session:
        for _ in range(200):
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get("/") as resp:
                    if resp.status == 200:
                        break
            await asyncio.sleep(0.05)
        for method, path, body in [("GET", "/", None), ("GET", "/playground/api/state", None), ("GET", "/healthz", None),
                                   ("POST", "/playground/api/messages", {"channel": "C_GENERAL", "text": "hi"})]:
            async with session.request(method, path, json=body, headers=evil) as resp:
                assert resp.status == 403, (path, resp.status)
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect("/playground/ws", headers=evil)
        async with session.get("/playground/api/state") as resp:
            assert resp.status == 200 and (await resp.json())["messages"]["C_GENERAL"] == []
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0 and "token" not in out.decode() and "warning" not in err.decode()
