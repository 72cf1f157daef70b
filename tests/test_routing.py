"""The manifest and the routing table agree: whatever Slack is told to send has a listener,
and no listener waits for something Slack is never told to send.

Bolt answers a command or a click nobody listens to with 404 ("unhandled request") and Slack
then retries it; an event is acknowledged before Bolt sees it, so one nobody listens to is
dropped with a warning; a listener for an event the manifest does not subscribe to never runs.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import handlers
from bot.feedback import AnswerRef, answer_controls, fix_modal
from bot.manifest import manifest
from bot.prompts import PromptSet

from conftest import PROMPTS, Harness, serve_bot
from fakes import FakeOpenAI, FakeSlack
from fakes.slack_sender import click, mention, message, reaction, submission

# The channel type of each message.* subscription, as Slack sends it in the event.
CHANNEL_TYPES = {"message.channels": "channel", "message.groups": "group", "message.im": "im",
                 "message.mpim": "mpim"}
EVERY_CONTROL = {"buttons": True, "fix": True, "regenerate": True}


def shipped_manifest(*, socket: bool = False, assistant: bool = False) -> dict[str, Any]:
    return manifest(PromptSet.load(PROMPTS), socket=socket, url="https://bot.example.com", assistant=assistant)


def _action_ids(value: Any) -> Iterator[str]:
    """Every action_id in blocks (nested elements included)."""
    if isinstance(value, dict):
        if "action_id" in value:
            yield value["action_id"]
        for inner in value.values():
            yield from _action_ids(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _action_ids(inner)


def event_of(subscription: str) -> dict[str, Any]:
    """An event of the kind a manifest subscription makes Slack send."""
    if subscription == "app_mention":
        return mention("hello")
    if subscription in CHANNEL_TYPES:
        channel = {"im": "D1", "group": "G1", "mpim": "G2"}.get(CHANNEL_TYPES[subscription], "C1")
        return message("hello", channel=channel, channel_type=CHANNEL_TYPES[subscription])
    if subscription in ("reaction_added", "reaction_removed"):
        return reaction(subscription, "+1", user="U2", channel="C1", ts="1700000000.000100")
    if subscription == "app_home_opened":
        return {"type": "app_home_opened", "user": "U1", "channel": "D1", "tab": "home",
                "event_ts": "1700000000.000200"}
    raise AssertionError(f"the manifest subscribes to {subscription!r}: teach this test what Slack sends for it")


@pytest.fixture
async def bot(tmp_path: Path) -> Any:
    """The bot behind its HTTP endpoint (routing does not depend on the database: SQLite only)."""
    async with FakeSlack() as slack, FakeOpenAI() as model, \
            serve_bot(slack, model, f"sqlite:///{tmp_path / 'flywheel.db'}") as harness:
        yield harness


NO_LISTENER = "no listener for a Slack event"


async def test_every_subscription_command_and_control_reaches_a_listener(bot: Harness, caplog):
    doc = shipped_manifest()
    subscriptions = doc["settings"]["event_subscriptions"]["bot_events"]
    assert subscriptions, "the manifest subscribes to no events"
    for subscription in subscriptions:
        status, body = await bot.sender.event(event_of(subscription))
        assert status == 200, (subscription, status, body)
    await bot.settle()
    assert not [r.getMessage() for r in caplog.records if NO_LISTENER in r.getMessage()]
    commands = [c["command"] for c in doc["features"]["slash_commands"]]
    assert commands, "the shipped prompts declare no slash command"
    for command in commands:
        status, body = await bot.sender.command(command, "hello")
        assert status == 200, (command, status, body)
    assert doc["settings"]["interactivity"]["is_enabled"]
    for shortcut in doc["features"]["shortcuts"]:
        payload = {"type": "message_action", "callback_id": shortcut["callback_id"], "trigger_id": "trig-s",
                   "user": {"id": "U2"}, "team": {"id": "T1"}, "channel": {"id": "C1"},
                   "message": {"type": "message", "user": "U1", "text": "hi", "ts": "1700000000.000300"},
                   "message_ts": "1700000000.000300", "response_url": "https://hooks.slack.com/actions/x"}
        status, body = await bot.sender.action(payload)
        assert status == 200, (shortcut, status, body)
    # The controls the bot itself posts under an answer, and the modal it opens.
    answer = {"type": "message", "user": "UBOT", "text": "an answer", "ts": "1700000000.000400",
              "blocks": answer_controls(EVERY_CONTROL)}
    for action_id in _action_ids(answer_controls(EVERY_CONTROL)):
        status, body = await bot.sender.action(click(answer, "C1", action_id, "up"))
        assert status == 200, (action_id, status, body)
    view = fix_modal(AnswerRef(channel="C1", ts="1700000000.000400"), "an answer")
    status, body = await bot.sender.action(submission(view, ["a better answer"]))
    assert status == 200, (view["callback_id"], status, body)
    await bot.settle()


async def test_what_nobody_listens_to_is_refused(bot: Harness, caplog):
    """The checks above can fail: Bolt answers 404 when no listener matches, and an event
    (acknowledged first) is dropped with a warning."""
    assert (await bot.sender.event({"type": "channel_created", "channel": {"id": "C9", "name": "new"},
                                    "event_ts": "1700000000.000500"}))[0] == 200
    await bot.settle()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [f"{NO_LISTENER} of type channel_created; it was acknowledged and is dropped"]  # once
    answer = {"type": "message", "user": "UBOT", "text": "an answer", "ts": "1700000000.000600"}
    assert (await bot.sender.action(click(answer, "C1", "not_a_flywheel_action", "x")))[0] == 404
    assert any(r.getMessage().startswith("Unhandled request") for r in caplog.records)  # Bolt's, for a click
    view = {**fix_modal(AnswerRef(channel="C1", ts="1700000000.000600"), "x"), "callback_id": "not_ours"}
    assert (await bot.sender.action(submission(view, ["x"])))[0] == 404
    await bot.settle()


class RoutingTable:
    """Stands in for the Bolt app while `handlers.register` runs, and keeps what it registers."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, Any]] = []

    def __getattr__(self, kind: str) -> Callable[..., Callable[[Callable], Callable]]:
        def matcher(constraint: Any, **_: Any) -> Callable[[Callable], Callable]:
            self.routes.append((kind, constraint))
            return lambda listener: listener

        return matcher

    def of(self, kind: str) -> list[Any]:
        return [constraint for k, constraint in self.routes if k == kind]


