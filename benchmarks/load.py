"""Load benchmark: signed Slack events through the real HTTP endpoint of `flywheel run`.

Run by hand (not part of pytest); results and the commands that made them are in
benchmarks/RESULTS.md::

    python benchmarks/load.py                          # every scenario, SQLite and PostgreSQL, 3 runs each
    python benchmarks/load.py --scenario ack --db sqlite --repeat 1
    python benchmarks/load.py --scenario inflight --db postgresql
    python benchmarks/load.py --scenario startup
    python benchmarks/load.py --scenario ack inflight --warm     # after one answer: the SDK is imported
    python benchmarks/load.py --flywheel /other/venv/bin/flywheel --json runs.json --logs logs/

Another commit's code is measured by pointing ``--flywheel`` at its install, e.g.::

    git worktree add /work/bench-base 6a3aad5
    python3 -m venv /work/bench-base/.venv && /work/bench-base/.venv/bin/pip install -q -e '/work/bench-base[dev]'
    python benchmarks/load.py --flywheel /work/bench-base/.venv/bin/flywheel

Three processes, so that none of them does its work on another's event loop:

- **the bot**: ``flywheel run --http --port P`` (``--flywheel``; default, the one next to this
  Python) in a clean environment: no proxies (slack_sdk ignores NO_PROXY), a temporary working
  directory (no ``.env``), ``LOG_LEVEL=WARNING``, ``FLYWHEEL_JOURNAL_DIR`` in the temporary
  directory, ``PROMPTS_DIR`` the repository's ``prompts/`` (``--prompts``);
- **the fakes**: a second Python process (this script's ``_fakes`` mode) serving the test
  suite's ``FakeSlack`` with Slack's real, unscaled tier limits (``SLACK_TIERS``: chat.startStream
  and chat.stopStream 20/min per workspace, chat.appendStream 100/min, chat.update 50/min,
  chat.postMessage 1/s per channel; a call over the limit is answered 429) and ``FakeOpenAI`` as
  a model with a time to first token and a token rate: ``--model-seconds S`` is the first token
  after ``--ttft`` (default S/2), then ``--tokens`` (50) word-sized deltas evenly over the rest;
- **the load generator**: this process. It signs ``event_callback`` deliveries like Slack
  (``tests/fakes/slack_sender.py``) and posts them to ``/slack/events``, C at a time. Each
  mention is a new top-level message in one of K channels, so each answer has its own thread.
  ``--reactions F`` adds a 👍 ``reaction_added`` on one answer in 1/F, ``--reaction-delay``
  (1 s) after the load generator sees it complete, on its last message (reactions are
  acknowledged on their own path:
  the vote is kept in the bot's journal before the ack). ``--warm`` answers one mention before
  the measured load. ``--twins`` also sends the ``message`` event Slack
  delivers alongside every ``app_mention``.

The database is a fresh SQLite file, or a fresh PostgreSQL database made on ``--postgres``
(default ``postgresql://postgres@127.0.0.1:5432/postgres``, used only to create and drop
``flywheel_bench_*``); ``flywheel run`` migrates it at start. Every run starts fresh fakes, a
fresh database and a fresh bot, so no rate-limit window, cache or pool carries over.

Scenarios (``--scenario``, several allowed; default all):

- ``ack``: 200 mentions 50 at a time, then 400 mentions 100 at a time; model 1 s, 20 channels,
  a 👍 on one answer in ten (``--mentions``/``--concurrency`` replace the two loads by one).
- ``inflight``: 1,000 mentions 100 at a time into 100 channels with a 5 s model, so that the
  1,000 conversations are in flight together (if acks keep up).
- ``startup``: spawn → first ``GET /healthz`` 200, and idle RSS, on a fresh database (cold: the
  migrations run) and again on the migrated one (warm).

Measured in each load run:

- **ack**: request written → HTTP response of each delivery, p50/p99/max (mentions; reactions
  apart). "Written" is when the request's headers went out on an open connection (aiohttp's
  ``on_request_headers_sent``); the bot's accepting the connection, reading, verifying and
  acknowledging are all inside it. **ack from send** starts earlier, when the load generator
  decided to send: it adds the generator's own work of opening a connection and building the
  request, which for the first C deliveries (C new connections at once, on a loop that is also
  reading responses) was 25-47 ms. Slack redelivers an event not acknowledged within 3 s: acks
  over 3 s (from send) are counted.
- **first visible text**: send → the first accepted Slack call that put answer text into the
  mention's thread (chat.startStream with text, chat.appendStream, chat.postMessage,
  chat.update; the "Thinking…" note a model slow to start gets is not answer text), by the
  time FakeSlack saw it arrive; both processes read the same ``CLOCK_MONOTONIC``. For an
  answer posted whole this is its end-to-end time.
- **end-to-end**: send → the last accepted delivery call of the answer (chat.stopStream, or the
  final chat.postMessage / chat.update). Slack lets a channel take about one post a second, so
  the last answer in the fullest channel cannot be complete before the model's time plus
  ``ceil(mentions / channels) - 1`` seconds (``ceil(mentions / channels)`` with a 1 s model):
  that **floor** is printed next to the measured maximum.
- **peak answers in flight**: most mentions between their send and their answer's completion.
- **answers complete**: the thread holds exactly the model's answer, whole, with no message
  still streaming, *and* the ``calls`` table has an ``ok`` row for the mention (read after the
  bot has exited, so rows written late count). **votes recorded**: rows in ``feedback``.
- **Slack 429s** (by method in ``--json``); **peak RSS** (``VmHWM`` of the bot once every
  answer is complete and logged); **CPU per answer**: utime + stime of the bot from the first
  delivery until then, divided by the complete answers (reactions' CPU included); the CPU
  seconds of the fakes and of the load generator over the same wall time, to see whether the
  machine was saturated; the model's TTFT and latency as the bot logged them (a bot too busy
  to read its streams on time stretches them); **start → /healthz 200** and
  **idle RSS** (``VmRSS`` 0.5 s after that, before any request).

Each scenario runs ``--repeat`` times (default 3) and the table shows the median of each figure
over the runs; counts that differ between runs are listed run by run. ``--json FILE`` writes
every run's figures (``--table FILE`` prints their tables again), ``--logs DIR`` keeps the
bot's and the fakes' stderr of every run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import math
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
sys.path.insert(0, str(TESTS))  # the benchmark uses the test suite's fakes

from bot.delivery import STATUS_TEXT  # noqa: E402

from fakes.slack_api import SLACK_TIERS  # noqa: E402
from fakes.slack_sender import BOT_USER_ID, SlackSender, mention, message, reaction  # noqa: E402

SIGNING_SECRET = "bench-signing-secret-0123456789"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
PER_CHANNEL = ("chat.postMessage",)
TEXT_CALLS = ("chat.startStream", "chat.appendStream", "chat.postMessage")  # may put bot text in a thread
FINAL_CALLS = ("chat.stopStream", "chat.postMessage", "chat.update")  # may complete an answer
SLACK_RETRY_AFTER = 3.0  # Slack redelivers an event not acknowledged within 3 s
QID = re.compile(r"\bq(\d{6})\b")
VOCABULARY = ("rotate", "the", "key", "first", "then", "deploy", "staging", "check", "logs", "before",
              "production", "traffic", "moves", "over", "and", "keep", "old", "one", "for", "rollback")


# -- the model's answers -----------------------------------------------------------------------


def qid(n: int) -> str:
    return f"q{n:06d}"


def answer_for(question: str, tokens: int) -> str:
    """The fake model's answer to a question: ``tokens`` words, naming the question's id."""
    found = QID.search(question)
    name = found.group(0) if found else "q??????"
    words = [f"Answer {name}:"] + [VOCABULARY[i % len(VOCABULARY)] for i in range(max(tokens - 3, 0))]
    return " ".join(words + [f"end {name}."])


# -- the fakes' process ------------------------------------------------------------------------


class Tracker:
    """Follows FakeSlack's requests: per thread, when bot text first showed and when it completed."""

    def __init__(self, slack: Any, tokens: int):
        self.slack = slack
        self.tokens = tokens
        self.threads: dict[tuple[str, str], dict[str, Any]] = {}
        self.done_order: list[tuple[str, str, str]] = []  # (channel, thread_ts, last message ts)
        self._seen = 0
        self._dirty: set[tuple[str, str]] = set()

    def update(self) -> None:
        requests = self.slack.requests
        while self._seen < len(requests):
            r = requests[self._seen]
            self._seen += 1
            if r.status != 200 or r.failed or r.method not in TEXT_CALLS + FINAL_CALLS:
                continue
            channel = str(r.params.get("channel") or "")
            thread_ts = r.params.get("thread_ts")
            if r.method in ("chat.appendStream", "chat.stopStream", "chat.update"):
                stored = self.slack.message(channel, str(r.params.get("ts") or ""))
                thread_ts = stored.get("thread_ts") if stored else None
            if not thread_ts:
                continue
            key = (channel, str(thread_ts))
            state = self.threads.setdefault(key, {"first_text": None, "last": None, "done": False})
            text = r.params.get("markdown_text") or r.params.get("text") or r.params.get("chunks")
            if text == STATUS_TEXT:  # the "Thinking…" note of a model slow to start: no answer text yet
                text = None
            if r.method in (*TEXT_CALLS, "chat.update") and text and state["first_text"] is None:
                state["first_text"] = r.at
            if r.method in FINAL_CALLS:
                state["last"] = max(state["last"] or 0.0, r.at)
            self._dirty.add(key)
        for key in self._dirty:
            state = self.threads[key]
            replies = [m for m in self.slack.thread(*key) if m.get("bot_id") == self.slack.bot_id]
            text = "".join(self.slack.text_of(m) for m in replies).strip()
            found = QID.search(text)
            text_ok = bool(found) and text == answer_for(found.group(0), self.tokens)
            # Complete: the whole answer is there (a "Thinking…" note alone is not an answer; it is
            # deleted or becomes the answer), and nothing streams any more.
            done = text_ok and not any(m.get("streaming") for m in replies)
            if done and not state["done"]:
                self.done_order.append((*key, replies[-1]["ts"]))
            state.update(done=done, messages=len(replies), streamed=any("chunks" in m for m in replies),
                         qid=found.group(0) if found else None, text_ok=text_ok)
        self._dirty.clear()


