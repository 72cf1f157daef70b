"""Logs: secrets never appear, at any level or format; JSON logs are one object per line."""

import asyncio
import json
import logging
import signal
import sqlite3
from pathlib import Path

import pytest

from bot import logs

from conftest import PROMPTS, SIGNING_SECRET, clean_env, flywheel_process, free_port, wait_healthy
from fakes import FakeOpenAI, FakeSlack, SlackSender, wait_until
from fakes.slack_sender import mention


@pytest.fixture(autouse=True)
def _restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_logs_are_one_object_per_line_and_scrub_secrets(capsys: pytest.CaptureFixture[str]):
    logs.configure("DEBUG", ("my-signing-secret-123",), "json")
    log = logging.getLogger("flywheel.test")
    log.debug("token xoxb-1234567890-abcdef and secret my-signing-secret-123 and key sk-proj-abcdefgh12345")
    try:
        raise ValueError("boom with xapp-1-A123-456789")
    except ValueError:
        log.exception("failed")
    lines = capsys.readouterr().err.strip().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["level"] for e in entries] == ["DEBUG", "ERROR"]
    assert entries[0]["logger"] == "flywheel.test" and entries[0]["time"].endswith("Z")
    text = "\n".join(lines)
    for secret in ("xoxb-1234567890", "my-signing-secret-123", "sk-proj-abcdefgh", "xapp-1-A123"):
        assert secret not in text
    assert "[redacted]" in entries[0]["message"] and "ValueError" in entries[1]["exception"]


def test_text_logs_scrub_secrets_passed_as_arguments(capsys: pytest.CaptureFixture[str]):
    logs.configure("INFO", ("hunter2hunter2",))
    logging.getLogger("x").warning("connecting with %s to %s", "hunter2hunter2", "db")
    err = capsys.readouterr().err
    assert "hunter2hunter2" not in err and "connecting with [redacted] to db" in err


def test_http_client_chatter_is_quiet_unless_debug(capsys: pytest.CaptureFixture[str]):
    logs.configure("INFO")
    logging.getLogger("httpx2").info("HTTP Request: POST ...")
    assert capsys.readouterr().err == ""


# -- the real process ------------------------------------------------------------------------------


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_a_provider_error_quoting_the_whole_key_never_reaches_the_log_the_row_or_slack(
        tmp_path: Path, log_format: str):
    """`flywheel run` at DEBUG, and a model server whose 401 quotes the whole API key back (as
    some proxies do): the key, the bot token and the signing secret appear nowhere a person or
    a log collector can see them."""
    async with FakeSlack() as slack, FakeOpenAI() as model:
        model.reply(status=401, error="invalid_api_key",
                    message=f"Incorrect API key provided: {model.api_key}. Check {slack.bot_token} too.")
        port = free_port()
        env = clean_env(SLACK_BOT_TOKEN=slack.bot_token, SLACK_SIGNING_SECRET=SIGNING_SECRET,
                        SLACK_API_URL=slack.url, OPENAI_API_KEY=model.api_key, OPENAI_BASE_URL=model.url,
                        PROMPTS_DIR=str(PROMPTS), LOG_LEVEL="DEBUG", LOG_FORMAT=log_format)
        log_file = tmp_path / "stderr.log"
        async with flywheel_process("run", "--port", str(port), cwd=tmp_path, env=env, log_file=log_file) as proc:
            base = f"http://127.0.0.1:{port}"
            await wait_healthy(base, proc)
            async with SlackSender(f"{base}/slack/events", SIGNING_SECRET) as sender:
                event = mention("<@UBOT> hello")
                slack.add_message("C1", event["text"], ts=event["ts"])
                status, _ = await sender.event(event)
                assert status == 200
            await wait_until(lambda: [m for m in slack.thread("C1", event["ts"]) if m.get("user") == slack.bot_user_id],
                             timeout=15)
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.communicate(), 30)
        log = log_file.read_text()
        [(stored_error,)] = sqlite3.connect(tmp_path / "flywheel.db").execute(
            "select error_message from calls").fetchall()
        shown = " ".join(slack.text_of(m) for m in slack.thread("C1", event["ts"]))
        assert model.requests, "the model was asked (and refused)"
        assert "401" in log, "the refusal itself is logged"
        for secret in (model.api_key, slack.bot_token, SIGNING_SECRET):
            for where, text in (("log", log), ("stored error", stored_error or ""), ("Slack", shown)):
                assert secret not in text and secret[:12] not in text, f"a secret reached the {where}"
