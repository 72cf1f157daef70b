"""The shapes `flywheel export` writes, the rules each line must pass, and the text scrubbing.

Pure functions, no database: `bot.export` streams rows from SQL and passes each
candidate through a builder here, then `validate()`. A candidate that breaks its
format's published rules is skipped and counted, never written.

    openai-chat   {"messages": [...input, {"role": "assistant", "content": target}]}
    openai-dpo    {"input": {"messages": [...]}, "preferred_output": [assistant],
                   "non_preferred_output": [assistant]}
    kto           {"prompt": [...], "completion": [assistant], "label": true|false}   (TRL unpaired)
    eval          {"item": {"input", "ideal", "prompt", "prompt_version", "call_id"},
                   "sample": {"output_text"}}
    csv           one row per selected call, for people (CSV_COLUMNS)
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Format:
    name: str
    version: int  # bump when the rows this format writes change shape
    extension: str
    description: str


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("openai-chat", 1, ".jsonl", "OpenAI chat fine-tuning (SFT): messages ending with the target answer"),
    Format("openai-dpo", 1, ".jsonl", "OpenAI preference fine-tuning (DPO): input, preferred and non-preferred"),
    Format("kto", 1, ".jsonl", "TRL unpaired preference (KTO): prompt, completion, label"),
    Format("eval", 1, ".jsonl", "eval items: input messages with the ideal answer, and the logged answer"),
    Format("csv", 2, ".csv", "one row per selected call (fit ones only, as every format), for people"),
)}

ROLES = ("system", "user", "assistant")
# experiment, arm: the A/B experiment the call ran under and the arm it got (empty: none), so
# that a spreadsheet can compare the arms.
CSV_COLUMNS = ("id", "created_at", "prompt", "version", "model", "experiment", "arm", "user", "channel", "request",
               "answer", "correction", "up", "down", "status", "cost_usd", "latency_ms")


# -- pseudonyms and redaction ------------------------------------------------------------

# <@U0123ABCD> and <@U0123ABCD|display name>: the name goes too.
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
# A bare Slack user id in prose (e.g. a templated ``{{ user }}``): 9+ upper-case letters and digits
# starting with U or W, with at least one digit so that words such as UNDEFINED stay.
# (The look-behind comes after the first letter so that the regex engine can skip ahead fast.)
_BARE_ID = re.compile(r"[UW](?<![A-Za-z0-9_][UW])(?=[A-Z]*[0-9])[A-Z0-9]{8,}(?![A-Za-z0-9_])")
_SLACK_ID = re.compile(r"[UW][A-Z0-9]{2,}")
# <#C0123ABCD|general>, <#C0123ABCD|> and <#C0123ABCD> (channels, private channels, DMs): the
# id and, with ``redact``, the name. Upper-case ids only, so that a template's <#else> stays.
_CHANNEL_MENTION = re.compile(r"<#([CDG][A-Z0-9_]+)(\|[^>]*)?>")
# A bare channel or DM id in prose or in a link (``…slack.com/archives/C0123ABCD/p…``, a templated
# ``{{ channel }}``): C or D and 8+ upper-case letters and digits, with a digit and a letter past F,
# so that upper-case hex (hashes, keys) stays. G ids (legacy private channels and group DMs) are too
# close to words such as GPT4TURBO1 to find bare; mentions and the call's own channel cover them.
_BARE_CHANNEL = re.compile(r"[CD](?<![A-Za-z0-9_][CD])(?=[A-Z]*[0-9])(?=[0-9A-F]*[G-Z])[A-Z0-9]{8,}"
                           r"(?![A-Za-z0-9_])")
_CHANNEL_ID = re.compile(r"[CDG][A-Z0-9_]{2,}")
_MAILTO = re.compile(r"<mailto:[^>|]*(?:\|[^>]*)?>")
_TEL = re.compile(r"<tel:[^>|]*(?:\|[^>]*)?>")
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}")
_PHONE = re.compile(
    r"(?<![\w+.-])(?:"
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"  # +44 20 7946 0958, +14155550100
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"  # (415) 555-0100
    r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 415-555-0100, 415.555.0100
    r")(?![\w.-]*\d)"
)


USER_IDS = "pseudonymised: user_ + first 12 hex of sha256(salt + Slack user id), in fields and texts"
CHANNEL_IDS = ("pseudonymised: channel_ + first 12 hex of sha256(salt + Slack channel or DM id), in fields, "
               "filters and texts (<#C…|name> mentions, links, bare ids)")
REDACTED = ("e-mail addresses → [email], phone numbers → [phone], user mentions → @user, channel mentions "
            "and their names → #channel")


class Scrubber:
    """Replaces Slack user and channel ids with salted pseudonyms (always) and, with ``redact``,
    e-mail addresses, phone numbers, user mentions and channel mentions (names included) with
    placeholders."""

    def __init__(self, salt: str, *, redact: bool = False):
        self.salt = salt
        self.redact = redact
        # Bounded: a workspace's active people and channels fit; memory stays flat however many ids appear.
        self._hash = functools.lru_cache(maxsize=4096)(self._pseudonym)

    def _pseudonym(self, kind: str, slack_id: str) -> str:
        return f"{kind}_" + hashlib.sha256((self.salt + slack_id).encode()).hexdigest()[:12]

    def pseudonym(self, user_id: str | None) -> str:
        """``user_`` and the first 12 hex digits of sha256(salt + id); "" for no user."""
        return self._hash("user", user_id) if user_id else ""

    def channel(self, channel_id: str | None) -> str:
        """``channel_`` and the first 12 hex digits of sha256(salt + id), DMs alike; "" for none."""
        return self._hash("channel", channel_id) if channel_id else ""

    def text(self, value: str, user_id: str | None = None, channel_id: str | None = None) -> str:
        """Scrub one text. ``user_id``: the asker, and ``channel_id``: where they asked, both
        replaced wherever they appear bare."""
        if not value:
            return value
        if self.redact:
            value = _MAILTO.sub("[email]", value)
            value = _TEL.sub("[phone]", value)
            value = _MENTION.sub("@user", value)
            if "<#" in value:
                value = _CHANNEL_MENTION.sub("#channel", value)
            value = _EMAIL.sub("[email]", value)
            value = _PHONE.sub(_phone, value)
        else:
            if "<@" in value:
                value = _MENTION.sub(lambda m: f"<@{self.pseudonym(m.group(1))}>", value)
            if "<#" in value:
                value = _CHANNEL_MENTION.sub(lambda m: f"<#{self.channel(m.group(1))}{m.group(2) or ''}>", value)
        if user_id and _SLACK_ID.fullmatch(user_id) and user_id in value:
            value = _replace_word(value, user_id, self.pseudonym(user_id))
        if channel_id and _CHANNEL_ID.fullmatch(channel_id) and channel_id in value:
            value = _replace_word(value, channel_id, self.channel(channel_id))
        value = _BARE_ID.sub(lambda m: self.pseudonym(m.group(0)), value)
        return _BARE_CHANNEL.sub(lambda m: self.channel(m.group(0)), value)

    def messages(self, messages: Any, user_id: str | None = None, channel_id: str | None = None) -> Any:
        """The logged messages with only ``role`` and ``content``, texts scrubbed. Anything that
        is not a list of messages is returned as is, for `validate()` to reject."""
        if not isinstance(messages, list):
            return messages
        out: list[Any] = []
        for m in messages:
            if not isinstance(m, dict):
                out.append(m)
                continue
            content = m.get("content")
            out.append({"role": m.get("role"), "content": self.text(content, user_id, channel_id)
                        if isinstance(content, str) else content})
        return out


def _replace_word(value: str, word: str, by: str) -> str:
    return re.sub(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])", by, value)


def _phone(match: re.Match[str]) -> str:
    digits = sum(c.isdigit() for c in match.group(0))
    return "[phone]" if 7 <= digits <= 15 else match.group(0)


# -- builders ------------------------------------------------------------------------------


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def chat_row(messages: list[Any], target: str) -> dict[str, Any]:
    return {"messages": [*messages, assistant(target)]}


def dpo_row(messages: list[Any], preferred: str, non_preferred: str) -> dict[str, Any]:
    return {"input": {"messages": messages}, "preferred_output": [assistant(preferred)],
            "non_preferred_output": [assistant(non_preferred)]}


def kto_row(messages: list[Any], completion: str, label: bool) -> dict[str, Any]:
    return {"prompt": messages, "completion": [assistant(completion)], "label": label}


def eval_row(messages: list[Any], ideal: str, *, prompt: str, version: str, call_id: int,
             output: str) -> dict[str, Any]:
    return {"item": {"input": messages, "ideal": ideal, "prompt": prompt, "prompt_version": version,
                     "call_id": call_id},
            "sample": {"output_text": output}}


def same_text(a: str | None, b: str | None) -> bool:
    return (a or "").strip() == (b or "").strip()


# -- validation (the published rules) -------------------------------------------------------


def validate(fmt: str, row: Any) -> str | None:
    """None if ``row`` follows ``fmt``'s rules, else a short reason (used to count skips)."""
    if fmt == "csv":
        return None
    if not isinstance(row, dict):
        return "not an object"
    if fmt == "openai-chat":
        if set(row) != {"messages"}:
            return "unknown keys"
        problem = _messages(row["messages"], "messages")
        if problem:
            return problem
        if row["messages"][-1]["role"] != "assistant":
            return "last message is not the assistant's"
        return None
    if fmt == "openai-dpo":
        if set(row) != {"input", "preferred_output", "non_preferred_output"}:
            return "unknown keys"
        if not isinstance(row["input"], dict) or set(row["input"]) != {"messages"}:
            return "input is not {messages}"
        problem = _input(row["input"]["messages"])
        problem = problem or _one_assistant(row["preferred_output"], "preferred_output")
        problem = problem or _one_assistant(row["non_preferred_output"], "non_preferred_output")
        if problem:
            return problem
        if same_text(row["preferred_output"][0]["content"], row["non_preferred_output"][0]["content"]):
            return "preferred and non-preferred outputs are the same"
        return None
    if fmt == "kto":
        if set(row) != {"prompt", "completion", "label"}:
            return "unknown keys"
        if not isinstance(row["label"], bool):
            return "label is not true or false"
        return _input(row["prompt"]) or _one_assistant(row["completion"], "completion")
    if fmt == "eval":
        if set(row) != {"item", "sample"} or not isinstance(row["item"], dict):
            return "unknown keys"
        item = row["item"]
        if set(item) != {"input", "ideal", "prompt", "prompt_version", "call_id"}:
            return "unknown item keys"
        problem = _input(item["input"])
        if problem:
            return problem
        if not _nonempty(item["ideal"]):
            return "empty ideal answer"
        if not isinstance(row["sample"], dict) or not isinstance(row["sample"].get("output_text"), str):
            return "sample.output_text is not a string"
        return None
    raise ValueError(f"unknown format {fmt!r}")