async def serve_fakes(config: dict[str, Any]) -> None:
    """The fakes' process: FakeSlack with Slack's tiers, FakeOpenAI with the model's timing, and a
    control endpoint for the load generator; prints their URLs as one JSON line, and runs until
    its stdin closes."""
    from aiohttp import web

    from fakes import FakeOpenAI, FakeSlack

    tokens = int(config["tokens"])
    async with FakeSlack() as slack, FakeOpenAI() as model:
        slack.enforce_limits(SLACK_TIERS, per_channel=PER_CHANNEL)
        model.default_reply(lambda question: answer_for(question, tokens),
                            first_token_delay=config["ttft"], tokens_per_second=config["tokens_per_second"])
        tracker = Tracker(slack, tokens)

        async def progress(request: web.Request) -> web.Response:
            tracker.update()
            cursor = int(request.query.get("cursor", "0"))
            return web.json_response({
                "done": len(tracker.done_order), "new": tracker.done_order[cursor:],
                "cursor": len(tracker.done_order), "rate_limited": len(slack.rate_limited),
                "model_requests": len(model.requests),
            })

        async def report(_: web.Request) -> web.Response:
            tracker.update()
            by_method: dict[str, dict[str, int]] = {}
            for r in slack.requests:
                counts = by_method.setdefault(r.method, {"calls": 0, "ok": 0, "429": 0})
                counts["calls"] += 1
                counts["ok"] += r.status == 200 and not r.failed
                counts["429"] += r.status == 429
            errors: dict[str, int] = {}
            for r in slack.requests:
                if r.failed and r.status != 429:
                    errors[f"{r.method}: {r.error}"] = errors.get(f"{r.method}: {r.error}", 0) + 1
            return web.json_response({
                "threads": [{"channel": c, "thread_ts": t, **s} for (c, t), s in tracker.threads.items()],
                "slack_calls": by_method, "slack_errors": errors, "model_requests": len(model.requests),
            })

        control = web.Application()
        control.add_routes([web.get("/progress", progress), web.get("/report", report)])
        runner = web.AppRunner(control, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(json.dumps({"slack": slack.url, "openai": model.url, "api_key": model.api_key,
                          "bot_token": slack.bot_token,
                          "control": f"http://127.0.0.1:{runner.addresses[0][1]}"}), flush=True)
        try:
            await asyncio.to_thread(sys.stdin.read)  # the load generator closes it (or exits)
        finally:
            await runner.cleanup()


class Fakes:
    """The fakes' process, seen from the load generator."""

    def __init__(self, proc: asyncio.subprocess.Process, urls: dict[str, str]):
        self.proc = proc
        self.urls = urls

    @classmethod
    async def start(cls, config: dict[str, Any], stderr: Path) -> Fakes:
        with stderr.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "_fakes", json.dumps(config), env=clean_env(),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not line:
            raise RuntimeError(f"the fakes did not start:\n{stderr.read_text()}")
        return cls(proc, json.loads(line))

    async def get(self, session: aiohttp.ClientSession, path: str) -> dict[str, Any]:
        async with session.get(self.urls["control"] + path) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


# -- the bot's process -------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """A new user's environment: no proxies (slack_sdk ignores NO_PROXY), no Slack, model or
    database settings."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")}
    return {**keep, **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bot:
    """`flywheel run --http` as a subprocess."""

    def __init__(self, flywheel: Path, env: dict[str, str], cwd: Path, stderr: Path):
        self.flywheel, self.env, self.cwd, self.stderr = flywheel, env, cwd, stderr
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, session: aiohttp.ClientSession, timeout: float = 30.0) -> float:
        """Start it; returns the seconds from spawning to the first ``/healthz`` 200."""
        started = time.monotonic()
        with self.stderr.open("ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                str(self.flywheel), "run", "--http", "--port", str(self.port), cwd=self.cwd, env=self.env,
                stdin=asyncio.subprocess.DEVNULL, stdout=err, stderr=err)
        while time.monotonic() - started < timeout:
            if self.proc.returncode is not None:
                break
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{self.url}/healthz", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return time.monotonic() - started
            await asyncio.sleep(0.005)
        await self.stop()
        raise RuntimeError(f"flywheel run did not become healthy:\n{self.stderr.read_text()[-3000:]}")

    async def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM (answers in flight may finish), then SIGKILL after ``timeout`` seconds."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode


