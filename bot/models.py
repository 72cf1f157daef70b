"""Database tables. Typed columns for what we query, JSON for what we may need later.

    prompt_versions   every prompt file version ever used (sha256 of the file)
    calls             one row per model call: who, where, what was sent, what came back, cost
    call_messages     the Slack messages an answer was posted as (a reaction finds its call here)
    corrections       people's fixes of answers (history kept; the newest is the target)
    feedback          votes: one row per person, answer, source and reaction; latest active wins;
                      event_ts orders Slack's deliveries, so a late retry cannot undo a newer change
    slack_events      claimed Slack messages: answer each once, across processes
    budget_usage      tokens and dollars spent (or held for a call under way) per day and scope
    meta              installation-wide values (the export salt)
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


SOURCES = ("slack", "playground", "try", "replay")  # Call.source: real Slack traffic, then practice


class CallStatus(StrEnum):
    """Call.status: how a model call ended. Stored as these strings (the members are str)."""

    OK = "ok"  # a complete answer
    TRUNCATED = "truncated"  # an answer cut off at the prompt's length limit (finish_reason "length")
    INCOMPLETE = "incomplete"  # the answer broke off part-way (the model failed, or the bot shut down)
    ERROR = "error"  # no answer: the call failed before any text came back, or the bot failed
    REFUSED = "refused"  # not asked: a daily budget (team.yaml) was used up; the person was told why


ANSWERED = (CallStatus.OK, CallStatus.TRUNCATED)  # the statuses that count as an answer


class Trigger(StrEnum):
    """Call.trigger: what asked for the call. Stored as these strings (the members are str)."""

    MENTION = "mention"  # an @mention in a channel
    THREAD = "thread"  # a follow-up in a thread the bot answered in
    DM = "dm"  # a direct message to the bot
    COMMAND = "command"  # a slash command
    REGENERATE = "regenerate"  # the Regenerate button under an answer
    CLI = "cli"  # `flywheel try`
    REPLAY = "replay"  # `flywheel replay`: the candidate prompt on a logged input
    JUDGE = "judge"  # `flywheel replay`: the pairwise judge comparing two answers
    ASSISTANT = "assistant"  # a question in Slack's assistant pane (bot.assistant)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class PromptVersion(Base):
    __tablename__ = "prompt_versions"
    __table_args__ = (UniqueConstraint("prompt_name", "version", name="uq_prompt_versions_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_name: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(500))
    source: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(100))
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Call(Base):
    __tablename__ = "calls"
    __table_args__ = (
        Index("ix_calls_prompt", "prompt_name", "prompt_version"),
        Index("ix_calls_thread", "channel_id", "thread_ts"),
        Index("ix_calls_created_at", "created_at"),
        Index("ix_calls_input_hash", "input_hash"),
        Index("ix_calls_source_created_at", "source", "created_at"),
        Index("ix_calls_experiment", "experiment", "arm"),
        # Which conversations are DMs or group DMs (exports leave them out), without reading the
        # calls: channel_type is stored after the wide columns.
        Index("ix_calls_channel_type", "channel_type", "channel_id"),
        UniqueConstraint("op_id", name="uq_calls_op_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Where and who. trigger: a Trigger value
    trigger: Mapped[str] = mapped_column(String(16))
    # Where the call came from (SOURCES): only "slack" is real traffic; the rest is practice.
    source: Mapped[str] = mapped_column(String(16), default="slack", server_default="slack")
    team_id: Mapped[str | None] = mapped_column(String(32))
    channel_id: Mapped[str | None] = mapped_column(String(32))
    # Slack's kind of conversation (im, mpim, channel, group) as its message events told the bot;
    # None: not known. A group DM's id looks like a channel's: exports go by this (`_in_dm`).
    channel_type: Mapped[str | None] = mapped_column(String(16))
    user_id: Mapped[str | None] = mapped_column(String(32))
    request_ts: Mapped[str | None] = mapped_column(String(32))  # the asking message (a command's root)
    thread_ts: Mapped[str | None] = mapped_column(String(32))  # the thread answered in
    reply_ts: Mapped[str | None] = mapped_column(String(32))  # the answer's first message
    request_text: Mapped[str] = mapped_column(Text, default="")  # what the user wrote
    # What was asked.
    prompt_name: Mapped[str] = mapped_column(String(100))
    prompt_version: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(100))
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    messages: Mapped[list[Any]] = mapped_column(JSON)
    input_hash: Mapped[str] = mapped_column(String(64))
    # What came back. status: a CallStatus value
    status: Mapped[str] = mapped_column(String(16))
    answer: Mapped[str] = mapped_column(Text, default="")
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    model_resolved: Mapped[str | None] = mapped_column(String(100))
    response_id: Mapped[str | None] = mapped_column(String(100))
    error_type: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)
    # Usage, cost, time.
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    cached_tokens: Mapped[int | None] = mapped_column(Integer)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    price: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the USD/1M prices the cost used
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    ttft_ms: Mapped[int | None] = mapped_column(Integer)
    parent_call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id", ondelete="SET NULL"))  # regenerated from
    # Kept out of every training export (the exclude reaction).
    excluded: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The journal entry this row was written from (bot.journal): written once, however often replayed.
    op_id: Mapped[str | None] = mapped_column(String(32))
    # The live A/B experiment this call ran under (bot.experiments) and the arm it got; None: none.
    experiment: Mapped[str | None] = mapped_column(String(100))
    arm: Mapped[str | None] = mapped_column(String(100))
    # False: the text (messages, request, answer, error) was not kept: the channel opted out of
    # content logging (team.yaml) or `flywheel prune` removed it. Tokens and cost stay.
    content_logged: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())


class CallMessage(Base):
    __tablename__ = "call_messages"

    channel_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    ts: Mapped[str] = mapped_column(String(32), primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    part: Mapped[int] = mapped_column(Integer, default=0)


class Feedback(Base):
    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("call_id", "user_id", "source", "name", name="uq_feedback_signal"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))  # reaction | button
    name: Mapped[str] = mapped_column(String(100))  # the reaction ("+1"), or the button group
    value: Mapped[int] = mapped_column(Integer)  # +1 or -1
    event_ts: Mapped[str | None] = mapped_column(String(32))  # Slack's time of the latest signal
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Correction(Base):
    """A person's fix of an answer; the newest per call is the training target, older ones are history."""

    __tablename__ = "corrections"
    __table_args__ = (UniqueConstraint("op_id", name="uq_corrections_op_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    op_id: Mapped[str | None] = mapped_column(String(32))  # its journal entry (unique)


class Meta(Base):
    """Installation-wide values, e.g. the salt that pseudonymises user ids in exports."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class SlackEvent(Base):
    __tablename__ = "slack_events"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BudgetUsage(Base):
    """What a scope spent on one UTC day: ``scope`` total (key ""), channel (its id) or user (their
    id). A call holds its estimate here before the model is asked (an atomic, conditional
    update: several processes cannot overshoot together) and settles the difference after."""

    __tablename__ = "budget_usage"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC
    scope: Mapped[str] = mapped_column(String(16), primary_key=True)  # total | channel | user
    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
