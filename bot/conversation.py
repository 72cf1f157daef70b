"""The one flow: build the messages, call the model, deliver, log.

Handlers translate a Slack request into a `Message` (routed to an `Ask` by
`Conversation.route_message`) or an `Ask`; `Conversation` picks how to deliver
(`bot.delivery.reply_for`), and `answer()` does the rest: it resolves a `Plan` up front
(prompt or experiment arm, model, options, channel rules, budget, rendered or replayed
messages), reads the conversation (`bot.history`), calls the model and delivers inside
one `bot.recording.Recording`, so it always ends in an answer or a short apology in
Slack, and one call row, kept in the journal (`bot.journal`) until the database has it.
Corrections are `bot.corrections`.

Work accepted from Slack is tracked from the moment it is acknowledged, so that a
shutdown lets it finish (or interrupts it with an apology and a row) instead of
dropping it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.budgets import Budgets
from bot.corrections import Outcome, answer_link
from bot.delivery import Reply, Status, Watched, reply_for
from bot.errors import ModelError, redact
from bot.feedback import answer_controls, retry_controls
from bot.history import (
    CONTEXT_CHARS,
    HISTORY_MIN_CHARS,
    BotIdentity,
    Context,
    History,
    fit_text,
    pending_call,
    pending_calls,
    slack_error,
)
from bot.journal import Journal, NotKept, new_op, within
from bot.llm import LLM
from bot.models import Call, CallStatus, Trigger
from bot.people import Mentions, People
from bot.pricing import PriceTable
from bot.prompts import Prompt, PromptSet
from bot.ratelimits import RateBudget
from bot.recording import Recording
from bot.settings import Settings
from bot.slack_text import mentions, quote, strip_mention, unescape
from bot.store import CallLog, Store
from bot.team import ChannelRules, Team
from bot.underway import Orphan, Underway

log = logging.getLogger(__name__)

DB_WAIT = 2.0  # seconds a read or claim on the answer path may wait for the database
RECORD_WAIT = 2.0  # seconds an answer waits for its row to reach the database (it is kept anyway)
APOLOGY_WITHIN = 24 * 3600.0  # seconds: an answer cut off by a crash longer ago gets its row, no apology
CLAIMS_REMEMBERED = 10_000  # message keys this process remembers having claimed
CHANNEL_TYPES_REMEMBERED = 10_000  # conversations whose kind this process remembers (`saw_channel`)


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
    channel_type: str | None = None  # Slack's kind of conversation, when known (`Conversation.saw_channel`)
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
    channel_type: str | None = None  # Slack's (message events have it; app_mention events do not)


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
    parent_ts: str | None = None  # a message of the earlier answer, while its row has no id yet (regenerate)


@dataclass(frozen=True)
class Plan:
    """A call, resolved before it starts: the prompt (a running experiment's arm, or a replay's),
    model and options, the channel's rules (team.yaml), whether the team's daily budget applies,
    and how the messages are built: rendered from the prompt with the conversation, or sent as
    they are (``fixed_messages``: a regenerate, `flywheel replay`)."""

    prompt: Prompt  # whose feedback buttons go under the answer
    prompt_name: str  # logged: the prompt version that wrote the messages
    prompt_version: str
    model: str
    options: dict[str, Any]
    team: Team
    channel: ChannelRules
    budgeted: bool  # the team's daily budgets apply (Slack and playground traffic)
    experiment: str | None = None
    arm: str | None = None
    parent_call_id: int | None = None  # the call this one runs again
    parent_ts: str | None = None  # or a message of it, while its row is on its way to the database
    fixed_messages: list[dict[str, Any]] | None = None
    prompt_file: Prompt | None = None  # the prompt file recorded with the row (None: not rendered here)

    def messages(self, ask: Ask, text: str, context: Context) -> list[dict[str, Any]]:
        if self.fixed_messages is not None:
            return self.fixed_messages
        return self.prompt.messages(text, context.messages, user=ask.user_id or "", channel=ask.channel_id or "",
                                    date=datetime.now(UTC).date().isoformat(), thread=context.transcript)

    def row(self, ask: Ask, source: str) -> CallLog:
        """The call's row as it starts; `Recording` fills in the rest."""
        return CallLog(
            trigger=ask.trigger, source=source, prompt_name=self.prompt_name, prompt_version=self.prompt_version,
            model=self.model, messages=[], options=dict(self.options), team_id=ask.team_id,
            channel_id=ask.channel_id, channel_type=ask.channel_type, user_id=ask.user_id, request_ts=ask.ts,
            thread_ts=ask.thread_ts, request_text=ask.text, parent_call_id=self.parent_call_id,
            experiment=self.experiment, arm=self.arm,
        )