# -- databases ---------------------------------------------------------------------------------


class Database:
    """A fresh database for one run: a SQLite file, or a PostgreSQL database dropped afterwards."""

    def __init__(self, kind: str, workdir: Path, admin: str):
        self.kind, self.admin = kind, admin
        if kind == "sqlite":
            self.path = workdir / "flywheel.db"
            self.url = f"sqlite:///{self.path}"
            return
        import psycopg

        self.name = f"flywheel_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        parts = urlsplit(admin)
        self.url = urlunsplit(parts._replace(path=f"/{self.name}"))

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.path, timeout=30)) as conn:
                return conn.execute(sql).fetchall()
        import psycopg

        with psycopg.connect(self.url, connect_timeout=5) as conn:
            return conn.execute(sql).fetchall()

    def calls(self) -> dict[str, str]:
        """request_ts -> status of the logged mention answers (empty before the schema exists)."""
        try:
            return {ts: status for ts, status in self.query(
                "SELECT request_ts, status FROM calls WHERE request_ts IS NOT NULL")}
        except Exception:  # noqa: BLE001 - no table yet, or the database is busy: not counted yet
            return {}

    def model_times(self) -> list[tuple[float, float]]:
        """(ttft_ms, latency_ms) of every logged call, as the bot measured them."""
        try:
            return [(a, b) for a, b in self.query("SELECT ttft_ms, latency_ms FROM calls")
                    if a is not None and b is not None]
        except Exception:  # noqa: BLE001 - another schema: not reported
            return []

    def votes(self) -> int:
        try:
            return int(self.query("SELECT count(*) FROM feedback")[0][0])
        except Exception:  # noqa: BLE001
            return 0

    def drop(self) -> None:
        if self.kind == "sqlite":
            return
        import psycopg

        with psycopg.connect(self.admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


# -- one run -----------------------------------------------------------------------------------


@dataclass
class Load:
    """One load scenario's parameters."""

    name: str
    mentions: int
    concurrency: int
    channels: int
    model_seconds: float
    ttft: float
    tokens: int
    reactions: float  # share of answers that get a 👍
    reaction_delay: float  # seconds from seeing the answer complete to the 👍
    twins: bool

    @property
    def tokens_per_second(self) -> float:
        return max(self.tokens - 1, 1) / max(self.model_seconds - self.ttft, 0.001)

    @property
    def floor(self) -> float:
        """Seconds before the last answer of the fullest channel can be complete: the model's
        time, then one post a second in that channel."""
        return self.model_seconds + math.ceil(self.mentions / self.channels) - 1

    def label(self) -> str:
        return f"{self.name} {self.mentions}@{self.concurrency}"


@dataclass
class Delivery:
    kind: str  # app_mention | message | reaction_added
    sent: float
    written: float | None = None  # its headers went out (the connection is open, the request built)
    acked: float | None = None
    status: int | None = None
    error: str | None = None
    qid: str | None = None
    channel: str | None = None
    ts: str | None = None


@dataclass
class Run:
    """Everything measured in one run (times in seconds, memory in MB)."""

    scenario: str
    db: str
    repeat: int
    figures: dict[str, Any] = field(default_factory=dict)


_delivery: contextvars.ContextVar[Delivery | None] = contextvars.ContextVar("delivery", default=None)


async def _headers_sent(_session: Any, _context: Any, _params: Any) -> None:
    """aiohttp's trace hook, in the task of the delivery being sent."""
    if (d := _delivery.get()) is not None and d.written is None:
        d.written = time.monotonic()


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]


