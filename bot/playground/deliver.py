"""Delivering to the bot: signed requests to its real ``POST /slack/events``, as Slack sends them.

Events go in ``event_callback`` envelopes (JSON); slash commands as form bodies; interactivity
(``block_actions``, ``message_action``, ``view_submission``, ``view_closed``) as a form body
with one ``payload`` field holding the JSON, signed as Slack signs them (:mod:`bot.signing`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import uuid
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlencode

import aiohttp

from bot.playground.host import Host
from bot.playground.state import APP_ID
from bot.signing import signed_headers

log = logging.getLogger(__name__)

ACK_SECONDS = 3.0  # Slack gives up on a request the app has not answered in 3 s
TIMEOUT = 10.0  # the playground waits longer, and says so
VERIFICATION_TOKEN = "playground-verification-token"
_event_ids = itertools.count(1)


class Delivery:
    """Posts to the bot; failures become ``error`` frames on the page."""

    def __init__(self, standin: Host):
        self.s = standin
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()
        self._closed = False

    @property
    def url(self) -> str:
        return self.s.base_url.rstrip("/") + "/slack/events"

    # -- background work ---------------------------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task | None:
        """Run ``work`` in the background (the page's request returns at once); not once closed."""
        if self._closed:
            work.close()
            return None
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("playground delivery failed", exc_info=task.exception())
            self.s.push({"type": "error", "message": f"The playground failed: {task.exception()!r}"})

    async def idle(self, timeout: float = 5.0) -> None:
        """Wait until no delivery is in flight (tests)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- posting ---------------------------------------------------------------------------

    async def post(self, body: str, content_type: str, what: str) -> tuple[int, str] | None:
        """Sign and post ``body``; returns (status, text), or None after pushing an error frame."""
        data = body.encode()
        headers = signed_headers(self.s.signing_secret, data, content_type)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT))
        started = time.monotonic()
        try:
            async with self._session.post(self.url, data=data, headers=headers) as response:
                status, text = response.status, await response.text()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._error(f"Could not deliver {what} to the bot at {self.url}: {type(exc).__name__} {exc}".strip())
            return None
        took = time.monotonic() - started
        if status >= 300:
            hint = " (the bot's signing secret is not the playground's)" if status == 401 else ""
            self._error(f"The bot answered {what} with HTTP {status}: {text[:300]}{hint}")
            return None
        if took > ACK_SECONDS:
            self._error(f"The bot took {took:.1f} s to acknowledge {what}; Slack gives up after "
                        f"{ACK_SECONDS:g} s (and retries events).")
        return status, text

    def _error(self, message: str) -> None:
        log.warning("%s", message)
        self.s.push({"type": "error", "message": message})

    # -- what Slack sends --------------------------------------------------------------------

    def envelope(self, event: dict[str, Any]) -> dict[str, Any]:
        team = self.s.team_id
        return {
            "token": VERIFICATION_TOKEN, "team_id": team, "context_team_id": team,
            "context_enterprise_id": None, "api_app_id": APP_ID, "event": event, "type": "event_callback",
            "event_id": f"Ev{next(_event_ids):06d}{uuid.uuid4().hex[:6].upper()}",
            "event_time": int(time.time()),
            "authorizations": [{"enterprise_id": None, "team_id": team, "user_id": self.s.bot_user_id,
                                "is_bot": True, "is_enterprise_install": False}],
            "is_ext_shared_channel": False,
            "event_context": f"4-{uuid.uuid4().hex}",
        }

    async def events(self, *events: dict[str, Any]) -> None:
        """Deliver events one after the other (e.g. an ``app_mention`` and its ``message`` twin)."""
        for event in events:
            await self.post(json.dumps(self.envelope(event)), "application/json", f"the {event['type']} event")

    async def command(self, form: dict[str, str]) -> tuple[int, str] | None:
        return await self.post(urlencode(form), "application/x-www-form-urlencoded", f"the {form['command']} command")

    async def interaction(self, payload: dict[str, Any]) -> tuple[int, str] | None:
        what = f"the {payload['type']} payload"
        return await self.post(urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded", what)
