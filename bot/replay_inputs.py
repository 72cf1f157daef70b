"""The inputs of `flywheel replay`: logged calls that have a reference answer, or an eval file.

From the log, the selection is the export's (`bot.export_queries.best_query`): fit calls of the
prompt that were corrected or approved (more 👍 than 👎), one per input, and the reference is what
an export would train on: the newest correction, else the approved answer. An eval file
(`flywheel export --format eval`) gives its inputs, and each item's ``ideal`` as the reference.

A logged call's messages are what its prompt version rendered, with the conversation so far put
before the last message (`Prompt.messages`). To run another version on the same input, `split()`
takes them apart again: the person's text, the conversation turns, and the thread transcript a
``{{ thread }}`` prompt got. It renders the logged version (its text is kept in prompt_versions)
with markers in place of the variables and matches that against what was sent. When the version
is not known here, or does not match, it falls back to: the leading system messages and the last
message are the prompt's, what lies between is the conversation (`Input.exact` is then False).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from bot.errors import FlywheelError, PromptError
from bot.export_formats import validate
from bot.export_queries import Filters
from bot.prompts import Prompt, load_file
from bot.store import Store

_VARIABLES = ("text", "thread", "user", "channel", "date")
_MARK = {name: f"\u27e6flywheel:{name}\u27e7" for name in _VARIABLES}  # ⟦flywheel:text⟧
_MARKS = re.compile("|".join(re.escape(m) for m in _MARK.values()))
_NAME_OF = {mark: name for name, mark in _MARK.items()}


class InputError(FlywheelError):
    """The inputs cannot be read (a bad eval file: path, line, reason)."""


@dataclass
class Input:
    key: str  # "call 42", or "eval.jsonl:7"
    text: str  # what the person wrote
    turns: list[dict[str, Any]]  # the conversation before it, as chat turns
    thread: str  # ... as a transcript, for prompts that read {{ thread }}
    reference: str  # what the candidate is compared with
    reference_kind: str  # correction | approved | ideal
    call_id: int | None = None  # the logged call, when it is in this database (replay rows link to it)
    user: str = ""
    channel: str = ""
    date: str | None = None  # the day it was asked (YYYY-MM-DD)
    reference_model: str | None = None
    reference_version: str | None = None
    reference_cost_usd: float | None = None
    reference_latency_ms: int | None = None
    exact: bool = True  # the logged messages matched their version's rendering
    messages: list[dict[str, Any]] = field(default_factory=list, repr=False)  # as logged


# -- the log ----------------------------------------------------------------------------------


async def from_log(store: Store, prompt: str, filters: Filters, *, limit: int | None = None) -> list[Input]:
    """The newest ``limit`` (default all) logged inputs of ``prompt`` with a reference, oldest first."""
    rows = await store.reference_calls(replace(filters, prompt=prompt), limit=limit)
    versions = await _versions(store, prompt, {r.prompt_version for r in rows})
    inputs = []
    for r in rows:
        parts = split(r.messages, versions.get(r.prompt_version), text=r.request_text, user=r.user_id or "",
                      channel=r.channel_id or "", date=_day(r.created_at))
        inputs.append(replace(
            parts, key=f"call {r.id}", call_id=r.id,
            reference=r.correction if r.correction is not None else (r.answer or ""),
            reference_kind="correction" if r.correction is not None else "approved",
            reference_model=r.model, reference_version=r.prompt_version, reference_cost_usd=r.cost_usd,
            reference_latency_ms=r.latency_ms))
    return inputs


async def _versions(store: Store, prompt: str, versions: set[str]) -> dict[str, Prompt]:
    """The logged versions of ``prompt`` that still load, by version hash."""
    if not versions:
        return {}
    found = {}
    for version, path, source in await store.prompt_sources(prompt, sorted(versions)):
        loaded, _ = load_file(path or f"{prompt}.prompty", name=prompt, raw=source.encode())
        if loaded is not None:
            found[version] = loaded
    return found


def _day(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)).date().isoformat()


# -- an eval file -----------------------------------------------------------------------------


async def from_eval(store: Store, path: Path, prompt: str, *, version: str | None = None,
                    limit: int | None = None) -> tuple[list[Input], int]:
    """The first ``limit`` items of ``prompt`` (and of versions starting with ``version``) in an
    eval file, and how many items of other prompts or versions it skipped. A line that is not
    an eval item raises InputError(path:line: reason)."""
    items: list[tuple[int, dict[str, Any]]] = []
    skipped = 0
    try:
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise InputError(f"{path}:{number}: not JSON ({exc})") from None
                problem = validate("eval", row)
                if problem:
                    raise InputError(f"{path}:{number}: not an eval item as `flywheel export --format eval` "
                                     f"writes them: {problem}")
                item = row["item"]
                if item["prompt"] != prompt or (version and not str(item["prompt_version"]).startswith(version)):
                    skipped += 1
                elif limit is None or len(items) < limit:
                    items.append((number, item))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    versions = await _versions(store, prompt, {str(i["prompt_version"]) for _, i in items})
    logged = await _logged(store, [i["call_id"] for _, i in items if isinstance(i["call_id"], int)])
    inputs = []
    for number, item in items:
        parts = split(item["input"], versions.get(str(item["prompt_version"])), text=None, user="", channel="",
                      date=None)
        call = logged.get(item["call_id"]) if isinstance(item["call_id"], int) else None
        if call is not None and (call.prompt_name, call.prompt_version) != (prompt, item["prompt_version"]):
            call = None  # another database's call
        inputs.append(replace(
            parts, key=f"{path.name}:{number}", call_id=call.id if call else None, reference=item["ideal"],
            reference_kind="ideal", reference_model=call.model if call else None,
            reference_version=str(item["prompt_version"]), reference_cost_usd=call.cost_usd if call else None,
            reference_latency_ms=call.latency_ms if call else None))
    return inputs, skipped


async def _logged(store: Store, ids: list[int]) -> dict[int, Any]:
    if not ids:
        return {}
    return await store.call_summaries(ids)


# -- taking logged messages apart -----------------------------------------------------------------


def split(messages: list[dict[str, Any]], version: Prompt | None, *, text: str | None, user: str, channel: str,
          date: str | None) -> Input:
    """The parts of a logged input (``text`` None: read it from the messages). Only the parts are
    set on the Input returned: text, turns, thread, user, channel, date, exact, messages."""
    messages = [m for m in messages if isinstance(m, dict)]
    if version is not None:
        for found in _matches(messages, version, text):
            turns, values = found
            transcript = values.get("thread") or transcript_of(turns)
            return Input(key="", text=values.get("text", text or ""), turns=turns, thread=transcript,
                         reference="", reference_kind="", user=values.get("user") or user,
                         channel=values.get("channel") or channel, date=_iso_day(values.get("date")) or date,
                         exact=True, messages=messages)
    first = 0
    while first < len(messages) - 1 and messages[first].get("role") == "system":
        first += 1
    turns = [dict(m) for m in messages[first:-1]]
    last = str(messages[-1].get("content") or "") if messages else ""
    return Input(key="", text=text if text is not None else last, turns=turns, thread=transcript_of(turns),
                 reference="", reference_kind="", user=user, channel=channel, date=date, exact=False,
                 messages=messages)


def _matches(messages: list[dict[str, Any]], version: Prompt, text: str | None):
    """(turns, values) for each way ``version`` could have rendered ``messages``: with the logged
    text, with none, then with any (it may have been cut to fit); with and without a thread."""
    texts = list(dict.fromkeys([*([text] if text is not None else []), "", _MARK["text"]]))
    threads = [_MARK["thread"], ""] if version.uses_thread else [""]
    for t in texts:
        for thread in threads:
            try:
                rendered = version.messages(t, [], user=_MARK["user"], channel=_MARK["channel"],
                                            date=_MARK["date"], thread=thread)
            except PromptError:
                continue
            turns = len(messages) - len(rendered)
            if turns < 0 or (turns and version.uses_thread):
                continue
            pairs = [*zip(rendered[:-1], messages, strict=False), (rendered[-1], messages[-1])]
            values: dict[str, str] = {}
            if all(_match(r, m, values) for r, m in pairs):
                if t != _MARK["text"]:
                    values.setdefault("text", t)
                yield [dict(m) for m in messages[len(rendered) - 1:-1]], values


def _match(rendered: dict[str, Any], logged: dict[str, Any], values: dict[str, str]) -> bool:
    """Whether ``logged`` is ``rendered`` with its markers filled in; what they stood for goes
    into ``values`` (a marker seen before must stand for the same text again)."""
    content = logged.get("content")
    if rendered["role"] != logged.get("role") or not isinstance(content, str):
        return False
    pattern, at, named = [], 0, set()
    for m in _MARKS.finditer(rendered["content"]):
        pattern.append(re.escape(rendered["content"][at:m.start()]))
        name = _NAME_OF[m.group()]
        if name in values:
            pattern.append(re.escape(values[name]))
        elif name in named:
            pattern.append(f"(?P={name})")
        else:
            pattern.append(f"(?P<{name}>.*?)")
            named.add(name)
        at = m.end()
    pattern.append(re.escape(rendered["content"][at:]))
    found = re.fullmatch("".join(pattern), content, re.S)
    if found is None:
        return False
    values.update(found.groupdict())
    return True


def transcript_of(turns: list[dict[str, Any]]) -> str:
    """Turns as the transcript a ``{{ thread }}`` prompt reads (the bot's turns as "you"; the
    log does not keep who else said what, so they are "someone")."""
    return "\n\n".join(f"{'you' if t.get('role') == 'assistant' else 'someone'}: {t.get('content') or ''}"
                       for t in turns)


def _iso_day(value: str | None) -> str | None:
    try:
        return date.fromisoformat(value).isoformat() if value else None
    except ValueError:
        return None