def bot_env(fakes: Fakes, db: Database, workdir: Path, prompts: Path) -> dict[str, str]:
    return clean_env(
        SLACK_BOT_TOKEN=fakes.urls["bot_token"], SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=fakes.urls["slack"], OPENAI_API_KEY=fakes.urls["api_key"],
        OPENAI_BASE_URL=fakes.urls["openai"], DATABASE_URL=db.url, PROMPTS_DIR=str(prompts),
        LOG_LEVEL="WARNING", FLYWHEEL_JOURNAL_DIR=str(workdir / "journal"))


def stderr_summary(path: Path) -> dict[str, Any]:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    distinct: dict[str, int] = {}
    for line in lines:
        key = re.sub(r"\d+", "N", line)[:160]
        distinct[key] = distinct.get(key, 0) + 1
    top = sorted(distinct.items(), key=lambda kv: -kv[1])[:8]
    return {"lines": len(lines), "tracebacks": sum("Traceback" in line for line in lines),
            "top": [f"{count} x {line}" for line, count in top]}


async def run_load(load: Load, db_kind: str, repeat: int, args: argparse.Namespace) -> Run:
    run = Run(load.label() + (" warm" if args.warm else ""), db_kind, repeat)
    workdir = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    fakes = await Fakes.start({"tokens": load.tokens, "ttft": load.ttft,
                               "tokens_per_second": load.tokens_per_second}, workdir / "fakes.log")
    db = Database(db_kind, workdir, args.postgres)
    bot = Bot(args.flywheel, bot_env(fakes, db, workdir, args.prompts), workdir, workdir / "bot.log")
    connector = aiohttp.TCPConnector(limit=0)  # no client-side queueing: C deliveries are C requests
    tracing = aiohttp.TraceConfig()
    tracing.on_request_headers_sent.append(_headers_sent)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60),
                                         trace_configs=[tracing]) as session:
            startup = await bot.start(session)
            await asyncio.sleep(0.5)
            idle = proc_status(bot.pid)["VmRSS"] / 1024
            sender = SlackSender(f"{bot.url}/slack/events", SIGNING_SECRET, session)
            warm_ts = await warm_up(sender, db) if args.warm else None
            cpu_before, fakes_before, own_before = cpu_seconds(bot.pid), cpu_seconds(fakes.proc.pid), _own_cpu()
            began = time.monotonic()
            deliveries, progress = await drive(load, sender, fakes, session, args.timeout)
            answered_at = time.monotonic()
            # Every answer is in Slack (or the time is up): wait for the rows, then read CPU and memory.
            mentions = [d for d in deliveries if d.kind == "app_mention"]
            wanted = {d.ts for d in mentions}
            while time.monotonic() - answered_at < 30 and not wanted <= set(db.calls()):
                await asyncio.sleep(0.2)
            cpu = cpu_seconds(bot.pid) - cpu_before
            others = cpu_seconds(fakes.proc.pid) - fakes_before, _own_cpu() - own_before
            wall = time.monotonic() - began
            memory = proc_status(bot.pid)
            report = await fakes.get(session, "/report")
            exit_code = await bot.stop()
        rows = db.calls()
        rows.pop(warm_ts or "", None)  # the warm-up is not part of the load
        votes = db.votes()
        model_times = db.model_times()
    finally:
        await bot.stop()
        await fakes.stop()
        with contextlib.suppress(Exception):
            db.drop()
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            stem = f"{load.name}-{load.mentions}x{load.concurrency}-{db_kind}-{repeat}"
            for name in ("bot.log", "fakes.log"):
                if (workdir / name).exists():
                    shutil.copy(workdir / name, args.logs / f"{stem}.{name}")
        summary = stderr_summary(workdir / "bot.log")
        shutil.rmtree(workdir, ignore_errors=True)

    threads = {(t["channel"], t["thread_ts"]): t for t in report["threads"]}
    first_text, end_to_end, intervals = [], [], []
    complete = in_slack = 0
    for d in mentions:
        thread = threads.get((d.channel, d.ts))
        if thread is None:
            continue
        if thread["first_text"] is not None:
            first_text.append(thread["first_text"] - d.sent)
        if thread["done"] and thread["last"] is not None:
            end_to_end.append(thread["last"] - d.sent)
            intervals.append((d.sent, thread["last"]))
        ok_in_slack = thread["done"] and thread["text_ok"] and thread["qid"] == d.qid
        in_slack += ok_in_slack
        complete += ok_in_slack and rows.get(d.ts) == "ok"

    def acks(kind: str, *, since_written: bool = True) -> list[float]:
        return [d.acked - (d.written or d.sent if since_written else d.sent) for d in deliveries
                if d.kind == kind and d.acked is not None and d.status == 200]

    mention_acks, reaction_acks = acks("app_mention"), acks("reaction_added")
    from_send = acks("app_mention", since_written=False)
    every_ack = [d.acked - d.sent for d in deliveries if d.acked is not None]
    limited = {m: c["429"] for m, c in report["slack_calls"].items() if c["429"]}
    streamed = sum(1 for t in threads.values() if t.get("streamed"))
    run.figures = {
        "mentions": len(mentions), "concurrency": load.concurrency, "channels": load.channels,
        "model_seconds": load.model_seconds, "ttft": load.ttft, "tokens": load.tokens,
        "reactions_sent": sum(d.kind == "reaction_added" for d in deliveries),
        "twins_sent": sum(d.kind == "message" for d in deliveries),
        "ack_p50": percentile(mention_acks, 50), "ack_p99": percentile(mention_acks, 99),
        "ack_max": max(mention_acks, default=None),
        "ack_from_send_p50": percentile(from_send, 50), "ack_from_send_p99": percentile(from_send, 99),
        "reaction_ack_p50": percentile(reaction_acks, 50), "reaction_ack_p99": percentile(reaction_acks, 99),
        "all_ack_p99": percentile(every_ack, 99),
        "acks_over_3s": sum(a > SLACK_RETRY_AFTER for a in every_ack),
        "delivery_errors": sum(d.status != 200 for d in deliveries),
        "send_seconds": max((d.acked or d.sent for d in deliveries), default=began) - began,
        "first_text_p50": percentile(first_text, 50), "first_text_p99": percentile(first_text, 99),
        "e2e_p50": percentile(end_to_end, 50), "e2e_p99": percentile(end_to_end, 99),
        "e2e_max": max(end_to_end, default=None), "e2e_floor": load.floor,
        "peak_in_flight": peak_overlap(intervals),
        "complete": complete, "complete_in_slack": in_slack, "calls_ok": sum(s == "ok" for s in rows.values()),
        "calls_rows": len(rows), "votes": votes, "streamed": streamed,
        "slack_429": sum(limited.values()), "slack_429_by_method": limited,
        "slack_errors": report["slack_errors"], "slack_calls": report["slack_calls"],
        "model_ttft_p50": percentile([a / 1000 for a, _ in model_times], 50),
        "model_latency_p50": percentile([b / 1000 for _, b in model_times], 50),
        "peak_rss_mb": memory["VmHWM"] / 1024, "cpu_seconds": cpu, "wall_seconds": wall,
        "fakes_cpu_seconds": others[0], "loadgen_cpu_seconds": others[1],
        "cpu_ms_per_answer": 1000 * cpu / complete if complete else None,
        "startup_s": startup, "idle_rss_mb": idle, "exit_code": exit_code,
        "timed_out": progress["done"] < len(mentions), "bot_stderr": summary,
    }
    return run