def _nonempty(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _messages(messages: Any, what: str) -> str | None:
    if not isinstance(messages, list) or not messages:
        return f"{what} is not a non-empty list"
    for m in messages:
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            return "a message is not {role, content}"
        if m["role"] not in ROLES:
            return f"invalid role {m['role']!r}"
        if not _nonempty(m["content"]):
            return "empty message content"
    if not any(m["role"] == "user" for m in messages):
        return "no user message"
    return None


def _input(messages: Any) -> str | None:
    """An input conversation: valid messages, at least one user message, ending with a request."""
    problem = _messages(messages, "input")
    if problem:
        return problem
    if messages[-1]["role"] == "assistant":
        return "input ends with an assistant message"
    return None


def _one_assistant(value: Any, what: str) -> str | None:
    if not isinstance(value, list) or len(value) != 1:
        return f"{what} is not one message"
    m = value[0]
    if not isinstance(m, dict) or set(m) != {"role", "content"} or m["role"] != "assistant":
        return f"{what} is not an assistant message"
    if not _nonempty(m["content"]):
        return "empty message content"
    return None


# -- encoding -------------------------------------------------------------------------------


def dumps(row: dict[str, Any]) -> str:
    """One JSONL line: stable (insertion-ordered keys, fixed separators), UTF-8 as is."""
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def csv_cells(values: Iterable[Any]) -> list[str]:
    """Cells as text; a leading ``=``, ``+``, ``@`` or ``-`` that a spreadsheet would run as a
    formula gets a ``'`` in front (a bullet such as "- item" stays as it is)."""
    out = []
    for v in values:
        s = "" if v is None else str(v)
        if s[:1] in ("=", "+", "@", "\t", "\r") or (s[:1] == "-" and s[1:2] not in ("", " ", "\n")
                                                     and not _NUMBER.fullmatch(s)):
            s = "'" + s
        out.append(s)
    return out


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def utc_iso(value: datetime | None) -> str:
    """A stored time as ``2026-01-31T12:00:00Z`` (SQLite hands back naive UTC, PostgreSQL aware)."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def money(value: float | None) -> str:
    return "" if value is None else f"{value:.10f}".rstrip("0").rstrip(".")


def split_of(input_hash: str, ratio: float) -> str:
    """``train`` when sha256(input_hash), read as a fraction of 2**64, is under ``ratio``.
    Depends on the input alone, so a re-export never moves an example to the other set."""
    fraction = int.from_bytes(hashlib.sha256(input_hash.encode()).digest()[:8], "big") / 2**64
    return "train" if fraction < ratio else "validation"


def candidate_rows(fmt: str, rec: Any, scrub: Scrubber) -> list[Any]:
    """The candidate rows of ``fmt`` one query row (bot/export_queries.py) gives, before validation."""
    def text(value: str | None) -> str:
        return scrub.text(value or "", rec.user_id, rec.channel_id)

    messages = scrub.messages(rec.messages, rec.user_id, rec.channel_id)
    if fmt == "csv":
        return [csv_cells((rec.id, utc_iso(rec.created_at), rec.prompt_name, rec.prompt_version, rec.model,
                           rec.experiment, rec.arm, scrub.pseudonym(rec.user_id), scrub.channel(rec.channel_id),
                           text(rec.request_text), text(rec.answer), text(rec.correction), rec.up, rec.down,
                           rec.status, money(rec.cost_usd), rec.latency_ms))]
    if fmt in ("openai-chat", "eval"):
        target = text(rec.correction if rec.correction is not None else rec.answer)
        if fmt == "openai-chat":
            return [chat_row(messages, target)]
        return [eval_row(messages, target, prompt=rec.prompt_name, version=rec.prompt_version,
                         call_id=rec.id, output=text(rec.answer))]
    # Preference formats: the good call's target, and what it is preferred to.
    good = None
    if rec.good_id is not None:
        good = rec.correction if rec.correction is not None else (rec.good_answer or "")
    worse = None
    if good is not None and rec.correction is not None and not same_text(rec.good_answer, good):
        worse = rec.good_answer or ""  # the answer the correction replaced
    elif rec.bad_id is not None and rec.bad_id != rec.good_id and not same_text(rec.bad_answer, good):
        worse = rec.bad_answer or ""  # a net-down answer to the same input
    elif good is None and rec.bad_id is not None:
        worse = rec.bad_answer or ""  # KTO: an input with only a net-down answer
    good = None if good is None else text(good)
    worse = None if worse is None else text(worse)
    if fmt == "openai-dpo":  # no distinct alternative: validation counts it as "the same"
        return [dpo_row(messages, good or "", good or "" if worse is None else worse)]
    rows = []
    if good is not None:
        rows.append(kto_row(messages, good, True))
    if worse is not None:
        rows.append(kto_row(messages, worse, False))
    return rows
