"""The one flow: build the messages, call the model, deliver, log.

Handlers translate a Slack request into an `Ask`; `Conversation` picks how to
deliver (`bot.delivery`), and `answer()` does the rest: it always ends in an
answer or a short apology in Slack, and one call row, kept in the journal
(`bot.journal`) until the database has it.

Work accepted from Slack is tracked from the moment it is dispatched, so that a
shutdown lets it finish (or interrupts it with an apology and a row) instead of
dropping it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.budgets import Budgets, Hold, OverBudget
from bot.corrections import Outcome, answer_link
from bot.delivery import Reply, Status, reply_for
from bot.errors import FlywheelError, ModelError, redact
from bot.feedback import answer_controls, retry_controls
from bot.history import (
    CONTEXT_CHARS,
    HISTORY_MIN_CHARS,
    BotIdentity,
    Context,
    History,
    fit_text,
    pending_calls,
    slack_error,
)
from bot.journal import Journal, NotKept, new_op, within
from bot.llm import LLM
from bot.models import CallStatus, Trigger
from bot.people import Mentions, People
from bot.pricing import PriceTable
from bot.prompts import Prompt, PromptSet
from bot.ratelimits import RateBudget
from bot.settings import Settings
from bot.slack_text import mentions, quote, strip_mention, unescape
from bot.store import CallLog, Store

log = logging.getLogger(__name__)

DB_WAIT = 2.0  # seconds a read or claim on the answer path may wait for the database
RECORD_WAIT = 2.0  # seconds an answer waits for its row to reach the database (it is kept anyway)
CLAIMS_REMEMBERED = 10_000  # message keys this process remembers having claimed


@dataclass(frozen=True)
class Ask:
    """A request for an answer, translated from Slack (or the terminal)."""

    trigger: Trigger
    prompt: Prompt
    text: str  # what the user wrote, without the bot's mention or the prompt's name
    channel_id: str | None = None
    user_id: str | None = None
    team_id: str | None = None
    ts: str | None = None  # the asking message (a command's root message)
    thread_ts: str | None = None  # the thread answered in; None: top level
    replay: Replay | None = None  # regenerate, `flywheel replay`: send exactly these messages
    note: str | None = None  # said under the answer (regenerate: which answer it redoes)


@dataclass(frozen=True)
class Message:
    """A Slack message that may be for the bot, as Slack sent it: an @mention, a DM, or a reply in a
    thread (which the bot answers only if it answered in that thread before)."""

    channel_id: str
    ts: str
    text: str  # as Slack sent it: escaped, the bot's mention included
    user_id: str | None
    team_id: str | None
    thread_ts: str | None = None
    direct: bool = False  # in a DM with the bot
    mention: bool = False  # an app_mention event (Slack also sends the plain message: left to this one)


@dataclass(frozen=True)
class Replay:
    """Messages to send as they are, with the model, options and prompt version to log: an
    earlier call's (regenerate), or a candidate prompt's rendering of one (`flywheel replay`)."""

    call_id: int | None  # the call this one runs again (its row's parent_call_id)
    messages: list[dict[str, Any]]
    model: str
    options: dict[str, Any]
    prompt_name: str
    prompt_version: str
    experiment: str | None = None  # the experiment arm the earlier call ran under (regenerate)
    arm: str | None = None


# Before the model is called: open the place the answer goes (a command's root message).
Opening = Callable[[], Awaitable[tuple[Ask, Reply]]]
ContextSource = Callable[[], Awaitable[Context]]


class Conversation:
    def __init__(self, *, settings: Settings, prompts: Callable[[], PromptSet], llm: LLM, store: Store,
                 prices: PriceTable, budget: RateBudget | None = None, journal: Journal | None = None,
                 source: str = "slack"):
        self.settings = settings
        self.source = source  # recorded on every call: "slack" is real traffic (models.SOURCES)
        self.budget = budget or RateBudget()
        self.people = People(self.budget)  # display names for the model, looked up once per person
        self.history = History(store=store, budget=self.budget, people=self.people, journal=journal)
        self._prompts = prompts
        self.llm = llm
        self.store = store
        self.journal = journal  # None (`flywheel try`): rows are written directly
        self.prices = prices
        self.budgets = Budgets(store, prices)  # team.yaml's daily limits (Slack and playground traffic)
        self._work: dict[asyncio.Task[Any], int] = {}  # tasks doing accepted work, with nesting depth
        self._dispatching = 0  # requests being dispatched by Bolt (their listener may not run yet)
        self._idle = asyncio.Event()
        self._idle.set()
        self._claimed: OrderedDict[str, None] = OrderedDict()
        self._replies: set[Reply] = set()  # answers being written: their messages take votes already
        self._delivering: set[asyncio.Task[Any]] = set()  # answers past the model: only posting is left
        if journal is not None:
            journal.answering = self.answering

    @property
    def prompts(self) -> PromptSet:
        return self._prompts()

    # -- accepted work -------------------------------------------------------------------

    @contextlib.contextmanager
    def dispatching(self) -> Iterator[None]:
        """Around Bolt's dispatch of one request: from here on its work counts as accepted."""
        self._dispatching += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._dispatching -= 1
            self._check_idle()

    def tracked(self, listener: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """Wrap a listener whose work goes on after Slack's ack (an answer), so that a shutdown
        waits for it. Bolt reads the wrapped listener's parameters (it unwraps)."""

        @functools.wraps(listener)
        async def run(*args: Any, **kwargs: Any) -> Any:
            with self._working():
                return await listener(*args, **kwargs)

        return run

    @contextlib.contextmanager
    def _working(self) -> Iterator[None]:
        task = asyncio.current_task()
        assert task is not None
        self._work[task] = self._work.get(task, 0) + 1
        self._idle.clear()
        try:
            yield
        finally:
            if self._work[task] > 1:
                self._work[task] -= 1
            else:
                del self._work[task]
            self._check_idle()

    def answering(self, channel_id: str, ts: str) -> bool:
        """Whether this message belongs to an answer still being written (and not yet kept)."""
        return any(getattr(r, "channel", None) == channel_id and ts in r.message_ts for r in self._replies)

    def _check_idle(self) -> None:
        if not self._work and not self._dispatching:
            self._idle.set()

    # -- entry points used by the handlers ------------------------------------------

    async def route_message(self, message: Message, client: AsyncWebClient, bot: BotIdentity) -> Ask | None:
        """Whether and how to answer a message: the prompt it names (a mention, a DM), else the one
        that answered in its thread before; None if it is not for the bot. A message naming a
        broken prompt gets a private note saying where the file is broken, and no answer."""
        channel, thread_ts = message.channel_id, message.thread_ts
        if not message.direct and not message.mention and mentions(message.text, bot.user_id or ""):
            return None  # the app_mention event answers it
        followup = None
        if thread_ts and not message.mention:
            followup = await self.followup_prompt(channel, thread_ts)
        text = unescape(strip_mention(message.text, bot.user_id or ""))  # Slack sends &, <, > escaped
        if message.mention or message.direct:
            if await self.tell_if_broken(client, text, channel=channel, user=message.user_id, thread_ts=thread_ts):
                return None
            prompt, named_text = self.prompts.route(text, channel=channel)
            if followup is not None and named_text == text:  # a DM in a thread: a named prompt wins, else the thread's
                prompt = followup
            else:
                text = named_text
            trigger = Trigger.MENTION if message.mention else Trigger.DM
        else:
            prompt, trigger = followup, Trigger.THREAD  # None: a thread the bot never answered in
        if prompt is None:
            return None
        if message.mention:
            thread_ts = thread_ts or message.ts  # a mention is answered in its thread
        return Ask(trigger=trigger, prompt=prompt, text=text, channel_id=channel, user_id=message.user_id,
                   team_id=message.team_id, ts=message.ts, thread_ts=thread_ts)

    async def reply_to_message(self, ask: Ask, client: AsyncWebClient, bot: BotIdentity) -> int | None:
        """Answer a mention, thread follow-up or DM, once per Slack message."""
        if ask.ts and not await self._claim(f"msg:{ask.channel_id}:{ask.ts}"):
            log.info("message %s already answered; skipping", ask.ts)
            return None
        assert ask.channel_id
        channel, ts, team = ask.channel_id, ask.ts, ask.team_id
        if ask.thread_ts:
            async def context() -> Context:
                if ask.thread_ts == ts:  # a new thread: nothing before the question
                    return await self.history.with_people(Context(), client, team, text=ask.text, asker=ask.user_id,
                                                          bot=bot)
                found = await self.history.thread(client, channel, ask.thread_ts or "", ts, team, bot)
                return await self.history.with_people(found, client, team, text=ask.text, asker=ask.user_id, bot=bot)
        else:  # a top-level DM: answer in the conversation itself
            async def context() -> Context:
                found = await self.history.dm(client, channel, ts, team, bot)
                return await self.history.with_people(found, client, team, text=ask.text, asker=ask.user_id, bot=bot)

        reply = reply_for(client, self.budget, channel=channel, thread_ts=ask.thread_ts, team_id=team,
                          user_id=ask.user_id)
        return await self.answer(ask, reply, context)

    async def reply_to_command(self, ask: Ask, client: AsyncWebClient, respond: Callable[..., Any]) -> int | None:
        """Show the request in the channel, then answer in its thread (or via response_url)."""
        assert ask.channel_id
        channel = ask.channel_id
        shown = f"<@{ask.user_id}> asked `{ask.prompt.command}`:\n{quote(ask.text)}"
        by_response_url = reply_for(client, self.budget, channel=None, thread_ts=None, team_id=ask.team_id,
                                    respond=respond, header=shown)

        async def open_thread() -> tuple[Ask, Reply]:
            try:
                root = await self.budget.call(client, "chat.postMessage", team=ask.team_id, channel=channel,
                                              text=shown)
            except SlackApiError as exc:  # not a member, archived, a DM with others...: answer all the same
                log.info("cannot post in %s (%s); answering via response_url", channel, slack_error(exc))
                return ask, by_response_url
            thread = root["ts"]
            return (dataclasses.replace(ask, ts=thread, thread_ts=thread),
                    reply_for(client, self.budget, channel=channel, thread_ts=thread, team_id=ask.team_id,
                              user_id=ask.user_id))

        async def context() -> Context:  # no conversation before a command: its asker and whom they name
            return await self.history.with_people(Context(), client, ask.team_id, text=ask.text, asker=ask.user_id,
                                                  bot=BotIdentity(None, None))

        return await self.answer(ask, by_response_url, context, opening=open_thread)

    async def regenerate(self, channel_id: str, ts: str, *, user_id: str | None, team_id: str | None,
                         client: AsyncWebClient) -> Outcome:
        """Run an answer's exact input again and post the alternative in its thread, linked to it."""
        try:
            call_id = await within(self.store.call_for_message(channel_id, ts), DB_WAIT)
            call = await within(self.store.get_call(call_id), DB_WAIT) if call_id is not None else None
        except Exception as exc:  # noqa: BLE001 - an outage: say so rather than nothing
            log.warning("regenerate: the database is unavailable (%s)", type(exc).__name__)
            return "unavailable"
        if call is None or not call.channel_id or not call.messages:
            return "not_an_answer"
        prompt = self.prompts.get(call.prompt_name) or self.prompts.get("ask")
        if prompt is None:
            return "not_an_answer"
        thread = call.thread_ts or call.reply_ts
        origin = await answer_link(client, channel_id, ts, call.answer, markdown=True)
        replay = Replay(call.id, list(call.messages), call.model, dict(call.options or {}), call.prompt_name,
                        call.prompt_version, call.experiment, call.arm)
        ask = Ask(trigger=Trigger.REGENERATE, prompt=prompt, text=call.request_text, channel_id=call.channel_id,
                  user_id=user_id, team_id=team_id or call.team_id, ts=call.request_ts, thread_ts=thread,
                  replay=replay, note=f"_🔄 Regenerated from {origin}._")
        await self.answer(ask, reply_for(client, self.budget, channel=call.channel_id, thread_ts=thread,
                                         team_id=ask.team_id, user_id=user_id))
        return "done"

    async def publish_home(self, client: AsyncWebClient, user_id: str, *, since: datetime) -> None:
        """Show this person the Home tab: the figures per prompt of this bot's traffic since then."""
        from bot.home import publish_home  # the figures' code loads when someone first looks

        await publish_home(client, self.store, user_id, since=since, source=self.source, prompts=self.prompts)

    async def tell_if_broken(self, client: AsyncWebClient, text: str, *, channel: str, user: str | None,
                             thread_ts: str | None = None) -> bool:
        """If ``text`` starts by naming a prompt whose file is broken, tell its author privately
        where (``file:line: reason``) instead of answering with another prompt."""
        words = text.split(maxsplit=1)
        note = self.prompts.broken_note(words[0]) if words else None
        if note is None:
            return False
        if user:
            try:
                await client.chat_postEphemeral(channel=channel, user=user, text=note, thread_ts=thread_ts)
            except SlackApiError as exc:
                log.warning("could not say that a prompt is broken: %s", slack_error(exc))
        return True

    async def followup_prompt(self, channel_id: str, thread_ts: str) -> Prompt | None:
        """The prompt that continues a thread the bot answered in; None if it never did."""
        name = None
        for op in pending_calls(self.journal, channel_id):  # newer than any row: the latest wins
            if op["log"]["thread_ts"] == thread_ts and op["log"]["status"] != CallStatus.ERROR:
                name = op["log"]["prompt_name"]
        if name is None:
            try:
                name = await within(self.store.thread_prompt(channel_id, thread_ts), DB_WAIT)
            except Exception as exc:  # noqa: BLE001
                log.warning("cannot tell whether I answered in thread %s: the database is unavailable (%s)",
                            thread_ts, type(exc).__name__)
        if name is None:
            return None
        return self.prompts.get(name) or self.prompts.get("ask")

    async def claim(self, key: str) -> bool:
        """Whether this process takes the Slack message or event behind ``key`` (False: a retry, or
        another process has it). Answers use ``msg:CHANNEL:TS``, so one message is answered once."""
        return await self._claim(key)

    async def _claim(self, key: str) -> bool:
        """Take a Slack message once: in this process first, then across processes through the
        database. If the database does not answer in time, answer anyway (a person is waiting)."""
        if key in self._claimed:
            return False
        self._claimed[key] = None
        if len(self._claimed) > CLAIMS_REMEMBERED:
            self._claimed.popitem(last=False)
        try:
            return bool(await within(self.store.claim(key), DB_WAIT))
        except TimeoutError:
            log.warning("claiming %s: no answer from the database within %gs; answering without the "
                        "cross-process check", key, DB_WAIT)
        except Exception as exc:  # noqa: BLE001
            log.warning("claiming %s: the database is unavailable (%s); answering without the cross-process "
                        "check", key, type(exc).__name__)
        return True

    # -- the flow ----------------------------------------------------------------------

    async def answer(self, ask: Ask, reply: Reply, context: Context | ContextSource | None = None, *,
                     opening: Opening | None = None) -> int | None:
        """Answer, always: the model's text, or a short apology; and one call row.

        ``context`` (or the function that fetches it) and ``opening`` run inside the same
        guard as the model call: if they fail, or the bot shuts down meanwhile, ``reply``
        carries the apology. Returns the call's id once its row is in the database."""
        with self._working():
            return await self._answer(ask, reply, context, opening)

    async def _answer(self, ask: Ask, reply: Reply, context_source: Context | ContextSource | None,
                      opening: Opening | None) -> int | None:
        prompt, replay = ask.prompt, ask.replay
        prompts = self.prompts
        team = prompts.team
        channel = team.channel(ask.channel_id)  # team.yaml: this channel's model, logging, budget
        # A prompt running an A/B experiment: this person's arm (sticky), logged with the call.
        if replay is None:
            assigned = prompts.choose(prompt, ask.user_id)
            prompt, experiment, arm = assigned.prompt, assigned.experiment, assigned.arm
        else:
            experiment, arm = replay.experiment, replay.arm
        model = replay.model if replay else prompt.model or channel.model or self.settings.model
        # An answerer that is one model whatever is asked (the offline echo model) is logged as such.
        model = getattr(self.llm, "only_model", None) or model
        options = replay.options if replay else prompt.options
        record = CallLog(
            trigger=ask.trigger, source=self.source, prompt_name=replay.prompt_name if replay else prompt.name,
            prompt_version=replay.prompt_version if replay else prompt.version, model=model,
            messages=[], options=dict(options), team_id=ask.team_id, channel_id=ask.channel_id,
            user_id=ask.user_id, request_ts=ask.ts, thread_ts=ask.thread_ts, request_text=ask.text,
            parent_call_id=replay.call_id if replay else None,
            experiment=experiment, arm=arm,
        )
        stream = None
        note = None
        hold: Hold | None = None
        budgeted = self.source in ("slack", "playground")  # `flywheel try` and replays are the developer's
        interrupted: BaseException | None = None
        started = time.monotonic()
        replies = [reply]
        self._replies.add(reply)
        mentions = Mentions({})
        try:
            if opening is not None:
                ask, reply = await opening()
                replies.append(reply)
                self._replies.add(reply)
                record.request_ts, record.thread_ts = ask.ts, ask.thread_ts
            if isinstance(reply, Status):
                await reply.begin()  # the thread shows a status if the model is slow to start
            if callable(context_source):
                context = await context_source()
            else:
                context = context_source or Context()
            mentions = context.mentions()  # the model's @Name for a person here becomes a Slack mention
            text = fit_text(context.name(ask.text), CONTEXT_CHARS - HISTORY_MIN_CHARS)
            context = context.within(CONTEXT_CHARS - len(text))
            while True:
                record.messages = replay.messages if replay else prompt.messages(
                    text, context.messages,
                    user=ask.user_id or "", channel=ask.channel_id or "",
                    date=datetime.now(UTC).date().isoformat(), thread=context.transcript,
                )
                if budgeted:  # once, before the first request: hold its estimate, or refuse
                    budgeted = False
                    hold = await self.budgets.hold(team, user_id=ask.user_id, channel_id=ask.channel_id,
                                                   model=model, messages=record.messages, options=options)
                stream = self.llm.stream(model=model, messages=record.messages, options=options)
                try:
                    async with contextlib.aclosing(aiter(stream)) as deltas:
                        async for delta in deltas:
                            if shown := mentions.feed(delta):
                                await reply.write(shown)
                    break
                except ModelError as exc:
                    # Too long for this model: leave out the older half of the conversation and retry.
                    if exc.kind != "context_too_long" or stream.completion.text or not context.turns or replay:
                        raise
                    log.info("context too long for %s; retrying with %d fewer messages", model,
                             len(context.turns) - len(context.turns) // 2)
                    context = context.newest(len(context.turns) // 2)
        except ModelError as exc:
            log.warning("model call failed (%s): %s", exc.kind, exc)
            note = self._failed(record, exc, f"ModelError.{exc.kind}", exc.user_message)
            if stream is not None and stream.completion.text:
                record.status = CallStatus.INCOMPLETE
        except OverBudget as exc:
            log.info("call refused: %s", exc)
            self._failed(record, exc, exc.error_type, "")
            note, record.status = f"_{exc.user_message}_", CallStatus.REFUSED
        except asyncio.CancelledError as exc:  # shut down before the answer finished
            interrupted = exc
            note = self._failed(record, exc, "Interrupted", ModelError._apologies["interrupted"],
                                "the bot shut down before the answer finished")
            record.status = CallStatus.INCOMPLETE if stream is not None and stream.completion.text else CallStatus.ERROR
        except Exception as exc:  # noqa: BLE001 - the user gets an apology, the log the traceback
            log.exception("answering failed")
            note = self._failed(record, exc, type(exc).__name__, FlywheelError.user_message)
        else:
            if stream.completion.finish_reason == "length":
                record.status = CallStatus.TRUNCATED
                note = "_(The answer hit this prompt's length limit and was cut off.)_"
            elif not stream.completion.text.strip():
                note = "_(The model returned an empty answer. Try rephrasing.)_"
        answered = stream is not None and stream.completion.text.strip() and record.status != CallStatus.ERROR
        # An apology can be retried: the same input again, with Regenerate (when the prompt allows it);
        # a refusal over budget cannot (it would be refused again until the budget resets).
        retry = record.messages and interrupted is None and record.status != CallStatus.REFUSED
        controls = answer_controls(prompt.feedback) if answered else (
            retry_controls(prompt.feedback) if retry else None)
        if ask.note:
            note = f"{note}\n\n{ask.note}" if note else ask.note
        # Slack message metadata: which prompt version and model wrote this (other apps can read it).
        about = {"event_type": "flywheel_answer", "event_payload": {
            "prompt": record.prompt_name, "version": record.prompt_version,
            "model": (stream.completion.model if stream is not None else None) or model}}
        task = asyncio.current_task()
        assert task is not None
        self._delivering.add(task)  # a shutdown lets this finish rather than cut it off
        try:
            if rest := mentions.close():
                await reply.write(rest)
            await reply.finish(note, controls, about)
        except Exception as exc:  # noqa: BLE001 - Slack refused every way of posting
            log.exception("posting the answer to Slack failed")
            self._failed(record, exc, type(exc).__name__, "")
        finally:
            self._delivering.discard(task)
            if stream is not None:
                self._complete(record, stream.completion, started)
            record.message_ts = list(reply.message_ts)
            record.latency_ms = record.latency_ms or int((time.monotonic() - started) * 1000)
            if hold is not None:
                await self.budgets.settle(hold, (record.prompt_tokens or 0) + (record.completion_tokens or 0),
                                          record.cost_usd)
            if not channel.log_content:  # the channel opted out: tokens, cost and timing only
                record.messages, record.request_text, record.answer = [], "", ""
                record.error_message, record.content_logged = None, False
            call_id = await self._record(record, None if replay else prompt)
            self._replies.difference_update(replies)
        log.info("call %s: %s/%s %s in %sms", call_id if call_id is not None else "(kept)", record.prompt_name,
                 record.prompt_version[:12], record.status, record.latency_ms)
        if interrupted is not None:
            raise interrupted
        return call_id

    async def _record(self, record: CallLog, prompt: Prompt | None) -> int | None:
        """Keep the call's row (the journal takes it at once) and wait briefly for its id."""
        prompt_file = None if prompt is None else {
            "name": prompt.name, "version": prompt.version, "path": str(prompt.path), "source": prompt.source,
            "model": prompt.model}
        if self.journal is None:
            return await self.store.record_call(record, prompt=prompt_file)
        try:
            kept = await self.journal.keep(new_op("call", log=dataclasses.asdict(record), prompt=prompt_file))
        except NotKept:
            log.exception("the row of a %s call (%s, %s tokens) is lost: no journal, no database",
                          record.status, record.model, record.completion_tokens)
            return None
        return await Journal.result(kept, RECORD_WAIT)

    # -- calls whose rows are still in the journal ----------------------------------------

    def _failed(self, record: CallLog, exc: BaseException, error_type: str, apology: str,
                message: str | None = None) -> str | None:
        """Mark the call as failed; returns the apology to show in Slack."""
        record.status, record.error_type = CallStatus.ERROR, error_type
        record.error_message = self._redact(message or str(exc) or type(exc).__name__)
        return f"_{apology}_" if apology else None

    def _complete(self, record: CallLog, completion, started: float) -> None:
        record.answer = completion.text
        record.finish_reason = completion.finish_reason
        record.model_resolved = completion.model
        record.response_id = completion.response_id
        record.options = completion.options or record.options
        record.prompt_tokens = completion.prompt_tokens
        record.completion_tokens = completion.completion_tokens
        record.cached_tokens = completion.cached_tokens
        record.usage = completion.usage
        record.ttft_ms = completion.ttft_ms
        record.latency_ms = completion.latency_ms or int((time.monotonic() - started) * 1000)
        price = self.prices.price(record.model_resolved or record.model)
        if price is not None:
            record.cost_usd = self.prices.cost(price.model, record.prompt_tokens, record.completion_tokens,
                                               record.cached_tokens or 0)
            record.price = {"model": price.model, "input": price.input, "output": price.output,
                            "cached_input": price.cached_input, "unit": "USD per 1M tokens"}

    def _redact(self, text: str) -> str:
        return redact(text, self.settings.secrets)

    # -- graceful shutdown ---------------------------------------------------------------

    @property
    def inflight(self) -> int:
        """Accepted work not finished yet: answers, and requests still being dispatched."""
        return len(self._work) + self._dispatching

    async def drain(self, timeout: float) -> bool:
        """Wait for accepted work; True if all of it finished within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._quiet(), timeout)
            return True
        except TimeoutError:
            return False

    async def _quiet(self) -> None:
        while True:
            await self._idle.wait()
            await asyncio.sleep(0)  # a listener Bolt has just scheduled takes its first step
            if self._idle.is_set():
                return

    async def shutdown(self, grace: float, cleanup: float = 4.0) -> int:
        """Let accepted work finish for ``grace`` seconds; then post what is waiting for Slack's
        rate budget at once, and interrupt what is still waiting for the model: each of those
        answers posts an apology and keeps its row (status incomplete/error, error_type
        Interrupted). Returns how many had to be interrupted."""
        if await self.drain(grace):
            return 0
        self.budget.rush()
        late = [task for task in self._work if task not in self._delivering]
        for task in late:
            task.cancel()
        if self._work:
            await asyncio.wait(list(self._work), timeout=cleanup)
        return len(late)