async def warm_up(sender: SlackSender, db: Database, timeout: float = 30.0) -> str:
    """One mention, answered, before the measured load: the bot has imported the model SDK and
    made its first connections, as a bot that has been running a while has."""
    event = mention(f"<@{BOT_USER_ID}> warm up", channel="CWARMUP")
    status, _ = await sender.event(event)
    assert status == 200, status
    deadline = time.monotonic() + timeout
    while db.calls().get(event["ts"]) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("the warm-up mention was not answered")
        await asyncio.sleep(0.1)
    return event["ts"]


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one time."""
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


async def drive(load: Load, sender: SlackSender, fakes: Fakes, session: aiohttp.ClientSession,
                timeout: float) -> tuple[list[Delivery], dict[str, Any]]:
    """Send the mentions C at a time (and the reactions as answers complete); return when every
    answer is complete in Slack, or after ``timeout`` seconds."""
    deliveries: list[Delivery] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(load.mentions):
        queue.put_nowait(n)

    async def deliver(kind: str, event: dict[str, Any], *, after: float = 0.0, **about: Any) -> None:
        await asyncio.sleep(after)
        d = Delivery(kind, time.monotonic(), **about)
        _delivery.set(d)
        deliveries.append(d)
        try:
            d.status, _ = await sender.event(event)
        except (aiohttp.ClientError, TimeoutError) as exc:
            d.error = type(exc).__name__
        d.acked = time.monotonic()

    async def worker() -> None:
        while not queue.empty():
            n = queue.get_nowait()
            channel = f"C{n % load.channels + 1:04d}"
            text = f"<@{BOT_USER_ID}> question {qid(n)}: how do we rotate the staging API key without downtime?"
            event = mention(text, user=f"U{1000 + n % 97}", channel=channel)
            await deliver("app_mention", event, qid=qid(n), channel=channel, ts=event["ts"])
            if load.twins:
                twin = message(text, user=event["user"], channel=channel, ts=event["ts"])
                await deliver("message", twin, channel=channel, ts=event["ts"])

    every = round(1 / load.reactions) if load.reactions > 0 else 0
    reacting: list[asyncio.Task[None]] = []
    started = time.monotonic()
    workers = [asyncio.create_task(worker()) for _ in range(load.concurrency)]
    progress: dict[str, Any] = {"done": 0, "cursor": 0}
    while True:
        await asyncio.sleep(0.2)
        progress = await fakes.get(session, f"/progress?cursor={progress['cursor']}")
        if every:
            first = progress["cursor"] - len(progress["new"])
            for i, (channel, _, answer_ts) in enumerate(progress["new"], start=first + 1):
                if i % every == 0:
                    vote = reaction("reaction_added", "+1", user=f"U{2000 + i % 89}", channel=channel, ts=answer_ts)
                    reacting.append(asyncio.create_task(
                        deliver("reaction_added", vote, after=load.reaction_delay, channel=channel)))
        if all(w.done() for w in workers) and progress["done"] >= load.mentions:
            break
        if time.monotonic() - started > timeout:
            print(f"  timed out after {timeout:.0f}s: {progress['done']}/{load.mentions} answers complete",
                  file=sys.stderr)
            break
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, *reacting, return_exceptions=True)
    return deliveries, progress


async def run_startup(db_kind: str, repeat: int, args: argparse.Namespace) -> Run:
    """Start → first /healthz 200 and idle RSS: on a fresh database, then again on the migrated one."""
    run = Run("startup", db_kind, repeat)
    workdir = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    fakes = await Fakes.start({"tokens": 10, "ttft": 0.0, "tokens_per_second": 100.0}, workdir / "fakes.log")
    db = Database(db_kind, workdir, args.postgres)
    try:
        async with aiohttp.ClientSession() as session:
            for phase in ("cold", "warm"):
                bot = Bot(args.flywheel, bot_env(fakes, db, workdir, args.prompts), workdir, workdir / "bot.log")
                try:
                    run.figures[f"startup_{phase}_s"] = await bot.start(session)
                    await asyncio.sleep(0.5)
                    run.figures[f"idle_rss_{phase}_mb"] = proc_status(bot.pid)["VmRSS"] / 1024
                finally:
                    run.figures[f"exit_code_{phase}"] = await bot.stop()
    finally:
        await fakes.stop()
        with contextlib.suppress(Exception):
            db.drop()
        run.figures["bot_stderr"] = stderr_summary(workdir / "bot.log")
        shutil.rmtree(workdir, ignore_errors=True)
    return run


# -- reporting ---------------------------------------------------------------------------------


ROWS: list[tuple[str, str, str]] = [  # (label, figure, format)
    ("mentions sent (C at a time)", "load", "s"),
    ("reactions sent / votes recorded / twins", "extra", "s"),
    ("ack p50 (mentions)", "ack_p50", "ms"),
    ("ack p99 (mentions)", "ack_p99", "ms"),
    ("ack max (mentions)", "ack_max", "ms"),
    ("ack p50 / p99 from send (mentions)", "acks_from_send", "s"),
    ("ack p50 / p99 (👍 reactions)", "reaction_acks", "s"),
    ("acks over 3 s (Slack retries)", "acks_over_3s", "count"),
    ("delivery errors (non-200)", "delivery_errors", "count"),
    ("first visible text p50", "first_text_p50", "sec"),
    ("first visible text p99", "first_text_p99", "sec"),
    ("end-to-end p50", "e2e_p50", "sec"),
    ("end-to-end p99", "e2e_p99", "sec"),
    ("end-to-end max | Slack floor", "e2e_vs_floor", "s"),
    ("peak answers in flight", "peak_in_flight", "count"),
    ("answers complete (Slack + calls row)", "complete", "count"),
    ("streamed / posted whole", "how", "s"),
    ("Slack 429s", "slack_429", "count"),
    ("peak RSS", "peak_rss_mb", "MB"),
    ("CPU per answer", "cpu_ms_per_answer", "msf"),
    ("CPU s: bot / fakes / load generator", "cpu_split", "s"),
    ("model TTFT / latency p50, as logged", "model_times", "s"),
    ("start → /healthz 200", "startup_s", "sec"),
    ("idle RSS", "idle_rss_mb", "MB"),
    ("bot stderr lines (tracebacks), exit", "stderr", "s"),
    ("start → /healthz 200, cold (migrates)", "startup_cold_s", "sec"),
    ("start → /healthz 200, warm", "startup_warm_s", "sec"),
    ("idle RSS, cold", "idle_rss_cold_mb", "MB"),
    ("idle RSS, warm", "idle_rss_warm_mb", "MB"),
]


def _median(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value * 1000:,.0f} ms"
    if unit == "sec":
        return f"{value:.2f} s"
    if unit == "MB":
        return f"{value:.0f} MB"
    if unit == "msf":
        return f"{value:.1f} ms"
    return str(value)


def _counts(values: list[Any]) -> str:
    """One value when every run agrees, else each run's, comma-separated."""
    return str(values[0]) if len(set(map(str, values))) == 1 else ", ".join(map(str, values))


