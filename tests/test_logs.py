"""Logs: secrets never appear, at any level or format; JSON logs are one object per line."""

import json
import logging

import pytest

from bot import logs


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
