"""The model client: the only importer of `openai`.

`LLM.stream()` returns a `ModelStream`: iterate it for text deltas; afterwards
(or after an error) `stream.completion` holds the text so far, usage, finish
reason, time to first token and latency. Failures surface as `ModelError`
with a `kind`, never as an openai exception.

The SDK is imported on the first model call, in a worker thread: it is the largest
import we have (~0.4 s, ~45 MB), and neither start-up nor acknowledging Slack needs it.
The SDK makes the request (auth, retries, errors); the stream's Server-Sent Events are read
here as plain JSON: building the SDK's typed chunk objects cost more CPU than everything
else an answer does (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.errors import ModelError
from bot.ratelimits import Turns

if TYPE_CHECKING:
    import openai

log = logging.getLogger(__name__)

# Options a prompt may pass through to chat.completions.create.
PASSTHROUGH = (
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "frequency_penalty",
    "presence_penalty", "stop", "seed", "reasoning_effort", "verbosity",
)


@dataclass
class Completion:
    text: str = ""
    finish_reason: str | None = None
    model: str | None = None  # the model the server says answered
    response_id: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    usage: dict[str, Any] | None = None
    ttft_ms: int | None = None
    latency_ms: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # what was actually sent


class LLM:
    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None = None,
        idle_timeout: float = 30.0,
        max_retries: int = 2,
        lull: Callable[[], Awaitable[None]] | None = None,
    ):
        self.base_url = base_url
        self.idle_timeout = idle_timeout
        self._api_key = api_key
        self._max_retries = max_retries
        self._client: openai.AsyncOpenAI | None = None
        self._making = asyncio.Lock()
        self._lull = lull
        self._starts = Turns()  # one request started per turn of the event loop
        # Per model, options the server rejected once (e.g. temperature on reasoning models).
        self._unsupported: dict[str, set[str]] = {}

    async def client(self) -> openai.AsyncOpenAI:
        """The SDK client, made on first use (importing the SDK off the event loop)."""
        if self._client is None:
            async with self._making:  # concurrent first calls: one import, one client
                if self._client is None:
                    if self._lull is not None:
                        await self._lull()
                    self._client = await asyncio.to_thread(self._make_client)
        return self._client

    def _make_client(self) -> openai.AsyncOpenAI:
        """In a worker thread: the import, the client's TLS context (loading CA certificates),
        and what the SDK and its HTTP library would otherwise import on the event loop during
        the first requests (the chat resources, the async backend)."""
        sdk = importlib.import_module("openai")
        with contextlib.suppress(ImportError):  # only a warm-up: anyio imports it on first use anyway
            importlib.import_module("anyio._backends._asyncio")
        client = sdk.AsyncOpenAI(
            # A local server (Ollama, vLLM) needs no key, but the SDK insists on one.
            api_key=self._api_key or "not-needed",
            base_url=self.base_url,
            timeout=sdk.Timeout(self.idle_timeout, connect=10.0),
            max_retries=self._max_retries,
            # The SDK's aiohttp transport (its `aiohttp` extra), not its default HTTP stack: every
            # streamed chunk passes through the transport, and aiohttp's costs a fraction of the CPU.
            http_client=sdk.DefaultAioHttpClient(),
        )
        assert client.chat.completions.with_streaming_response  # imported lazily on first use
        return client

    @property
    def is_openai(self) -> bool:
        return self.base_url is None or "api.openai.com" in self.base_url

    def stream(self, *, model: str, messages: Sequence[dict[str, Any]], options: dict[str, Any] | None = None
               ) -> ModelStream:
        return ModelStream(self, model, list(messages), dict(options or {}))

    def request_options(self, model: str, options: dict[str, Any]) -> dict[str, Any]:
        sent = {k: v for k, v in options.items() if k in PASSTHROUGH}
        # OpenAI's current models take max_completion_tokens; other servers know max_tokens.
        if self.is_openai and "max_tokens" in sent:
            sent.setdefault("max_completion_tokens", sent.pop("max_tokens"))
        for name in self._unsupported.get(model, ()):
            sent.pop(name, None)
        return sent

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


class ModelStream:
    def __init__(self, llm: LLM, model: str, messages: list[dict[str, Any]], options: dict[str, Any]):
        self._llm = llm
        self.model = model
        self.messages = messages
        self.options = options
        self.completion = Completion()
        self._started = time.monotonic()
        self._requested = False

    async def __aiter__(self) -> AsyncGenerator[str, None]:
        """Text deltas. Use inside ``contextlib.aclosing`` when you may stop early, so the
        HTTP response is closed and latency recorded at once, not at garbage collection."""
        started = time.monotonic()
        try:
            async for delta in self._deltas(started):
                yield delta
        finally:
            # From the request, not from before it: waiting for the SDK's first import or for the
            # request's turn is this process's time, not the model's.
            self.completion.latency_ms = int((time.monotonic() - self._started) * 1000)

    async def _open(self, exits: contextlib.AsyncExitStack) -> Any:
        """Start the request (the body not read yet); drop an option the server rejects (once
        per model) and retry."""
        llm = self._llm
        client = await llm.client()
        openai = sys.modules["openai"]
        for _ in range(len(PASSTHROUGH) + 1):
            sent = llm.request_options(self.model, self.options)
            self.completion.options = sent
            await llm._starts.turn()
            if not self._requested:  # time to first token and latency count from the first request
                self._requested, self._started = True, time.monotonic()
            try:
                return await exits.enter_async_context(client.chat.completions.with_streaming_response.create(  # type: ignore[call-overload]  # noqa: E501 - options pass through as sent
                    model=self.model,
                    messages=self.messages,
                    stream=True,
                    stream_options={"include_usage": True},
                    **sent,
                ))
            except openai.BadRequestError as exc:
                param = _rejected_param(exc)
                if param not in sent:
                    raise
                log.warning("model %s rejects option %r; retrying without it", self.model, param)
                llm._unsupported.setdefault(self.model, set()).add(param)
        raise ModelError("bad_request", "the server rejected every option")  # pragma: no cover

    def _stalled(self) -> ModelError:
        return ModelError("timeout", f"no tokens from the model for {self._llm.idle_timeout:g}s")

    def _take(self, data: str) -> list[str] | None:
        """One event's data: its text deltas (None: the end of the stream); usage, model and
        finish reason go into ``completion``."""
        c = self.completion
        if data.startswith("[DONE]"):
            return None
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            raise ValueError("a chunk that is not an object")
        if error := chunk.get("error"):  # an error event inside the stream
            message = error.get("message") if isinstance(error, dict) else None
            raise ModelError("server", f"the model reported an error mid-answer: {str(message or 'no message')[:300]}")
        c.response_id = c.response_id or chunk.get("id")
        c.model = chunk.get("model") or c.model
        if chunk.get("usage"):
            _take_usage(c, chunk["usage"])
        deltas = []
        for choice in chunk.get("choices") or ():
            if delta := (choice.get("delta") or {}).get("content"):
                if c.ttft_ms is None:
                    c.ttft_ms = int((time.monotonic() - self._started) * 1000)
                c.text += delta
                deltas.append(delta)
            if choice.get("finish_reason"):
                c.finish_reason = choice["finish_reason"]
        return deltas

    async def _deltas(self, started: float) -> AsyncIterator[str]:
        c = self.completion
        self._started = started
        await self._llm.client()  # the SDK is imported from here on
        openai = sys.modules["openai"]
        try:
            idle = self._llm.idle_timeout
            # The first token must come within `idle` seconds of the request, retries included;
            # after that, each chunk within `idle` of the last: long answers are never cut short.
            deadline = time.monotonic() + idle
            async with contextlib.AsyncExitStack() as exits:
                async with asyncio.timeout(idle):
                    response = await self._open(exits)
                events = aiter(_server_sent_data(response.iter_lines()))
                loop = asyncio.get_running_loop()
                # One timer, moved for each chunk (asyncio.wait_for would make a task per chunk),
                # and off while the delta is with the caller.
                async with asyncio.timeout(None) as timer:
                    while True:
                        wait = max(deadline - time.monotonic(), 0.001) if c.ttft_ms is None else idle
                        timer.reschedule(loop.time() + wait)
                        try:
                            data = await anext(events)
                        except StopAsyncIteration:
                            break
                        timer.reschedule(None)
                        if (deltas := self._take(data)) is None:
                            break
                        for delta in deltas:
                            yield delta
        except ModelError:
            raise
        except (TimeoutError, openai.APITimeoutError) as exc:
            if not _timed_out(exc):  # the aiohttp transport reports a refused connection as a timeout
                raise ModelError("connection", f"connection to the model failed: {_root(exc)}") from exc
            raise self._stalled() from exc
        except openai.RateLimitError as exc:
            raise ModelError("rate_limited", _describe(exc), status=exc.status_code) from exc
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            # The provider's message may quote part of the key: keep only the status.
            raise ModelError("auth", f"HTTP {exc.status_code}: the model rejected the API key",
                             status=exc.status_code) from exc
        except openai.APIStatusError as exc:
            kind = "server" if exc.status_code >= 500 else "bad_request"
            if kind == "bad_request" and _context_too_long(exc):
                kind = "context_too_long"
            raise ModelError(kind, _describe(exc), status=exc.status_code) from exc
        except (openai.APIConnectionError, httpx_errors()) as exc:
            if _timed_out(exc):  # the transport's read timeout (the idle time) beat our own timer
                raise self._stalled() from exc
            kind = "interrupted" if c.text else "connection"
            raise ModelError(kind, f"connection to the model failed: {type(exc).__name__}") from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelError("malformed", f"unreadable response from the model: {type(exc).__name__}") from exc
        if c.finish_reason is None:
            raise ModelError("interrupted", "the model's stream ended before it finished")


async def _server_sent_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The ``data`` of each Server-Sent Event (https://html.spec.whatwg.org/#server-sent-events):
    ``data:`` lines, joined by newlines, up to a blank line; other fields and comments skipped."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])
    if data:
        yield "\n".join(data)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _timed_out(exc: BaseException) -> bool:
    """Whether something really timed out. The SDK's aiohttp transport maps every connection
    error it does not know better (a refused connection, a reset) to a connect *timeout*; what
    aiohttp raised, further down the chain, says whether time ran out."""
    return any(isinstance(e, TimeoutError) for e in _causes(exc))


def _root(exc: BaseException) -> str:
    return type(list(_causes(exc))[-1]).__name__


def httpx_errors() -> type[Exception]:
    """The SDK's HTTP library's transport error: a stream cut midway raises one while it is read."""
    return importlib.import_module("httpx2").TransportError


def _take_usage(c: Completion, usage: Any) -> None:
    if not isinstance(usage, dict):
        raise ValueError("usage that is not an object")
    c.prompt_tokens = usage.get("prompt_tokens")
    c.completion_tokens = usage.get("completion_tokens")
    details = usage.get("prompt_tokens_details")
    c.cached_tokens = details.get("cached_tokens") if isinstance(details, dict) else None
    c.usage = _without_none(usage)


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    return value


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    """The provider's error object: OpenAI nests it under "error", some servers don't."""
    body = exc.body if isinstance(exc.body, dict) else {}
    inner = body.get("error", body)
    return inner if isinstance(inner, dict) else {"message": str(inner)}


def _rejected_param(exc: openai.BadRequestError) -> str | None:
    err = _error(exc)
    code = str(err.get("code") or "")
    if code in ("unsupported_parameter", "unsupported_value") or "unsupported" in str(err.get("message", "")).lower():
        return err.get("param")
    return None


def _context_too_long(exc: openai.APIStatusError) -> bool:
    """OpenAI says context_length_exceeded; vLLM and others say so in the message."""
    err = _error(exc)
    text = f"{err.get('code') or ''} {err.get('message') or ''}".lower()
    return "context_length" in text or "context length" in text or "too many tokens" in text


def _describe(exc: openai.APIStatusError) -> str:
    """Status and the provider's own message (auth errors never get here)."""
    return f"HTTP {exc.status_code}: {_error(exc).get('message') or type(exc).__name__}"[:500]
