"""Browser tests of the Playground: the real `flywheel dev` in a subprocess, real headless Chromium.

Fixtures:

- ``driver`` (session): Selenium driving Debian's chromium through its chromedriver (or
  ``$FLYWHEEL_TEST_CHROMIUM`` / ``$FLYWHEEL_TEST_CHROMEDRIVER``), with a fresh profile. Skipped
  when either is missing, unless ``FLYWHEEL_TEST_REQUIRE_BROWSER=1`` (CI): then it fails.
- ``playground`` (module): ``flywheel dev --port N`` with no model settings (the echo model),
  in a temporary folder, its own SQLite database and a copy of ``prompts/`` a test may edit.
- ``fake_openai`` (module): the loopback FakeOpenAI on its own asyncio loop in a thread
  (Selenium is synchronous; nothing here blocks a loop a server needs).
- ``model_playground`` (module): ``flywheel dev`` with ``OPENAI_BASE_URL`` at that fake.

Screenshots go to ``test-artifacts/screenshots/`` in the repository (ignored by git).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conftest import PROMPTS
from fakes import FakeOpenAI

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "test-artifacts" / "screenshots"
REQUIRE_BROWSER = os.environ.get("FLYWHEEL_TEST_REQUIRE_BROWSER") == "1"
FLYWHEEL = Path(sys.executable).with_name("flywheel")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
CHROME_ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,900", "--no-proxy-server",
)
TRACK_SOCKETS = """
(() => {
  const Native = window.WebSocket;
  window.__fwSockets = [];
  window.WebSocket = class extends Native {
    constructor(...args) { super(...args); window.__fwSockets.push(this); }
  };
})();
"""


def _unavailable(reason: str) -> None:
    if REQUIRE_BROWSER:
        pytest.fail(f"{reason} (FLYWHEEL_TEST_REQUIRE_BROWSER=1: the browser tests must run)", pytrace=False)
    pytest.skip(f"{reason}; install Debian's chromium and chromium-driver to run the browser tests")


def _find(name: str, default: str, setting: str) -> str | None:
    """The executable: $SETTING if set (and nothing else then), else Debian's path, else on PATH."""
    chosen = os.environ.get(setting)
    for path in [chosen] if chosen else [default, shutil.which(name)]:
        if path and Path(path).is_file() and os.access(path, os.X_OK):
            return path
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Remember each phase's report on the item, so a fixture can screenshot a failure."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