# Set in the task that dispatches deliveries acknowledged earlier (`Conversation.accept`), and so in
# their listeners' tasks, which copy its context: they waited for the pause in deliveries already.
_waited: contextvars.ContextVar[bool] = contextvars.ContextVar("waited", default=False)

# Before the model is called: open the place the answer goes (a command's root message).
Opening = Callable[[], Awaitable[tuple[Ask, Reply]]]
ContextSource = Callable[[], Awaitable[Context]]


class Conversation:
    def __init__(self, *, settings: Settings, prompts: Callable[[], PromptSet], llm: LLM, store: Store,
                 prices: PriceTable, budget: RateBudget | None = None, journal: Journal | None = None,
                 source: str = "slack", lull: Callable[[float | None], Awaitable[None]] | None = None,
                 underway: Underway | None = None):
        self.settings = settings
        # Awaited before a listener's work starts (with when the delivery arrived, if known):
        # lets the acknowledgements of a burst go first.
        self.lull = lull
        self.source = source  # recorded on every call: "slack" is real traffic (models.SOURCES)
        self.budget = budget or RateBudget()
        self.people = People(self.budget)  # display names for the model, looked up once per person
        self.history = History(store=store, budget=self.budget, people=self.people, journal=journal)
        self._prompts = prompts
        self.llm = llm
        self.store = store
        self.journal = journal  # None (`flywheel try`): rows are written directly
        self.underway = underway  # answers noted on disk while they run (`flywheel run`: a crash apologises)
        self.prices = prices
        self.budgets = Budgets(store, prices)  # team.yaml's daily limits (Slack and playground traffic)
        self._work: dict[asyncio.Task[Any], int] = {}  # tasks doing accepted work, with nesting depth
        self._dispatching = 0  # requests being dispatched by Bolt (their listener may not run yet)
        self._idle = asyncio.Event()
        self._idle.set()
        self._claimed: OrderedDict[str, None] = OrderedDict()
        self._channel_types: OrderedDict[str, str] = OrderedDict()  # channel id -> Slack's channel_type
        self._replies: set[Reply] = set()  # answers being written: their messages take votes already
        self._delivering: set[asyncio.Task[Any]] = set()  # answers past the model: only posting is left
        # Deliveries acknowledged and waiting to be dispatched: (when they arrived, how).
        self._arrived: deque[tuple[float, Callable[[], Awaitable[Any]]]] = deque()
        self._dispatcher: asyncio.Task[None] | None = None
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

    def accept(self, dispatch: Callable[[], Awaitable[Any]]) -> None:
        """Take a delivery acknowledged before it is dispatched (an event, whose listener has
        nothing to tell Slack): it counts as accepted work from now on. Such deliveries are
        dispatched in order by one task, one per turn of the event loop, each once deliveries
        pause (`lull`, counted from its arrival), so the acknowledgements of a burst are never
        queued behind a wave of dispatches."""
        self._dispatching += 1
        self._idle.clear()
        self._arrived.append((time.monotonic(), dispatch))
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch_arrived())

    async def _dispatch_arrived(self) -> None:
        _waited.set(True)  # the listeners these dispatches start inherit it: they need not wait again
        while self._arrived:
            arrived, dispatch = self._arrived[0]
            if self.lull is not None:
                await self.lull(arrived)
            self._arrived.popleft()
            try:
                await dispatch()
            except Exception:  # noqa: BLE001 - one delivery's failure must not stop the others
                log.exception("dispatching an acknowledged Slack event failed")
            finally:
                self._dispatching -= 1
                self._check_idle()
            await asyncio.sleep(0)  # let requests that came in meanwhile be acknowledged first

    def tracked(self, listener: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """Wrap a listener whose work goes on after Slack's ack (an answer), so that a shutdown
        waits for it. Bolt reads the wrapped listener's parameters (it unwraps)."""

        @functools.wraps(listener)
        async def run(*args: Any, **kwargs: Any) -> Any:
            with self._working():
                if self.lull is not None and not _waited.get():
                    await self.lull(None)
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

    def saw_channel(self, channel_id: str | None, channel_type: str | None) -> None:
        """What kind of conversation a channel is, as an event from it says (message events and
        reactions carry ``channel_type``; app_mention events do not, but Slack sends each mention
        as a message event too). A group DM's id looks like a channel's: its calls are logged
        with the kind, and exports keep them out like a DM's."""
        if not channel_id or not channel_type:
            return
        self._channel_types[channel_id] = channel_type
        self._channel_types.move_to_end(channel_id)
        if len(self._channel_types) > CHANNEL_TYPES_REMEMBERED:
            self._channel_types.popitem(last=False)

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
                   team_id=message.team_id, ts=message.ts, thread_ts=thread_ts,
                   channel_type=message.channel_type or self._channel_types.get(channel))

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
        """Run an answer's exact input again and post the alternative in its thread, linked to it.
        An answer whose row is still in the journal (the database is down, or catching up) is run
        again from there; the link to it is made when the new row is written, after it."""
        call: Call | CallLog | None
        if (pending := pending_call(self.journal, channel_id, ts)) is not None:
            call = CallLog(**pending["log"])
            call_id, parent_ts, reply_ts = None, ts, next(iter(call.message_ts), None)
        else:
            try:
                found = await within(self.store.call_for_message(channel_id, ts), DB_WAIT)
                call = await within(self.store.get_call(found), DB_WAIT) if found is not None else None
            except Exception as exc:  # noqa: BLE001 - an outage: say so rather than nothing
                log.warning("regenerate: the database is unavailable (%s)", type(exc).__name__)
                return "unavailable"
            if call is None:
                return "not_an_answer"
            call_id, parent_ts, reply_ts = call.id, None, call.reply_ts
        if not call.channel_id or not call.messages:  # pruned, or its channel keeps no content
            return "not_an_answer"
        prompt = self.prompts.get(call.prompt_name) or self.prompts.get("ask")
        if prompt is None:
            return "not_an_answer"
        thread = call.thread_ts or reply_ts
        origin = await answer_link(client, channel_id, ts, call.answer, markdown=True)
        replay = Replay(call_id, list(call.messages), call.model, dict(call.options or {}), call.prompt_name,
                        call.prompt_version, call.experiment, call.arm, parent_ts=parent_ts)
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

    def plan(self, ask: Ask) -> Plan:
        """Resolve everything about the call before it starts (see `Plan`)."""
        prompts = self.prompts
        team = prompts.team
        channel = team.channel(ask.channel_id)  # team.yaml: this channel's model, logging, budget
        # An answerer that is one model whatever is asked (the offline echo model) is logged as such.
        only_model = getattr(self.llm, "only_model", None)
        budgeted = self.source in ("slack", "playground")  # `flywheel try` and replays are the developer's
        if (replay := ask.replay) is not None:
            return Plan(prompt=ask.prompt, prompt_name=replay.prompt_name, prompt_version=replay.prompt_version,
                        model=only_model or replay.model, options=replay.options, team=team, channel=channel,
                        budgeted=budgeted, experiment=replay.experiment, arm=replay.arm,
                        parent_call_id=replay.call_id, parent_ts=replay.parent_ts, fixed_messages=replay.messages)
        # A prompt running an A/B experiment: this person's arm (sticky), logged with the call.
        assigned = prompts.choose(ask.prompt, ask.user_id)
        prompt = assigned.prompt
        return Plan(prompt=prompt, prompt_name=prompt.name, prompt_version=prompt.version,
                    model=only_model or prompt.model or channel.model or self.settings.model,
                    options=prompt.options, team=team, channel=channel, budgeted=budgeted,
                    experiment=assigned.experiment, arm=assigned.arm, prompt_file=prompt)

    async def _answer(self, ask: Ask, reply: Reply, context_source: Context | ContextSource | None,
                      opening: Opening | None) -> int | None:
        plan = self.plan(ask)
        replies = [reply]
        self._replies.add(reply)
        mentions = Mentions({})
        key = uuid.uuid4().hex  # its row's op id, known now for the note of the answer under way
        keep = functools.partial(self._record, prompt=plan.prompt_file, parent_ts=plan.parent_ts, key=key)
        call = Recording(plan.row(ask, self.source), keep=keep, redact=self._redact, prices=self.prices,
                         budgets=self.budgets, log_content=plan.channel.log_content)
        call.reply = reply
        try:
            async with call:
                async with call.attempt():
                    if opening is not None:
                        ask, reply = await opening()
                        replies.append(reply)
                        self._replies.add(reply)
                        call.reply = reply
                        call.row.request_ts, call.row.thread_ts = ask.ts, ask.thread_ts
                    if self.underway is not None and ask.channel_id:
                        noted = dataclasses.replace(call.row)
                        if not plan.channel.log_content:  # what the row will keep, and no more
                            noted.drop_content()
                        # Where the answer goes, so the apology goes there too (no thread: a DM itself).
                        self.underway.started(key, channel_id=ask.channel_id, thread_ts=ask.thread_ts,
                                              row=dataclasses.asdict(noted))
                        if isinstance(reply, Watched):  # so that the apology ends what it leaves open
                            reply.watch = functools.partial(self.underway.shows, key)
                    if isinstance(reply, Status):
                        await reply.begin()  # the thread shows a status if the model is slow to start
                    if callable(context_source):
                        context = await context_source()
                    else:
                        context = context_source or Context()
                    mentions = context.mentions()  # the model's @Name for a person here becomes a Slack mention
                    await self._call_model(plan, call, ask, context, reply, mentions)
                await self._deliver(plan, call, ask, reply, mentions)
        finally:  # the row is kept (or could not be): the note has done its job
            self._replies.difference_update(replies)
            if self.underway is not None:
                self.underway.finished(key)
        return call.call_id

    async def _call_model(self, plan: Plan, call: Recording, ask: Ask, context: Context, reply: Reply,
                          mentions: Mentions) -> None:
        """Stream the model's answer into ``reply``; if the conversation is too long for the model,
        leave out its older half and try again."""
        text = fit_text(context.name(ask.text), CONTEXT_CHARS - HISTORY_MIN_CHARS)
        context = context.within(CONTEXT_CHARS - len(text))
        held = not plan.budgeted
        while True:
            call.row.messages = plan.messages(ask, text, context)
            if not held:  # once, before the first request: hold its estimate, or refuse
                held = True
                call.hold = await self.budgets.hold(plan.team, user_id=ask.user_id, channel_id=ask.channel_id,
                                                    model=plan.model, messages=call.row.messages,
                                                    options=plan.options)
            call.stream = stream = self.llm.stream(model=plan.model, messages=call.row.messages, options=plan.options)
            try:
                async with contextlib.aclosing(aiter(stream)) as deltas:
                    async for delta in deltas:
                        if shown := mentions.feed(delta):
                            await reply.write(shown)
                return
            except ModelError as exc:
                if (exc.kind != "context_too_long" or stream.completion.text or not context.turns
                        or plan.fixed_messages is not None):
                    raise
                log.info("context too long for %s; retrying with %d fewer messages", plan.model,
                         len(context.turns) - len(context.turns) // 2)
                context = context.newest(len(context.turns) // 2)

    async def _deliver(self, plan: Plan, call: Recording, ask: Ask, reply: Reply, mentions: Mentions) -> None:
        """Finish the answer in Slack: the rest of its text, the note, the buttons under it."""
        row = call.row
        # An apology can be retried: the same input again, with Regenerate (when the prompt allows it);
        # a refusal over budget cannot (it would be refused again until the budget resets).
        retry = row.messages and call.interrupted is None and row.status != CallStatus.REFUSED
        feedback = plan.prompt.feedback
        controls = answer_controls(feedback) if call.answered else (retry_controls(feedback) if retry else None)
        note = call.note
        if ask.note:
            note = f"{note}\n\n{ask.note}" if note else ask.note
        # Slack message metadata: which prompt version and model wrote this (other apps can read it).
        about = {"event_type": "flywheel_answer", "event_payload": {
            "prompt": row.prompt_name, "version": row.prompt_version,
            "model": (call.stream.completion.model if call.stream is not None else None) or plan.model}}
        task = asyncio.current_task()
        assert task is not None
        self._delivering.add(task)  # a shutdown lets this finish rather than cut it off
        try:
            if rest := mentions.close():
                await reply.write(rest)
            await reply.finish(note, controls, about)
        except Exception as exc:  # noqa: BLE001 - Slack refused every way of posting
            call.fail(exc, "posting the answer to Slack")
        finally:
            self._delivering.discard(task)

    async def _record(self, record: CallLog, *, prompt: Prompt | None, parent_ts: str | None = None,
                      key: str | None = None) -> int | None:
        """Keep the call's row (the journal takes it at once) and wait briefly for its id.
        ``parent_ts``: see `Store.record_call`; ``key``: the op id of the row."""
        if record.channel_type is None and record.channel_id:  # a mention's message event came meanwhile
            record.channel_type = self._channel_types.get(record.channel_id)
        prompt_file = None if prompt is None else {
            "name": prompt.name, "version": prompt.version, "path": str(prompt.path), "source": prompt.source,
            "model": prompt.model}
        if self.journal is None:
            return await self.store.record_call(record, prompt=prompt_file, parent_ts=parent_ts)
        try:
            kept = await self.journal.keep(new_op("call", key=key, log=dataclasses.asdict(record),
                                                  prompt=prompt_file, parent_ts=parent_ts))
        except NotKept:
            log.exception("the row of a %s call (%s, %s tokens) is lost: no journal, no database",
                          record.status, record.model, record.completion_tokens)
            return None
        return await Journal.result(kept, RECORD_WAIT)

    # -- calls whose rows are still in the journal ----------------------------------------

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

    async def apologise_for(self, orphans: list[Orphan], client: AsyncWebClient) -> int:
        """Answers a process that is gone left under way (`bot.underway`: it crashed, or was
        killed): each gets the apology and the row (error_type Interrupted) a shutdown would have
        given it, unless its row was kept after all. Returns how many apologies were due."""
        due = 0
        for orphan in orphans:
            if not await self._row_kept(orphan.key):
                due += 1
                await self._apologise_for(orphan, client)
            if self.underway is not None:
                self.underway.settled(orphan)
        return due

    async def _apologise_for(self, orphan: Orphan, client: AsyncWebClient) -> None:
        row = CallLog(**orphan.row)
        row.status, row.error_type = CallStatus.ERROR, "Interrupted"
        if row.content_logged:
            row.error_message = "the bot stopped before the answer finished, without shutting down (killed, or crashed)"
        # Its op id: one row, however often this runs; logged at the time the answer started.
        op = new_op("call", key=orphan.key, log=dataclasses.asdict(row), at=orphan.at)
        try:
            if self.journal is not None:
                await self.journal.keep(op)
            else:
                await self.store.apply([op])
        except Exception:  # noqa: BLE001 - the apology still goes out
            log.exception("the row of an answer cut off by a crash is lost")
        apology = f"_{ModelError._apologies['interrupted']}_"
        if orphan.message is not None and await self._end_with(orphan, apology, client, team_id=row.team_id):
            return
        if time.time() - orphan.at > APOLOGY_WITHIN:  # the bot was down for long: no news is better
            log.info("not apologising in thread %s of %s: the question is %.0f hours old", orphan.thread_ts,
                     orphan.channel_id, (time.time() - orphan.at) / 3600)
            return
        try:
            await self.budget.call(client, "chat.postMessage", team=row.team_id, channel=orphan.channel_id,
                                   thread_ts=orphan.thread_ts, text=apology)
        except (SlackApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("could not apologise in thread %s of %s for an answer cut off by a crash (%s)",
                        orphan.thread_ts, orphan.channel_id, type(exc).__name__)

    async def _end_with(self, orphan: Orphan, apology: str, client: AsyncWebClient, *, team_id: str | None) -> bool:
        """End the message the crash left open with the apology: the half-streamed answer stops with
        it (as an answer a shutdown interrupts does), the Thinking… note becomes it. An edit, not a
        new message, so whatever the age. False if Slack no longer takes it (a stream it closed)."""
        assert orphan.message is not None
        kind, ts = orphan.message
        try:
            if kind == "stream":
                await self.budget.call(client, "chat.stopStream", team=team_id, channel=orphan.channel_id, ts=ts,
                                       markdown_text=f"\n\n{apology}")
            else:
                await self.budget.call(client, "chat.update", team=team_id, channel=orphan.channel_id, ts=ts,
                                       markdown_text=apology)
        except (SlackApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.info("could not end the %s a crash left in thread %s of %s (%s): posting the apology", kind,
                     orphan.thread_ts, orphan.channel_id, type(exc).__name__)
            return False
        return True

    async def _row_kept(self, key: str) -> bool:
        """Whether the row of the answer with this op id reached the journal or the database."""
        if self.journal is not None and any(op["id"] == key for op in self.journal.pending("call")):
            return True
        try:
            return await within(self.store.call_for_op(key), DB_WAIT) is not None
        except Exception:  # noqa: BLE001 - cannot tell: apologise (the row itself is written once anyway)
            return False

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
