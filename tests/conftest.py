"""Test harness: the real bot behind its real HTTP endpoint, wired to loopback fakes.

`bot` (a `Harness`) starts a FakeSlack and a FakeOpenAI, builds the app with
`create_app()` exactly as `flywheel run` does, serves `web_app()` on 127.0.0.1,
and sends signed requests with `SlackSender`. Database tests run once on SQLite
and once on PostgreSQL (`FLYWHEEL_TEST_POSTGRES_URL`, default the local server);
PostgreSQL is skipped when unreachable unless `FLYWHEEL_TEST_REQUIRE_POSTGRES=1`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from aiohttp import web
from sqlalchemy.engine import make_url

from bot.app import Flywheel, create_app
from bot.ratelimits import RateBudget
from bot.server import web_app
from bot.settings import Settings
from bot.store import Store

from fakes import FakeOpenAI, FakeSlack, SlackSender, wait_until
from fakes.slack_sender import mention, message, reaction

REPO = Path(__file__).resolve().parent.parent
# The prompts Flywheel ships, by name. Tests read a copy of these files (PROMPTS), never the
# checkout's prompts/ folder itself: a prompt someone adds there must not change what a test sees.
SHIPPED = ("ask", "explain", "review", "rewrite", "summarize", "judge")


def _copy_shipped_prompts() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="flywheel-test-prompts-")) / "prompts"
    folder.mkdir()
    for name in SHIPPED:
        shutil.copy2(REPO / "prompts" / f"{name}.prompty", folder)
    atexit.register(shutil.rmtree, folder.parent, True)
    return folder


PROMPTS = _copy_shipped_prompts()  # module-level: hypothesis tests and subprocesses use it too
FLYWHEEL = Path(sys.executable).with_name("flywheel")  # the console script of this virtualenv
SIGNING_SECRET = "test-signing-secret-0123456789"
POSTGRES_URL = os.environ.get("FLYWHEEL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_POSTGRES = os.environ.get("FLYWHEEL_TEST_REQUIRE_POSTGRES") == "1"
TABLES = "feedback, corrections, call_messages, calls, prompt_versions, slack_events, meta"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """slack_sdk honours HTTP(S)_PROXY and ignores NO_PROXY: loopback fakes need them unset."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


# -- the `flywheel` command as a separate process ---------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a new user: no Slack, model or database settings."""
    keep = {k: v for k, v in os.environ.items()
            if k in ("PATH", "HOME", "LANG", "LC_ALL", "SYSTEMROOT", "TMPDIR", "VIRTUAL_ENV")}
    return {**keep, **extra}


@contextlib.asynccontextmanager
async def flywheel_process(*args: str, cwd: Path, env: dict[str, str],
                           log_file: Path | None = None) -> AsyncIterator[asyncio.subprocess.Process]:
    """``flywheel ARGS…`` as a subprocess; killed if the test leaves it running. ``log_file``:
    its stderr goes there instead of a pipe (a DEBUG log outgrows a pipe nobody reads until
    the end, and the process would block writing to it)."""
    with contextlib.ExitStack() as files:
        stderr = files.enter_context(log_file.open("wb")) if log_file else asyncio.subprocess.PIPE
        proc = await asyncio.create_subprocess_exec(str(FLYWHEEL), *args, cwd=cwd, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=stderr)
        try:
            yield proc
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()


