"""The offline echo model: the playground's answerer when no model is configured.

It streams back what it was asked, and what it was sent, so a prompt engineer can see the
whole flow (thread context, prompt, streaming, votes, exports) before any API key exists.
Every answer says it is the echo model. `flywheel run` never uses it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from bot.llm import Completion

ECHO_MODEL = "echo"
WORD_DELAY = 0.008  # seconds between streamed words: visibly streaming, done well inside a second


class EchoLLM:
    """Same interface as `bot.llm.LLM`: ``stream(...)`` yields text deltas and fills ``completion``."""

    base_url = None
    is_openai = False
    only_model = ECHO_MODEL  # whatever a prompt asks for, this is what answers (and what is logged)

    def __init__(self, word_delay: float = WORD_DELAY):
        self.word_delay = word_delay

    def stream(self, *, model: str, messages: Sequence[dict[str, Any]], options: dict[str, Any] | None = None
               ) -> EchoStream:
        return EchoStream(list(messages), self.word_delay)

    async def close(self) -> None:
        return None


class EchoStream:
    def __init__(self, messages: list[dict[str, Any]], word_delay: float):
        self.messages = messages
        self.word_delay = word_delay
        self.completion = Completion(model=ECHO_MODEL, options={})

    async def __aiter__(self) -> AsyncIterator[str]:
        started = time.monotonic()
        text = echo_answer(self.messages)
        c = self.completion
        for word in _words(text):
            await asyncio.sleep(self.word_delay)
            if c.ttft_ms is None:
                c.ttft_ms = int((time.monotonic() - started) * 1000)
            c.text += word
            yield word
        c.finish_reason = "stop"
        c.prompt_tokens = sum(len(str(m.get("content", ""))) for m in self.messages) // 4
        c.completion_tokens = len(text.split())
        c.latency_ms = int((time.monotonic() - started) * 1000)


def echo_answer(messages: list[dict[str, Any]]) -> str:
    """What the echo model says: the last user message, and a summary of what it received."""
    asked = next((m for m in reversed(messages) if m.get("role") == "user"), {"content": ""})
    text = str(asked.get("content") or "").strip() or "(nothing)"
    quoted = "\n".join(f"> {line}" if line else ">" for line in text.splitlines())
    parts = []
    if any(m.get("role") == "system" for m in messages):
        parts.append("the prompt's system message")
    earlier = sum(1 for m in messages if m.get("role") != "system") - 1
    if earlier > 0:
        parts.append(f"{earlier} earlier message{'s' if earlier != 1 else ''} of the conversation")
    parts.append("yours")
    received = ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
    return (
        f"**Echo model (offline).** You wrote:\n\n{quoted}\n\n"
        f"I was sent {received}. Set `OPENAI_API_KEY` (or `OPENAI_BASE_URL` for a local model) "
        "and restart `flywheel dev` for real answers."
    )


def _words(text: str) -> list[str]:
    """Split keeping the spaces, so the deltas join back to the text."""
    words, current = [], ""
    for ch in text:
        current += ch
        if ch in " \n":
            words.append(current)
            current = ""
    if current:
        words.append(current)
    return words
