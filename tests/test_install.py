"""`pip install .` as a new user does it: a wheel built from this checkout, installed into a fresh
virtualenv outside it, and `flywheel` run from an empty folder. The shipped prompts come along."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import aiohttp
import pytest

from bot.settings import Settings, shipped_prompts_dir

from conftest import FLYWHEEL, PROMPTS, REPO, SHIPPED, SIGNING_SECRET, clean_env, free_port, wait_healthy
from fakes import FakeOpenAI, FakeSlack, SlackSender, wait_until
from fakes.slack_sender import mention

SOURCES = ("bot", "handlers", "pyproject.toml", "README.md", "prompts/README.md")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel --no-deps .` on a copy of the sources (building in the checkout would leave build/
    there), with the shipped prompts only (not what someone added to prompts/)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (src / name).parent.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    shutil.copytree(PROMPTS, src / "prompts", dirs_exist_ok=True)
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    [built] = out.glob("flywheel-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding only the wheel; its dependencies are borrowed from this one
    (a .pth line, so nothing is downloaded and Flywheel itself is not: only the wheel's copy)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                           "--no-deps", "--no-index", "-q", str(wheel)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    [site] = (venv / "lib").glob("python3.*/site-packages")
    (site / "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin" / "flywheel"


def test_the_wheel_holds_every_module_and_the_shipped_prompts(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(REPO)) for folder in ("bot", "handlers") for p in (REPO / folder).rglob("*.py")
               if "__pycache__" not in p.parts}
    assert modules - names == set(), "a module missing from the wheel: list its package in pyproject.toml"
    assert {f"bot/shipped_prompts/{name}.prompty" for name in SHIPPED} <= names
    assert not any(n.startswith("prompts/") for n in names), "one copy, inside the package"


async def test_installed_flywheel_outside_the_checkout_answers_with_the_shipped_prompts(
        installed: Path, tmp_path: Path):
    """The README's "any other host": `pip install .`, then `flywheel run` where there is no prompts/."""
    out = await asyncio.create_subprocess_exec(str(installed), "prompts", cwd=tmp_path, env=clean_env(),
                                               stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    listed, _ = await asyncio.wait_for(out.communicate(), 30)
    assert out.returncode == 0 and "/ask" in listed.decode() and "/summarize" in listed.decode()

    async with FakeSlack() as slack, FakeOpenAI() as model:
        model.reply("Hello from the installed bot.")
        port = free_port()
        env = clean_env(SLACK_BOT_TOKEN=slack.bot_token, SLACK_SIGNING_SECRET=SIGNING_SECRET,
                        SLACK_API_URL=slack.url, OPENAI_API_KEY=model.api_key, OPENAI_BASE_URL=model.url)
        proc = await asyncio.create_subprocess_exec(str(installed), "run", "--port", str(port), cwd=tmp_path,
                                                    env=env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        base = f"http://127.0.0.1:{port}"
        try:
            await wait_healthy(base, proc, timeout=30)
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/healthz") as resp:
                    health = await resp.json()
                async with SlackSender(f"{base}/slack/events", SIGNING_SECRET, session) as sender:
                    event = mention("<@UBOT> hello?")
                    slack.add_message("C1", event["text"], ts=event["ts"])
                    assert (await sender.event(event))[0] == 200
                    await wait_until(lambda: [m for m in slack.thread("C1", event["ts"])
                                              if m.get("user") == slack.bot_user_id and not m.get("streaming")],
                                     timeout=15)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
    shipped = installed.parent.parent / "lib"
    assert health["prompts_from"] == "shipped" and health["prompts"] == len(SHIPPED) - 1  # the judge is no skill
    assert Path(health["prompts_dir"]).is_relative_to(shipped) and health["prompts_dir"].endswith("shipped_prompts")
    assert "prompts from the prompts shipped with Flywheel" in err.decode()
    reply = [m for m in slack.thread("C1", event["ts"]) if m.get("user") == slack.bot_user_id]
    assert [slack.text_of(m) for m in reply] == ["Hello from the installed bot."]
    assert model.requests[0]["messages"][0]["content"].startswith("You are a helpful, concise teammate")  # ask


def test_prompts_come_from_prompts_dir_then_the_working_directory_then_the_shipped_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings.parse({})
    assert (settings.prompts_dir, settings.prompts_origin) == (shipped_prompts_dir(), "shipped")
    (tmp_path / "prompts").mkdir()
    settings = Settings.parse({})
    assert (settings.prompts_dir, settings.prompts_origin) == (Path("prompts"), "working directory")
    settings = Settings.parse({"PROMPTS_DIR": str(tmp_path / "mine")})
    assert settings.prompts_origin == "PROMPTS_DIR" and settings.problems_for() == []  # export needs none
    [problem] = settings.problems_for(prompts=True)
    assert problem.startswith("PROMPTS_DIR is ") and "not a folder" in problem


@pytest.mark.parametrize("command", ["run", "dev"])
async def test_a_prompts_dir_that_does_not_exist_stops_the_bot_with_one_line(tmp_path: Path, command: str):
    env = clean_env(PROMPTS_DIR=str(tmp_path / "promtps"), SLACK_BOT_TOKEN="xoxb-1", SLACK_SIGNING_SECRET="s",
                    OPENAI_API_KEY="k")
    proc = await asyncio.create_subprocess_exec(str(FLYWHEEL), command, "--port", str(free_port()), cwd=tmp_path,
                                                env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and out == b""
    assert err.decode() == (f"flywheel: PROMPTS_DIR is {str(tmp_path / 'promtps')!r}, which is not a folder: set it "
                            "to the folder that holds your .prompty files, or unset it to use ./prompts (or, where "
                            "there is none, the prompts shipped with Flywheel)\n")