def cell(runs: list[Run], key: str, unit: str) -> str:
    figs = [r.figures for r in runs]
    if key in DERIVED:  # figures of the load scenarios
        return DERIVED[key](figs) if figs and "mentions" in figs[0] else ""
    if not figs or key not in figs[0]:
        return ""
    if unit == "count":
        return _counts([f.get(key) for f in figs])
    return _fmt(_median([f.get(key) for f in figs]), unit)


DERIVED = {
    "load": lambda fs: f"{fs[0]['mentions']} ({fs[0]['concurrency']}), {fs[0]['channels']} ch, "
                       f"model {fs[0]['model_seconds']:g} s",
    "extra": lambda fs: " / ".join(_counts([f[k] for f in fs]) for k in ("reactions_sent", "votes", "twins_sent")),
    "acks_from_send": lambda fs: (f"{_fmt(_median([f['ack_from_send_p50'] for f in fs]), 'ms')} / "
                                  f"{_fmt(_median([f['ack_from_send_p99'] for f in fs]), 'ms')}")
                                 if all("ack_from_send_p50" in f for f in fs) else "-",
    "reaction_acks": lambda fs: (f"{_fmt(_median([f['reaction_ack_p50'] for f in fs]), 'ms')} / "
                                 f"{_fmt(_median([f['reaction_ack_p99'] for f in fs]), 'ms')}")
                                if any(f["reactions_sent"] for f in fs) else "-",
    "e2e_vs_floor": lambda fs: f"{_fmt(_median([f['e2e_max'] for f in fs]), 'sec')} | {fs[0]['e2e_floor']:g} s",
    "complete": lambda fs: f"{_counts([f['complete'] for f in fs])} of {fs[0]['mentions']}",
    "how": lambda fs: " / ".join([_counts([f["streamed"] for f in fs]),
                                  _counts([f["mentions"] - f["streamed"] for f in fs])]),
    "cpu_split": lambda fs: " / ".join(f"{_median([f[k] for f in fs]):.1f}" for k in (
        "cpu_seconds", "fakes_cpu_seconds", "loadgen_cpu_seconds")) + f" in {_median([f['wall_seconds'] for f in fs]):.1f} s",
    "model_times": lambda fs: f"{_fmt(_median([f['model_ttft_p50'] for f in fs]), 'sec')} / "
                              f"{_fmt(_median([f['model_latency_p50'] for f in fs]), 'sec')}",
    "stderr": lambda fs: f"{_counts([f['bot_stderr']['lines'] for f in fs])} "
                         f"({_counts([f['bot_stderr']['tracebacks'] for f in fs])}), "
                         f"exit {_counts([f['exit_code'] for f in fs])}",
}


