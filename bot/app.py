"""Composition root: build the services once, put them on Bolt's context, register handlers.

Nothing between Slack's request and its acknowledgement waits on the database or the
network: deliveries are claimed once work starts (`Conversation`), votes and corrections
are kept in the local journal (`bot.journal`), and Bolt's view of who the bot is comes from
the token check at start-up, not from an auth.test on the first request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

import handlers
from bot.assistant import Assistant
from bot.conversation import Conversation
from bot.corrections import Corrections
from bot.feedback import Votes
from bot.journal import Journal
from bot.llm import LLM
from bot.pricing import PriceTable
from bot.prompts import PromptSet
from bot.ratelimits import RateBudget
from bot.settings import Settings
from bot.store import Store
from bot.underway import Orphan, Underway

log = logging.getLogger(__name__)


class Prompts:
    """The current prompt set; reloads when a file in the folder changes."""

    def __init__(self, directory):
        self.directory = directory
        self.current = self._load()

    def _load(self) -> PromptSet:
        prompts = PromptSet.load(self.directory)
        for problem in prompts.problems:
            log.error("prompt skipped: %s", problem)
        for warning in prompts.warnings:
            log.warning("prompt warning: %s", warning)
        log.info("prompts: %s", ", ".join(sorted(prompts.prompts)) or "none")
        return prompts

    def __call__(self) -> PromptSet:
        if self.current.changed():
            self.current = self._load()
        return self.current


@dataclass
class Flywheel:
    """The running bot: the Bolt app and the services it uses."""

    app: AsyncApp
    settings: Settings
    conversation: Conversation
    votes: Votes
    store: Store
    journal: Journal
    llm: LLM
    client: AsyncWebClient
    identity: Identity
    traffic: Traffic
    stopping: bool = False  # shutting down: take no new requests
    orphans: list[Orphan] = field(default_factory=list)  # answers a crashed process left under way
    _apologising: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        """Once the schema is migrated: write the journal's backlog (if any) to the database, and
        apologise for the answers a crashed process left under way (in the background)."""
        self.journal.start()
        if self.orphans:
            orphans, self.orphans = self.orphans, []
            self._apologising = asyncio.create_task(self._apologise(orphans))

    async def _apologise(self, orphans: list[Orphan]) -> None:
        due = await self.conversation.apologise_for(orphans, self.client)
        if due:
            log.warning("apologised for %d answer(s) a process that stopped without shutting down left "
                        "unfinished", due)
        if self.conversation.underway is not None:
            self.conversation.underway.forget_adopted()

    async def close(self, *, journal_flush: float = 2.0) -> None:
        if self._apologising is not None:  # rows first: what is not done is apologised for next time
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._apologising, journal_flush)
        if self.conversation.underway is not None:
            self.conversation.underway.close()
        await self.llm.close()
        await self.journal.close(journal_flush)
        await self.store.close()
        if self.client.session is not None:
            await self.client.session.close()


class Traffic:
    """When the last Slack delivery arrived. One-off heavy work (the model SDK's import, about
    0.4 s of CPU on the first answer) waits for a lull, so that it does not share the CPU with
    the acknowledgements of the burst that brought it."""

    def __init__(self) -> None:
        self.last = 0.0

    def arrived(self) -> None:
        self.last = time.monotonic()

    async def lull(self, quiet: float = 0.02, most: float = 1.0, since: float | None = None) -> None:
        """Wait until no delivery has arrived for ``quiet`` seconds, or until ``most`` seconds
        after ``since`` (default: now)."""
        deadline = (time.monotonic() if since is None else since) + most
        while (now := time.monotonic()) < deadline and now - self.last < quiet:
            await asyncio.sleep(quiet - (now - self.last))


class Identity:
    """Who the bot is (Slack's auth.test), for Bolt: learnt once, at start-up if possible,
    so that no request waits on Slack before it is acknowledged."""

    def __init__(self, client: AsyncWebClient):
        self.client = client
        self.result: AuthorizeResult | None = None
        self._lock = asyncio.Lock()

    async def learn(self) -> Any:
        """Call auth.test (raises SlackApiError if Slack refuses the token)."""
        response = await self.client.auth_test()
        self.result = AuthorizeResult.from_auth_test_response(auth_test_response=response,
                                                              bot_token=self.client.token, user_token=None)
        return response

    async def authorize(self) -> AuthorizeResult:
        if self.result is None:  # Slack was unreachable at start-up: learn it now, once
            async with self._lock:
                if self.result is None:
                    await self.learn()
        assert self.result is not None
        return self.result


def slack_client(settings: Settings) -> AsyncWebClient:
    """The Web API client. One aiohttp session for every call (slack_sdk otherwise opens a new
    session, and a new TLS connection, per call); Bolt's per-request clients share it too."""
    return AsyncWebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        session=aiohttp.ClientSession(),
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


def create_app(settings: Settings, *, llm: LLM | None = None, store: Store | None = None,
               client: AsyncWebClient | None = None, prompts: Prompts | None = None,
               budget: RateBudget | None = None, journal: Journal | None = None,
               source: str = "slack") -> Flywheel:
    """Build the bot. Call ``await fw.start()`` once the database schema is migrated. ``source``
    is recorded on every call: "slack" for real traffic, "playground" for `flywheel dev`."""
    traffic = Traffic()
    llm = llm or LLM(api_key=settings.openai_api_key, base_url=settings.openai_base_url,
                     idle_timeout=settings.model_timeout, lull=traffic.lull)
    store = store or Store(settings.database_url)
    client = client or slack_client(settings)
    underway, orphans = None, []
    if journal is None:
        journal = Journal(settings.journal_dir, store)
        journal.open()
        if source == "slack":  # answers in Slack are noted while they run: a crash still apologises
            underway = Underway(settings.journal_dir)
            orphans = underway.open()
    conversation = Conversation(
        settings=settings, prompts=prompts or Prompts(settings.prompts_dir), llm=llm, store=store,
        prices=PriceTable.load(settings.prices_file), budget=budget, journal=journal, source=source,
        lull=lambda since: traffic.lull(quiet=0.02, most=0.2, since=since), underway=underway,
    )
    identity = Identity(client)

    async def authorize() -> AuthorizeResult:  # Bolt passes what a function names: nothing here
        return await identity.authorize()

    app = AsyncApp(
        name="flywheel",  # without a name, Bolt reads the source of every caller (inspect.stack())
        # The token travels in the authorization result; a token on this client would make
        # Bolt call auth.test on the first request instead.
        client=AsyncWebClient(base_url=client.base_url, retry_handlers=client.retry_handlers,
                              session=client.session),
        authorize=authorize,
        # Bolt's own signature check is off in both modes, because here it could not do its job.
        # HTTP: bot/server.py checks the signature itself, first, on the bytes as received, then
        # hands Bolt the body it parsed, as a dict (Bolt's own parser loses slash commands whose
        # text says "payload"); Bolt cannot re-check a parsed body, and skips the check for the
        # dict-carrying requests it calls "socket_mode" anyway. Socket Mode: there is no HTTP
        # request to verify. So serve this app over HTTP only through bot.server.web_app, never
        # through one of Bolt's adapters, which would pass unsigned requests to the listeners.
        request_verification_enabled=False,
        signing_secret="",  # what Bolt would verify with; bot/server.py holds the real one
        logger=logging.getLogger("slack_bolt"),
    )

    votes = Votes(journal, settings)
    corrections = Corrections(store=store, journal=journal, budget=conversation.budget)
    assistant = Assistant(conversation)

    @app.middleware
    async def services(context, next):
        """Inject the services; from here on the request's work counts as accepted (a shutdown
        waits for it). Nothing here waits on anything."""
        context["conversation"] = conversation
        context["votes"] = votes
        context["corrections"] = corrections
        context["assistant"] = assistant
        context["settings"] = settings
        with conversation.dispatching():
            return await next()

    @app.error
    async def on_error(error, body):
        log.error("unhandled error in a listener: %s", type(error).__name__, exc_info=error)

    handlers.register(app, conversation.tracked)
    return Flywheel(app=app, settings=settings, conversation=conversation, votes=votes, store=store,
                    journal=journal, llm=llm, client=client, identity=identity, traffic=traffic, orphans=orphans)
