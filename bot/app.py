"""Composition root: build the services once, put them on Bolt's context, register handlers."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from slack_bolt.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

import handlers
from bot.conversation import Conversation
from bot.feedback import Votes
from bot.llm import LLM
from bot.pricing import PriceTable
from bot.prompts import PromptSet
from bot.ratelimits import RateBudget
from bot.settings import Settings
from bot.store import Store

log = logging.getLogger(__name__)
ANSWERABLE_EVENTS = ("app_mention", "message")


class Prompts:
    """The current prompt set; reloads when a file in the folder changes."""

    def __init__(self, directory):
        self.directory = directory
        self.current = self._load()

    def _load(self) -> PromptSet:
        prompts = PromptSet.load(self.directory)
        for problem in prompts.problems:
            log.error("prompt skipped: %s", problem)
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
    llm: LLM
    client: AsyncWebClient

    async def close(self) -> None:
        await self.llm.close()
        await self.store.close()


def slack_client(settings: Settings) -> AsyncWebClient:
    return AsyncWebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


def create_app(settings: Settings, *, llm: LLM | None = None, store: Store | None = None,
               client: AsyncWebClient | None = None, prompts: Prompts | None = None,
               budget: RateBudget | None = None) -> Flywheel:
    llm = llm or LLM(api_key=settings.openai_api_key, base_url=settings.openai_base_url,
                     idle_timeout=settings.model_timeout)
    store = store or Store(settings.database_url)
    client = client or slack_client(settings)
    conversation = Conversation(
        settings=settings, prompts=prompts or Prompts(settings.prompts_dir), llm=llm, store=store,
        prices=PriceTable.load(settings.prices_file), budget=budget,
    )
    app = AsyncApp(
        client=client,
        signing_secret=settings.slack_signing_secret or "socket-mode-has-no-signing-secret",
        # In Socket Mode there is no HTTP request to verify.
        request_verification_enabled=not settings.socket_mode,
        logger=logging.getLogger("slack_bolt"),
    )

    votes = Votes(store, settings)

    @app.middleware
    async def services(context, body, next):
        """Inject the services, and take each message delivery once (retries included).

        The claim is written before Slack gets its acknowledgement: if the database is
        down, the request fails and Slack delivers the message again later."""
        context["conversation"] = conversation
        context["votes"] = votes
        context["settings"] = settings
        event = body.get("event") if isinstance(body, dict) else None
        answerable = isinstance(event, dict) and event.get("type") in ANSWERABLE_EVENTS
        if answerable and body.get("event_id") and not await store.claim(f"event:{body['event_id']}"):
            log.info("duplicate delivery of %s ignored", body["event_id"])
            return BoltResponse(status=200, body="")
        return await next()

    @app.error
    async def on_error(error, body):
        log.error("unhandled error in a listener: %s", type(error).__name__, exc_info=error)

    handlers.register(app)
    return Flywheel(app=app, settings=settings, conversation=conversation, votes=votes, store=store, llm=llm, client=client)