def table(runs: list[Run]) -> str:
    groups: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.scenario, r.db), []).append(r)
    columns = list(groups)
    header = ["", *[f"{s} | {d}" for s, d in columns]]
    body = []
    for label, key, unit in ROWS:
        cells = [cell(groups[c], key, unit) for c in columns]
        if any(cells):
            body.append([label, *cells])
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in body]
    return "\n".join(lines)


def print_tables(runs: list[Run]) -> None:
    """The load scenarios' table, then the startup table."""
    for kind in ([r for r in runs if r.scenario != "startup"], [r for r in runs if r.scenario == "startup"]):
        if kind:
            print(table(kind) + "\n")


# -- command line ------------------------------------------------------------------------------


def loads(args: argparse.Namespace) -> list[Load]:
    chosen = []

    def make(name: str, mentions: int, concurrency: int, channels: int, model: float, reactions: float) -> Load:
        model = args.model_seconds or model
        return Load(name=name, mentions=args.mentions or mentions, concurrency=args.concurrency or concurrency,
                    channels=args.channels or channels, model_seconds=model,
                    ttft=args.ttft if args.ttft is not None else model / 2, tokens=args.tokens,
                    reactions=args.reactions if args.reactions is not None else reactions,
                    reaction_delay=args.reaction_delay, twins=args.twins)

    if "ack" in args.scenario:
        if args.mentions or args.concurrency:
            chosen.append(make("ack", 200, 50, 20, 1.0, 0.1))
        else:
            chosen += [make("ack", 200, 50, 20, 1.0, 0.1), make("ack", 400, 100, 20, 1.0, 0.1)]
    if "inflight" in args.scenario:
        chosen.append(make("inflight", 1000, 100, 100, 5.0, 0.0))
    return chosen


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", nargs="+", choices=("ack", "inflight", "startup"),
                   default=["ack", "inflight", "startup"])
    p.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    p.add_argument("--repeat", type=int, default=3, help="runs per scenario; the table shows medians (default 3)")
    p.add_argument("--flywheel", type=Path, default=Path(sys.executable).with_name("flywheel"),
                   help="the flywheel executable to run (default: the one next to this Python)")
    p.add_argument("--prompts", type=Path, default=REPO / "prompts", help="PROMPTS_DIR for the bot")
    p.add_argument("--postgres", default=POSTGRES, help="server URL used to create and drop the database")
    p.add_argument("--mentions", type=int, help="mentions per run (replaces the scenario's)")
    p.add_argument("--concurrency", type=int, help="deliveries in flight at a time (replaces the scenario's)")
    p.add_argument("--channels", type=int, help="channels the mentions are spread over")
    p.add_argument("--model-seconds", type=float, help="model time per answer: first token + tokens")
    p.add_argument("--ttft", type=float, help="model time to first token (default: half the model time)")
    p.add_argument("--tokens", type=int, default=50, help="word-sized deltas per answer (default 50)")
    p.add_argument("--reactions", type=float, help="share of answers that get a 👍 (ack 0.1, inflight 0)")
    p.add_argument("--reaction-delay", type=float, default=1.0,
                   help="seconds between an answer completing and its 👍 (default 1: a person reads first)")
    p.add_argument("--twins", action="store_true", help="also send the message event Slack sends with each mention")
    p.add_argument("--timeout", type=float, default=240.0, help="seconds a run may take to get every answer")
    p.add_argument("--warm", action="store_true",
                   help="answer one mention before the measured load (the first model call imports the SDK: "
                        "~0.4 s of CPU that a fresh bot's first burst shares with its acks)")
    p.add_argument("--json", type=Path, help="write every run's figures to this file")
    p.add_argument("--logs", type=Path, help="keep each run's bot and fakes stderr in this directory")
    p.add_argument("--table", type=Path, metavar="JSON", help="only print the tables of runs saved with --json")
    return p


