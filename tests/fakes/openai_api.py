"""A loopback fake of an OpenAI-compatible Chat Completions server.

Usage::

    async with FakeOpenAI() as fake:
        fake.reply("Hello there", usage=(12, 3))
        client = AsyncOpenAI(api_key=fake.api_key, base_url=fake.url)
        stream = await client.chat.completions.create(model="m", messages=[...], stream=True)

Responses are scripted FIFO with :meth:`FakeOpenAI.reply`; with nothing scripted the server
answers ``"echo: " + <last user message>``, or as :meth:`FakeOpenAI.default_reply` set (an
answer made from the message, with a time to first token and a token rate). Streams use the
same Server-Sent Events framing as api.openai.com: one ``data: {chat.completion.chunk}`` per
delta (the first carries ``role``), a chunk with ``finish_reason``, an optional ``usage`` chunk
with ``choices: []`` (when ``stream_options.include_usage``), then ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .slack_api import LoopbackServer

__all__ = ["FakeOpenAI", "ScriptedReply", "split_deltas"]

MODELS = ("gpt-4o-mini", "gpt-4o")
ERROR_TYPES = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("invalid_request_error", "Incorrect API key provided."),
    404: ("invalid_request_error", "The model does not exist or you do not have access to it."),
    429: ("requests", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", "The engine is currently overloaded, please try again later."),
}


@dataclass
class ScriptedReply:
    """One scripted answer; see :meth:`FakeOpenAI.reply` for the fields."""

    text: str | None = None
    chunks: list[str | dict[str, Any]] | None = None
    finish_reason: str = "stop"
    usage: tuple[int, int] | None = None
    model: str | None = None
    status: int = 200
    error: str | None = None
    message: str | None = None
    headers: dict[str, str] | None = None
    chunk_delay: float = 0.0
    first_token_delay: float = 0.0
    stall_after: int | None = None
    cut_after: int | None = None
    error_after: int | None = None
    malformed: bool = False

    def deltas(self) -> list[str | dict[str, Any]]:
        """Content deltas in order (a dict item is sent as a raw ``delta`` object)."""
        if self.chunks is not None:
            return list(self.chunks)
        return split_deltas(self.text or "")

    @property
    def content(self) -> str:
        return "".join(d for d in self.deltas() if isinstance(d, str))


def split_deltas(text: str) -> list[str]:
    """Split text into token-like deltas: ``"Hi there."`` -> ``["Hi", " there."]``."""
    parts = re.findall(r"\s*\S+", text)
    tail = text[len("".join(parts)) :]
    if tail:
        parts.append(tail)
    return parts


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # content parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def _error_body(status: int, code: str | None, message: str | None = None) -> dict[str, Any]:
    kind, default_message = ERROR_TYPES.get(status, ("api_error", f"Error {status}."))
    return {"error": {"message": message or default_message, "type": kind, "param": None, "code": code}}


def _cap(value: int | None, limit: int) -> int | None:
    return None if value is None else min(value, limit)


def _invalid_body(body: Any) -> str | None:
    """OpenAI's 400 message for a body it cannot serve, or None."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request."
    if not body.get("model"):
        return "you must provide a model parameter"
    if not body.get("messages"):
        return "'messages' is a required property"
    return None