# -- the browser ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[dev]')")
    chromium = _find("chromium", "/usr/bin/chromium", "FLYWHEEL_TEST_CHROMIUM")
    chromedriver = _find("chromedriver", "/usr/bin/chromedriver", "FLYWHEEL_TEST_CHROMEDRIVER")
    if not chromium or not chromedriver:
        missing = " and ".join(n for n, p in (("chromium", chromium), ("chromedriver", chromedriver)) if not p)
        _unavailable(f"{missing} not found")

    home = tmp_path_factory.mktemp("chromium")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={home / 'profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=chromedriver, log_output=str(home / "chromedriver.log"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SE_OFFLINE", "true")  # Selenium Manager must never reach for the network
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
            mp.delenv(name, raising=False)  # chromedriver is on loopback
        try:
            browser = webdriver.Chrome(service=service, options=options)
        except Exception as exc:  # noqa: BLE001 - a browser that does not start is "unavailable"
            _unavailable(f"chromium did not start through chromedriver: {type(exc).__name__}: {exc}".strip())
    browser.set_page_load_timeout(15)
    browser.set_script_timeout(10)
    # Let a test see when the page's live socket is open (window.__fwSockets), before it acts.
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": TRACK_SOCKETS})
    try:
        yield browser
    finally:
        with contextlib.suppress(Exception):
            browser.quit()


@pytest.fixture
def shot(request: pytest.FixtureRequest, driver: Any) -> Iterator[Callable[[str], Path]]:
    """``shot("answered")`` saves ``test-artifacts/screenshots/<test>-<step>.png``; a failure gets one too."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    name = request.node.name.replace("/", "_")

    def save(step: str) -> Path:
        path = SHOTS / f"{name}-{step}.png"
        driver.save_screenshot(str(path))
        return path

    yield save
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        with contextlib.suppress(Exception):
            save("failure")


# -- `flywheel dev` in a subprocess ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Playground:
    """A running ``flywheel dev``: its URL, its files, and the CLI pointed at the same database."""

    def __init__(self, home: Path, extra_env: dict[str, str]):
        self.home = home
        self.db = home / "flywheel.db"
        self.prompts = home / "prompts"
        shutil.copytree(PROMPTS, self.prompts)
        self.log = home / "flywheel-dev.log"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "DATABASE_URL": f"sqlite:///{self.db}",
            "PROMPTS_DIR": str(self.prompts),
            **extra_env,
        }
        self.proc: subprocess.Popen | None = None
        self.url = ""

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for _ in range(3):  # another process may grab the free port between the check and the bind
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(
                    [str(FLYWHEEL), "dev", "--port", str(port)], cwd=self.home, env=self.env,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            if self._wait_healthy():
                return
            if self.proc.poll() is None:
                break
            if "cannot listen" not in self.log_text():
                break
        self.stop()
        raise RuntimeError(f"`flywheel dev` did not become healthy at {self.url}:\n{self.log_text()[-3000:]}")

    def _wait_healthy(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a timeout; the whole process group, so nothing is left running."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # -- the page's API and the CLI ------------------------------------------------------------

    def api(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET (no body) or POST a ``/playground/api/*`` call, as the page would."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}/playground/api/{path}", data=data,
                                     headers={"Content-Type": "application/json"} if data else {})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.load(resp)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """``flywheel ARGS`` with the playground's settings (same database), checked."""
        done = subprocess.run([str(FLYWHEEL), *args], cwd=self.home, env=self.env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, f"flywheel {' '.join(args)} exited {done.returncode}:\n{done.stderr}"
        return done

    def stats_and_export(self, fmt: str = "openai-chat", *source: str
                         ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``flywheel stats --json`` and ``flywheel export --format FMT``, run side by side
        (``source``: e.g. "--source", "playground"; without it, Slack traffic only)."""
        with ThreadPoolExecutor(2) as pool:
            stats = pool.submit(self.cli, "stats", "--json", *source)
            export = pool.submit(self.cli, "export", "--format", fmt, *source)
            return json.loads(stats.result().stdout), _jsonl(export.result().stdout)

    def export(self, fmt: str = "openai-chat") -> list[dict[str, Any]]:
        """The playground's calls (practice: an export has to ask for them)."""
        return _jsonl(self.cli("export", "--format", fmt, "--source", "playground").stdout)

    def sql(self, query: str, *params: Any) -> list[tuple]:
        """Read the bot's SQLite database (to wait for what the bot has stored)."""
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute(query, params).fetchall()


def _jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@contextlib.contextmanager
def running_playground(home: Path, extra_env: dict[str, str] | None = None) -> Iterator[Playground]:
    pg = Playground(home, extra_env or {})
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()
        assert pg.proc is None or pg.proc.returncode is not None


@pytest.fixture(scope="module")
def playground(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Playground]:
    """``flywheel dev`` on a fresh machine: no model settings at all, so the echo model answers."""
    with running_playground(tmp_path_factory.mktemp("playground")) as pg:
        yield pg


class ThreadedFakeOpenAI:
    """FakeOpenAI served from its own event loop in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-openai", daemon=True)
        self.fake: FakeOpenAI | None = None

    def start(self) -> None:
        self.thread.start()

        async def make() -> FakeOpenAI:
            fake = FakeOpenAI()
            await fake.start()
            return fake

        self.fake = asyncio.run_coroutine_threadsafe(make(), self.loop).result(10)

    def stop(self) -> None:
        if self.fake is not None:
            asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` on the fake's loop and return its result."""
        async def run() -> Any:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    @property
    def url(self) -> str:
        return self.fake.url

    @property
    def api_key(self) -> str:
        return self.fake.api_key

    def reply(self, text: str, **kw: Any) -> None:
        self.call(functools.partial(self.fake.reply, text, **kw))

    def requests(self) -> list[dict[str, Any]]:
        return self.call(lambda: list(self.fake.requests))


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[ThreadedFakeOpenAI]:
    fake = ThreadedFakeOpenAI()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def model_playground(tmp_path_factory: pytest.TempPathFactory, fake_openai: ThreadedFakeOpenAI
                     ) -> Iterator[Playground]:
    """``flywheel dev`` with a configured OpenAI-compatible server (the fake) instead of echo."""
    env = {"OPENAI_BASE_URL": fake_openai.url, "OPENAI_API_KEY": fake_openai.api_key,
           "FLYWHEEL_MODEL": "gpt-4o-mini", "FLYWHEEL_MODEL_TIMEOUT": "10"}
    with running_playground(tmp_path_factory.mktemp("model-playground"), env) as pg:
        yield pg