async def main_async(args: argparse.Namespace) -> list[Run]:
    dbs = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    runs: list[Run] = []
    for load in loads(args):
        for db in dbs:
            for repeat in range(1, args.repeat + 1):
                started = time.monotonic()
                run = await run_load(load, db, repeat, args)
                f = run.figures
                print(f"{load.label()} {db} #{repeat}: ack p99 {_fmt(f['ack_p99'], 'ms')}, "
                      f"e2e p99 {_fmt(f['e2e_p99'], 'sec')}, complete {f['complete']}/{f['mentions']}, "
                      f"429s {f['slack_429']}, peak RSS {_fmt(f['peak_rss_mb'], 'MB')}, "
                      f"CPU/answer {_fmt(f['cpu_ms_per_answer'], 'msf')} "
                      f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
                runs.append(run)
    if "startup" in args.scenario:
        for db in dbs:
            for repeat in range(1, args.repeat + 1):
                run = await run_startup(db, repeat, args)
                print(f"startup {db} #{repeat}: {run.figures}", file=sys.stderr)
                runs.append(run)
    return runs


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_fakes"]:
        asyncio.run(serve_fakes(json.loads(argv[1])))
        return 0
    args = parser().parse_args(argv)
    if args.table:
        print_tables([Run(**r) for r in json.loads(args.table.read_text())])
        return 0
    if not args.flywheel.exists():
        print(f"load.py: no flywheel executable at {args.flywheel} (use --flywheel)", file=sys.stderr)
        return 2
    version = subprocess.run([str(args.flywheel.with_name("python")), "--version"], capture_output=True,
                             text=True).stdout.strip()
    print(f"flywheel: {args.flywheel} ({version}); {os.cpu_count()} CPUs; median of {args.repeat} run(s)",
          file=sys.stderr)
    runs = asyncio.run(main_async(args))
    print_tables(runs)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