@pytest.mark.parametrize("socket", [False, True])
def test_every_listener_has_its_subscription_in_the_manifest(socket: bool):
    table = RoutingTable()
    handlers.register(table)  # type: ignore[arg-type]
    doc = shipped_manifest(socket=socket, assistant=True)  # the fullest manifest: the pane's events too
    assert {kind for kind, _ in table.routes} <= {"event", "command", "action", "shortcut", "view"}, \
        f"a kind of listener this test does not check against the manifest: {table.routes}"
    # Events: Slack's message.channels, .groups, .im and .mpim all arrive as "message".
    subscribed = {name.split(".")[0] for name in doc["settings"]["event_subscriptions"]["bot_events"]}
    assert set(table.of("event")) == subscribed
    # Commands: each command listener serves a command of the manifest, and each command has one.
    commands = [c["command"] for c in doc["features"]["slash_commands"]]
    patterns = [p if isinstance(p, re.Pattern) else re.compile(re.escape(p) + "$") for p in table.of("command")]
    assert all(any(p.match(c) for c in commands) for p in patterns), (patterns, commands)
    assert all(any(p.match(c) for p in patterns) for c in commands), (patterns, commands)
    # Interactivity: the shortcut is declared; the buttons and the modal are the bot's own.
    assert set(table.of("shortcut")) == {s["callback_id"] for s in doc["features"]["shortcuts"]}
    assert doc["settings"]["interactivity"]["is_enabled"]
    assert set(table.of("action")) == set(_action_ids(answer_controls(EVERY_CONTROL)))
    assert set(table.of("view")) == {fix_modal(AnswerRef(call_id=1), "")["callback_id"]}


# -- Slack's own manifest schema --------------------------------------------------------------------

# tests/data/slack_manifest.schema.1.0.0.json is schemas/manifest.schema.1.0.0.json of
# slackapi/manifest-schema (MIT, commit c50cfa8, 2026-07-21): what api.slack.com checks a pasted
# manifest against. A manifest that fails it is refused when the app is created.
SLACK_SCHEMA = json.loads((Path(__file__).parent / "data" / "slack_manifest.schema.1.0.0.json").read_text())


@pytest.mark.parametrize(("socket", "assistant"), [(True, False), (False, False), (True, True), (False, True)])
def test_every_manifest_validates_against_slacks_schema(socket: bool, assistant: bool):
    prompts = PromptSet.load(PROMPTS)
    shown = manifest(prompts, socket=socket, url=None if socket else "https://bot.example.com", assistant=assistant)
    jsonschema.validate(shown, SLACK_SCHEMA)  # raises with the path of the first violation
    with pytest.raises(jsonschema.ValidationError):  # the check can fail: a scope Slack does not know
        jsonschema.validate({**shown, "oauth_config": {"scopes": {"bot": ["chat:write", 42]}}}, SLACK_SCHEMA)
