"""What every Slack Web API stand-in shares: reading parameters, Slack's limits, cursors and checks.

Two stand-ins serve the Web API subset the bot calls: the playground's (:mod:`bot.playground.webapi`)
and the tests' loopback fake (tests/fakes/slack_api.py). Both take their rules from here, and
tests/test_slack_contract.py runs the same calls through the real ``slack_sdk`` client against
both, so they cannot drift apart again. Nothing here knows about a workspace or the page.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

# Slack's limits (docs.slack.dev: chat.postMessage, chat.update, the markdown block, views).
MAX_TEXT = 40_000  # text of a message (chat.postMessage truncates longer; we refuse, as the bot must not rely on it)
MAX_UPDATE_TEXT = 4_000  # chat.update
MAX_MARKDOWN = 12_000  # markdown_text, and all markdown blocks of one message together
MAX_BLOCKS = 50  # blocks in a message
MAX_VIEW_BLOCKS = 100  # blocks in a modal or the Home tab
# Params slack_sdk JSON-encodes when it sends them as query or form fields.
JSON_PARAMS = ("blocks", "chunks", "attachments", "view", "metadata", "prompts", "loading_messages")


class SlackError(Exception):
    """Raised by a method implementation; becomes ``{"ok": false, "error": code}``."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


def truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true")


def int_param(params: dict[str, Any], name: str, default: int) -> int:
    try:
        return int(params.get(name) or default)
    except (TypeError, ValueError) as exc:
        raise SlackError(f"invalid_{name}") from exc


def ts_micros(ts: str) -> int:
    seconds, _, frac = str(ts).partition(".")
    return int(seconds) * 1_000_000 + int((frac or "0").ljust(6, "0")[:6])


def format_ts(micros: int) -> str:
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


async def read_params(request: web.Request) -> dict[str, Any]:
    """The call's parameters, as slack_sdk sends them: query string, form body or JSON body;
    JSON-valued params sent as form fields are decoded. A body that is not a JSON object: ``invalid_json``."""
    params: dict[str, Any] = dict(request.query)
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    elif request.can_read_body:
        raw = await request.text()
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise SlackError("invalid_json") from exc
            if not isinstance(body, dict):
                raise SlackError("invalid_json")
            params.update(body)
    for name in JSON_PARAMS:
        if isinstance(params.get(name), str) and params[name][:1] in "[{":
            with contextlib.suppress(ValueError):
                params[name] = json.loads(params[name])
    return params


# -- messages -----------------------------------------------------------------------------------


def check_blocks(blocks: Any, limit: int = MAX_BLOCKS) -> list[dict[str, Any]] | None:
    """Checked blocks, each with a block_id as Slack gives them (the markdown block's is left out):
    ``invalid_blocks`` for more than ``limit`` or a block without a type, ``msg_blocks_too_long``
    when the markdown blocks together pass :data:`MAX_MARKDOWN`."""
    if blocks is None:
        return None
    if not isinstance(blocks, list) or len(blocks) > limit or \
            not all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks):
        raise SlackError("invalid_blocks")
    markdown = sum(len(str(b.get("text") or "")) for b in blocks if b["type"] == "markdown")
    if markdown > MAX_MARKDOWN:
        raise SlackError("msg_blocks_too_long")
    return [b if "block_id" in b or b["type"] == "markdown" else {**b, "block_id": uuid.uuid4().hex[:5]}
            for b in blocks]


def check_metadata(metadata: Any) -> dict[str, Any] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("event_type"), str) \
            or not isinstance(metadata.get("event_payload", {}), dict):
        raise SlackError("invalid_metadata_format")
    return metadata


def message_text(params: dict[str, Any], *, limit: int = MAX_TEXT) -> tuple[str, bool]:
    """chat.postMessage/postEphemeral: (the text, whether it is ``markdown_text``), after Slack's checks:
    ``markdown_text_conflict``, ``no_text``, ``msg_too_long`` (``limit`` for ``text``)."""
    markdown, text = params.get("markdown_text"), params.get("text")
    if markdown and (text or params.get("blocks")):
        raise SlackError("markdown_text_conflict")
    if not (markdown or text or params.get("blocks") or params.get("attachments")):
        raise SlackError("no_text")
    if len(markdown or "") > MAX_MARKDOWN or len(text or "") > limit:
        raise SlackError("msg_too_long")
    return str(markdown or text or ""), bool(markdown)


def stream_text(params: dict[str, Any]) -> str:
    """``markdown_text`` plus any ``markdown_text`` chunks (slack_sdk's chat_stream sends chunks)."""
    text = params.get("markdown_text") or ""
    if not isinstance(text, str):
        raise SlackError("invalid_arguments")
    for chunk in params.get("chunks") or []:
        if isinstance(chunk, dict) and chunk.get("type") == "markdown_text":
            text += str(chunk.get("text") or "")
    if len(text) > MAX_MARKDOWN:
        raise SlackError("msg_too_long")
    return text


# -- conversations.history / conversations.replies ------------------------------------------------


def window(params: dict[str, Any]) -> tuple[Callable[[int], bool], int | None]:
    """A test for ``oldest``/``latest``/``inclusive`` (on ts in microseconds), and the cursor's ts."""
    inclusive = truthy(params.get("inclusive"))
    oldest = ts_micros(params.get("oldest") or "0")
    latest = ts_micros(params["latest"]) if params.get("latest") else None

    def within(ts: int) -> bool:
        after = ts > oldest or (ts == oldest and inclusive)
        before = latest is None or ts < latest or (ts == latest and inclusive)
        return after and before

    return within, from_cursor(params["cursor"]) if params.get("cursor") else None


def cursor(ts: str) -> str:
    return base64.b64encode(f"next_ts:{ts}".encode()).decode()


def from_cursor(value: str) -> int:
    try:
        kind, _, ts = base64.b64decode(value).decode().partition(":")
        if kind != "next_ts":
            raise ValueError(value)
        return ts_micros(ts)
    except ValueError as exc:
        raise SlackError("invalid_cursor") from exc


def history_page(messages: list[dict[str, Any]], params: dict[str, Any], *,
                 include: Callable[[dict[str, Any]], bool]) -> tuple[list[dict[str, Any]], bool, str]:
    """conversations.history over ``messages`` (oldest first): the page newest first, has_more, next cursor."""
    limit = min(max(int_param(params, "limit", 100), 1), 999)
    within, start = window(params)
    found = [m for m in reversed(messages) if include(m) and within(ts_micros(m["ts"]))
             and (start is None or ts_micros(m["ts"]) <= start)]
    return _page(found, limit)


def replies_page(thread: list[dict[str, Any]], params: dict[str, Any]) -> tuple[list[dict[str, Any]], bool, str]:
    """conversations.replies over ``thread`` (parent first): the page oldest first, has_more, next cursor."""
    limit = min(max(int_param(params, "limit", 1000), 1), 1000)
    within, start = window(params)
    found = [m for m in thread if within(ts_micros(m["ts"])) and (start is None or ts_micros(m["ts"]) >= start)]
    return _page(found, limit)


def _page(found: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], bool, str]:
    page, rest = found[:limit], found[limit:]
    return page, bool(rest), cursor(rest[0]["ts"]) if rest else ""
