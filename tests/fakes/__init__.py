"""Loopback fakes for Slack and OpenAI, plus a signed-request sender for the bot's endpoint."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from .openai_api import FakeOpenAI
from .slack_api import FakeSlack
from .slack_sender import SlackSender

__all__ = ["FakeOpenAI", "FakeSlack", "SlackSender", "wait_until"]


async def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
    """Poll the sync ``predicate`` until it returns something truthy, and return that.

    Raises AssertionError naming the predicate and its last value after ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(
                f"wait_until: {_describe(predicate)} still falsy after {timeout}s (last value: {value!r})"
            )
        await asyncio.sleep(interval)


def _describe(predicate: Callable[[], Any]) -> str:
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return getattr(predicate, "__qualname__", repr(predicate))