async def on_terminal(*args: str, cwd: Path, env: dict[str, str], stdout_too: bool = False,
                      timeout: float = 60) -> tuple[int, bytes, str]:
    """``flywheel ARGS…`` with stderr on a terminal (a pty; stdout too with ``stdout_too``, else a
    pipe): its exit status, its stdout (piped) and everything the terminal was sent."""
    master, slave = os.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            str(FLYWHEEL), *args, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=slave if stdout_too else asyncio.subprocess.PIPE, stderr=slave)
    finally:
        os.close(slave)  # the child holds it now: reading ends when the child is gone
    chunks: list[bytes] = []

    def read_all() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: no process has the terminal open any more
                return
            if not data:
                return
            chunks.append(data)

    try:
        reader = asyncio.get_running_loop().run_in_executor(None, read_all)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        await asyncio.wait_for(reader, timeout)
    finally:
        os.close(master)
    return proc.returncode or 0, out or b"", b"".join(chunks).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_healthy(url: str, proc: asyncio.subprocess.Process, timeout: float = 15.0) -> None:
    """Poll ``url``/healthz until it answers 200; fail with the process's stderr if it exits first."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as session:
        while asyncio.get_running_loop().time() < deadline and proc.returncode is None:
            try:
                async with session.get(f"{url}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    proc.kill()
    raise AssertionError(((await proc.communicate())[1] or b"(its stderr went to a file)").decode()[-3000:])


# -- databases -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str | None]:
    """A fresh PostgreSQL database for this test run, dropped at the end."""
    admin = make_url(POSTGRES_URL)
    name = f"flywheel_test_{uuid.uuid4().hex[:10]}"
    try:
        conn = psycopg.connect(admin.set(drivername="postgresql").render_as_string(hide_password=False),
                               autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL required but unreachable at {admin.render_as_string()}: {exc}")
        yield None
        return
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.set(database=name).render_as_string(hide_password=False)
    asyncio.run(_migrate(url))
    try:
        yield url
    finally:
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all (for migration tests): a new SQLite file, or a new
    PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    if request.getfixturevalue("postgres_database") is None:
        pytest.skip("PostgreSQL not reachable (set FLYWHEEL_TEST_REQUIRE_POSTGRES=1 to make this an error)")
    admin = make_url(POSTGRES_URL).set(drivername="postgresql")
    name = f"flywheel_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _migrate(url: str) -> None:
    store = Store(url)
    try:
        await store.upgrade()
    finally:
        await store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'flywheel.db'}"
    url = request.getfixturevalue("postgres_database")
    if url is None:
        pytest.skip("PostgreSQL not reachable (set FLYWHEEL_TEST_REQUIRE_POSTGRES=1 to make this an error)")
    with psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
                         autocommit=True) as conn:
        conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    return url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = Store(database_url)
    await s.upgrade()
    yield s
    await s.close()


# -- the bot behind its HTTP endpoint ----------------------------------------------------


@dataclass
class Harness:
    fw: Flywheel
    slack: FakeSlack
    model: FakeOpenAI
    sender: SlackSender
    url: str  # http://127.0.0.1:PORT

    @property
    def store(self) -> Store:
        return self.fw.store

    # Shortcuts that send what Slack sends.
    async def mention(self, text: str, **kw: Any) -> dict[str, Any]:
        return await self._post(mention(f"<@{self.slack.bot_user_id}> {text}", **kw))

    async def message(self, text: str, **kw: Any) -> dict[str, Any]:
        return await self._post(message(text, **kw))

    async def _post(self, event: dict[str, Any]) -> dict[str, Any]:
        """A person posts a message: Slack stores it, then delivers the event."""
        if event.get("user") and not event.get("bot_id") and not event.get("subtype"):
            self.slack.add_message(event["channel"], event["text"], user=event["user"], ts=event["ts"],
                                   thread_ts=event.get("thread_ts"))
        status, _ = await self.sender.event(event)
        assert status == 200
        return event

    async def react(self, kind: str, name: str, *, user: str, channel: str, ts: str) -> None:
        status, _ = await self.sender.event(reaction(kind, name, user=user, channel=channel, ts=ts))
        assert status == 200
        await self.written()

    async def written(self, timeout: float = 5.0) -> None:
        """Wait until the journal has written what it keeps (votes, corrections, rows) to the database."""
        await wait_until(lambda: self.fw.journal.backlog == 0, timeout=timeout)

    async def calls(self, n: int = 1, timeout: float = 5.0) -> list[Any]:
        """Wait until at least ``n`` calls are logged and every answer in flight is done."""
        async def logged() -> list[Any]:
            return await self.store.list_calls()

        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            rows = await logged()
            if len(rows) >= n and self.fw.conversation.inflight == 0:
                return rows
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"expected {n} logged call(s), found {len(rows)}")
            await asyncio.sleep(0.02)

    async def settle(self) -> None:
        """For tests asserting that nothing (more) happens: wait until the bot has finished
        everything it accepted. Each delivery sent was acknowledged, and every listener's
        work counts as accepted from its first step, so once the bot is idle nothing it was
        sent can still act."""
        assert await self.fw.conversation.drain(10), "the bot was still busy after 10 s"


def settings_for(slack: FakeSlack, model: FakeOpenAI, database_url: str, **overrides: str) -> Settings:
    values = {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.url,
        "OPENAI_API_KEY": model.api_key,
        "OPENAI_BASE_URL": model.url,
        "FLYWHEEL_MODEL": "gpt-5.4-mini",
        "FLYWHEEL_MODEL_TIMEOUT": "5",
        "DATABASE_URL": database_url,
        "PROMPTS_DIR": str(PROMPTS),
        "FLYWHEEL_SHUTDOWN_GRACE": "10",
        **overrides,
    }
    return Settings.parse(values)


@pytest.fixture
def bot_settings() -> dict[str, str]:
    """Per-test overrides for the harness settings (tests may update it before using `bot`)."""
    return {}


@contextlib.asynccontextmanager
async def serve_bot(slack: FakeSlack, model: FakeOpenAI, database_url: str, *,
                    budget: RateBudget | None = None, journal_dir: Path | None = None,
                    **overrides: str) -> AsyncIterator[Harness]:
    """One bot process: create_app() as `flywheel run` does, behind a real HTTP endpoint
    (``budget``: the bot's RateBudget, default the one create_app() makes; ``journal_dir``:
    its journal, default a fresh folder: pass the same one to play a restart)."""
    journal_dir = journal_dir or Path(tempfile.mkdtemp(prefix="flywheel-journal-"))
    settings = settings_for(slack, model, database_url, FLYWHEEL_JOURNAL_DIR=str(journal_dir), **overrides)
    fw = create_app(settings, budget=budget)
    await fw.store.upgrade()
    await fw.start()
    runner = web.AppRunner(web_app(fw), access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with SlackSender(f"{url}/slack/events", SIGNING_SECRET) as sender:
        try:
            yield Harness(fw=fw, slack=slack, model=model, sender=sender, url=url)
        finally:  # as `flywheel run` stops: let work finish, interrupt what is left, then close
            await fw.conversation.shutdown(fw.settings.shutdown_grace)
            await runner.cleanup()
            await fw.close()


@contextlib.asynccontextmanager
async def bot_with_prompt(bot: Harness, tmp_path: Path, file_name: str, text: str) -> AsyncIterator[Harness]:
    """Another bot on ``bot``'s fakes (its own SQLite database), whose prompts folder is the
    shipped one plus ``file_name`` holding ``text``."""
    prompts = tmp_path / "prompts"
    shutil.copytree(PROMPTS, prompts)
    (prompts / file_name).write_text(text)
    async with serve_bot(bot.slack, bot.model, f"sqlite:///{tmp_path / 'other.db'}", PROMPTS_DIR=str(prompts)) as h:
        yield h


@pytest.fixture
async def bot(database_url: str, bot_settings: dict[str, str]) -> AsyncIterator[Harness]:
    async with FakeSlack() as slack, FakeOpenAI() as model, \
            serve_bot(slack, model, database_url, **bot_settings) as harness:
        yield harness