class FakeOpenAI(LoopbackServer):
    """Fake OpenAI server at :attr:`url` (``http://127.0.0.1:PORT/v1``).

    :attr:`requests` holds every JSON body posted to ``/v1/chat/completions`` (also the
    rejected ones); :attr:`handled` counts requests whose handling has ended (answered,
    failed, cut or abandoned by the client).
    """

    api_key = "sk-test-key"

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[dict[str, Any]] = []
        self.handled = 0
        self._script: list[ScriptedReply] = []
        self._ids = itertools.count(1)
        # Unscripted requests (default_reply): answer text from the last user message, and timing.
        self._default_text: Callable[[str], str] | None = None
        self._default_first_token_delay = 0.0
        self._default_chunk_delay = 0.0

    @property
    def url(self) -> str:
        """Base URL for ``AsyncOpenAI(base_url=...)``."""
        return f"{self.base}/v1"

    @property
    def pending(self) -> int:
        """Scripted replies not consumed yet."""
        return len(self._script)

    def reply(
        self,
        text: str | None = None,
        *,
        chunks: list[str | dict[str, Any]] | None = None,
        finish_reason: str = "stop",
        usage: tuple[int, int] | None = None,
        model: str | None = None,
        status: int = 200,
        error: str | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
        chunk_delay: float = 0.0,
        first_token_delay: float = 0.0,
        stall_after: int | None = None,
        cut_after: int | None = None,
        error_after: int | None = None,
        malformed: bool = False,
    ) -> ScriptedReply:
        """Queue the answer to the next request.

        - ``chunks``: exact content deltas (default: ``text`` split into word-ish deltas).
        - ``usage``: ``(prompt_tokens, completion_tokens)``; default approximates them.
        - ``status``/``error``: answer an OpenAI error JSON instead (``error`` is its ``code``;
          ``message`` replaces the status's usual message).
        - ``chunk_delay``/``first_token_delay``: seconds between deltas / before the first one.
        - ``stall_after=n``: send n deltas then hang until the client leaves or the server stops.
        - ``cut_after=n``: send n deltas then drop the connection (no finish, no ``[DONE]``).
        - ``error_after=n``: send n deltas then an error event (``data: {"error": {…}}``), as
          OpenAI does when generation fails midway, and end the stream.
        - ``malformed``: stream a non-JSON ``data:`` line (non-streaming: a non-JSON body).
        """
        if error is not None and status == 200:
            status = 400
        scripted = ScriptedReply(
            text=text,
            chunks=chunks,
            finish_reason=finish_reason,
            usage=usage,
            model=model,
            status=status,
            error=error,
            message=message,
            headers=headers,
            chunk_delay=chunk_delay,
            first_token_delay=first_token_delay,
            stall_after=stall_after,
            cut_after=cut_after,
            error_after=error_after,
            malformed=malformed,
        )
        self._script.append(scripted)
        return scripted

    def default_reply(
        self,
        text: Callable[[str], str] | None = None,
        *,
        first_token_delay: float = 0.0,
        tokens_per_second: float | None = None,
    ) -> None:
        """How to answer every later request that finds nothing scripted (the queue of
        :meth:`reply` is always served first).

        - ``text``: makes the answer from the last user message's text (default: the echo,
          ``"echo: " + message``); it is split into word-ish deltas like a scripted ``text``.
        - ``first_token_delay``: seconds before the first delta (time to first token).
        - ``tokens_per_second``: pace of the deltas after the first (default: all at once).

        ``default_reply()`` with no arguments restores the instant echo.
        """
        if tokens_per_second is not None and tokens_per_second <= 0:
            raise ValueError("tokens_per_second must be positive")
        self._default_text = text
        self._default_first_token_delay = first_token_delay
        self._default_chunk_delay = 1.0 / tokens_per_second if tokens_per_second else 0.0

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self._handle_completions),
            web.get("/v1/models", self._handle_models),
        ]

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def _unauthorized(self, request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "").removeprefix("Bearer ")
        message = (
            f"Incorrect API key provided: {key[:8]}***. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
            if key
            else "You didn't provide an API key."
        )
        return web.json_response(_error_body(401, "invalid_api_key", message), status=401)

    async def _handle_models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized(request)
        data = [{"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "openai"} for m in MODELS]
        return web.json_response({"object": "list", "data": data})

    async def _handle_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        self.requests.append(body)
        try:
            return await self._complete(request, body)
        finally:
            self.handled += 1

    async def _complete(self, request: web.Request, body: Any) -> web.StreamResponse:
        if not self._authorized(request):
            return self._unauthorized(request)
        problem = _invalid_body(body)
        if problem:
            return web.json_response(_error_body(400, None, problem), status=400)
        scripted = self._script.pop(0) if self._script else self._unscripted(body)
        headers = {"x-request-id": f"req_{next(self._ids):06d}", **(scripted.headers or {})}
        if scripted.status != 200:
            return web.json_response(
                _error_body(scripted.status, scripted.error, scripted.message), status=scripted.status, headers=headers
            )
        if body.get("stream"):
            return await self._stream(request, body, scripted, headers)
        return await self._complete_at_once(request, body, scripted, headers)

    def _unscripted(self, body: dict[str, Any]) -> ScriptedReply:
        """The answer when nothing is scripted: the echo, or what :meth:`default_reply` set."""
        if self._default_text is None:
            scripted = self._echo(body)
        else:
            users = [m for m in body["messages"] if isinstance(m, dict) and m.get("role") == "user"]
            scripted = ScriptedReply(text=self._default_text(_message_text(users[-1]) if users else ""))
        scripted.first_token_delay = self._default_first_token_delay
        scripted.chunk_delay = self._default_chunk_delay
        return scripted

    @staticmethod
    def _echo(body: dict[str, Any]) -> ScriptedReply:
        users = [m for m in body["messages"] if isinstance(m, dict) and m.get("role") == "user"]
        return ScriptedReply(text="echo: " + (_message_text(users[-1]) if users else ""))

    @staticmethod
    def _usage(body: dict[str, Any], scripted: ScriptedReply) -> dict[str, Any]:
        if scripted.usage is not None:
            prompt, completion = scripted.usage
        else:
            prompt = sum(len(_message_text(m).split()) for m in body["messages"] if isinstance(m, dict))
            completion = len(scripted.deltas())
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }

    async def _hang(self) -> None:
        """Wait until the server stops (a client disconnect cancels the handler first)."""
        await self._closing.wait()

    async def _abort(self, request: web.Request) -> web.StreamResponse:
        """Drop the TCP connection without finishing the response."""
        if request.transport is not None:
            request.transport.abort()
        await self._hang()  # connection_lost() cancels this handler (handler_cancellation=True)
        raise asyncio.CancelledError

    async def _complete_at_once(
        self, request: web.Request, body: dict[str, Any], scripted: ScriptedReply, headers: dict[str, str]
    ) -> web.StreamResponse:
        await asyncio.sleep(scripted.first_token_delay + scripted.chunk_delay * len(scripted.deltas()))
        if scripted.stall_after is not None:
            await self._hang()
        if scripted.cut_after is not None:
            return await self._abort(request)
        if scripted.malformed:
            return web.Response(text="{this is not json", content_type="application/json", headers=headers)
        completion = {
            "id": f"chatcmpl-fake{next(self._ids):06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": scripted.model or body["model"],
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": scripted.content,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": scripted.finish_reason,
                }
            ],
            "usage": self._usage(body, scripted),
            "service_tier": "default",
        }
        return web.json_response(completion, headers=headers)

    async def _stream(
        self, request: web.Request, body: dict[str, Any], scripted: ScriptedReply, headers: dict[str, str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8", **headers})
        await response.prepare(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": f"chatcmpl-fake{next(self._ids):06d}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": scripted.model or body["model"],
            "system_fingerprint": "fp_fake",
            "service_tier": "default",
        }

        async def send(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> None:
            chunk = {**base, "choices": choices, **({"usage": usage} if include_usage else {})}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        def choice(delta: dict[str, Any], finish_reason: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]

        await asyncio.sleep(scripted.first_token_delay)
        await send(choice({"role": "assistant", "content": "", "refusal": None}))
        if scripted.malformed:
            await response.write(b"data: {this is not json\n\n")
        deltas = scripted.deltas()
        stall_at, cut_at = _cap(scripted.stall_after, len(deltas)), _cap(scripted.cut_after, len(deltas))
        error_at = _cap(scripted.error_after, len(deltas))
        for sent in range(len(deltas) + 1):
            if sent == stall_at:
                await self._hang()
            if sent == cut_at:
                return await self._abort(request)
            if sent == error_at:
                error = {"message": "The server had an error while processing your request.", "type": "server_error"}
                await response.write(f"data: {json.dumps({'error': error})}\n\n".encode())
                await response.write_eof()
                return response
            if sent == len(deltas):
                break
            if sent and scripted.chunk_delay:
                await asyncio.sleep(scripted.chunk_delay)
            delta = deltas[sent]
            await send(choice(delta if isinstance(delta, dict) else {"content": delta}))
        await send(choice({}, scripted.finish_reason))
        if include_usage:
            await send([], self._usage(body, scripted))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
