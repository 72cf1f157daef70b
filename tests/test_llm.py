"""bot.llm through the real openai.AsyncOpenAI client against the loopback FakeOpenAI."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from bot.errors import ModelError
from bot.llm import LLM, ModelStream

from fakes import FakeOpenAI

ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
IDLE = 0.5


class PickyOpenAI(FakeOpenAI):
    """FakeOpenAI that rejects one option per model, as api.openai.com rejects `temperature`
    on reasoning models: HTTP 400 with ``code: unsupported_value`` and ``param`` set."""

    def __init__(self, rejects: dict[str, str], code: str = "unsupported_value", message: str | None = None) -> None:
        super().__init__()
        self.rejects = rejects
        self.code = code
        self.message = message

    async def _complete(self, request: web.Request, body: Any) -> web.StreamResponse:
        param = self.rejects.get(body.get("model")) if isinstance(body, dict) else None
        if param and param in body:
            message = self.message or (
                f"Unsupported value: '{param}' does not support {body[param]} with this model. "
                "Only the default (1) value is supported.")
            error = {"message": message, "type": "invalid_request_error", "param": param, "code": self.code}
            return web.json_response({"error": error}, status=400)
        return await super()._complete(request, body)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def llm(fake: FakeOpenAI) -> AsyncIterator[LLM]:
    client = LLM(api_key=fake.api_key, base_url=fake.url, idle_timeout=IDLE, max_retries=0)
    yield client
    await client.close()


async def collect(stream: ModelStream) -> list[str]:
    return [delta async for delta in stream]


async def collect_error(stream: ModelStream) -> tuple[list[str], ModelError]:
    """Deltas yielded before the stream failed, and the ModelError it failed with."""
    got: list[str] = []
    with pytest.raises(ModelError) as info:
        async for delta in stream:
            got.append(delta)
    return got, info.value


# -- success ---------------------------------------------------------------------------


async def test_stream_yields_deltas_and_fills_completion(fake: FakeOpenAI, llm: LLM) -> None:
    fake.reply(chunks=["Hel", "lo", ", wor", "ld!"], usage=(12, 4), model="gpt-4o-mini-2024-07-18",
               finish_reason="length", first_token_delay=0.05)
    stream = llm.stream(model="gpt-4o-mini", messages=ASK)

    deltas = await collect(stream)

    c = stream.completion
    assert deltas == ["Hel", "lo", ", wor", "ld!"]
    assert c.text == "".join(deltas) == "Hello, world!"
    assert c.finish_reason == "length"
    assert (c.prompt_tokens, c.completion_tokens, c.cached_tokens) == (12, 4, 0)
    assert c.usage is not None and c.usage["total_tokens"] == 16
    assert c.model == "gpt-4o-mini-2024-07-18"  # what the server says answered, not what we asked
    assert c.response_id is not None and c.response_id.startswith("chatcmpl-")
    assert c.ttft_ms is not None and c.latency_ms is not None
    assert 40 <= c.ttft_ms <= c.latency_ms
    [sent] = fake.requests
    assert sent["model"] == "gpt-4o-mini"
    assert sent["messages"] == ASK
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


async def test_time_to_first_token_and_latency_are_the_models_not_the_wait_before_the_request(
        fake: FakeOpenAI) -> None:
    """A fresh bot's first answers wait for the SDK's import (after a pause in deliveries): that
    is the bot's time. Logged as the model's, it skewed every prompt version's latency after a
    deploy."""
    async def busy() -> None:
        await asyncio.sleep(0.6)

    llm = LLM(api_key=fake.api_key, base_url=fake.url, idle_timeout=IDLE, lull=busy)
    try:
        fake.reply(chunks=["Quick", "."], first_token_delay=0.05)
        stream = llm.stream(model="m", messages=ASK)
        started = time.monotonic()
        assert await collect(stream) == ["Quick", "."]
        assert time.monotonic() - started >= 0.6
    finally:
        await llm.close()
    c = stream.completion
    assert c.ttft_ms is not None and c.latency_ms is not None
    assert 40 <= c.ttft_ms <= c.latency_ms < 500


async def test_echo_reply_and_a_second_call_on_the_same_client(fake: FakeOpenAI, llm: LLM) -> None:
    first = llm.stream(model="m", messages=ASK)
    assert "".join(await collect(first)) == "echo: Say hello"
    second = llm.stream(model="m", messages=[{"role": "user", "content": "again"}])
    assert "".join(await collect(second)) == "echo: again"
    assert first.completion.text == "echo: Say hello"  # each stream keeps its own completion
    assert second.completion.response_id != first.completion.response_id
    assert len(fake.requests) == 2


async def test_prompt_options_are_passed_through(fake: FakeOpenAI, llm: LLM) -> None:
    options = {"max_tokens": 50, "temperature": 0.2, "top_p": 0.9, "seed": 7, "stop": ["\n\n"],
               "not_an_option": True}
    stream = llm.stream(model="llama3", messages=ASK, options=options)
    await collect(stream)

    [sent] = fake.requests
    # Not api.openai.com: max_tokens reaches the server unchanged.
    assert sent["max_tokens"] == 50
    assert "max_completion_tokens" not in sent
    assert (sent["temperature"], sent["top_p"], sent["seed"], sent["stop"]) == (0.2, 0.9, 7, ["\n\n"])
    assert "not_an_option" not in sent
    assert stream.completion.options == {"max_tokens": 50, "temperature": 0.2, "top_p": 0.9, "seed": 7,
                                         "stop": ["\n\n"]}
    assert options["max_tokens"] == 50 and "not_an_option" in options  # the prompt's dict is untouched


async def test_openai_gets_max_completion_tokens() -> None:
    for base_url in (None, "https://api.openai.com/v1"):
        llm = LLM(api_key="sk-x", base_url=base_url)
        try:
            assert llm.is_openai
            assert llm.request_options("gpt-5", {"max_tokens": 9, "temperature": 1}) == {
                "max_completion_tokens": 9, "temperature": 1}
            # An explicit max_completion_tokens wins over the mapped max_tokens.
            assert llm.request_options("gpt-5", {"max_tokens": 9, "max_completion_tokens": 3}) == {
                "max_completion_tokens": 3}
        finally:
            await llm.close()


async def test_rejected_temperature_is_dropped_for_that_model() -> None:
    async with PickyOpenAI({"o-reasoner": "temperature"}) as fake:
        llm = LLM(api_key=fake.api_key, base_url=fake.url, idle_timeout=IDLE, max_retries=0)
        try:
            options = {"temperature": 0.2, "max_tokens": 20}
            first = llm.stream(model="o-reasoner", messages=ASK, options=options)
            assert "".join(await collect(first)) == "echo: Say hello"
            assert [r.get("temperature") for r in fake.requests] == [0.2, None]
            assert "temperature" not in fake.requests[1]
            assert fake.requests[1]["max_tokens"] == 20  # only the rejected option goes
            assert first.completion.options == {"max_tokens": 20}

            # Later calls for that model omit it straight away ...
            second = llm.stream(model="o-reasoner", messages=ASK, options=options)
            await collect(second)
            assert len(fake.requests) == 3
            assert "temperature" not in fake.requests[2]
            assert second.completion.options == {"max_tokens": 20}

            # ... while other models still get it.
            other = llm.stream(model="gpt-4o", messages=ASK, options=options)
            await collect(other)
            assert len(fake.requests) == 4
            assert fake.requests[3]["temperature"] == 0.2
        finally:
            await llm.close()


async def test_unsupported_option_we_did_not_send_is_a_bad_request() -> None:
    async with PickyOpenAI({"o-reasoner": "messages"}) as fake:
        llm = LLM(api_key=fake.api_key, base_url=fake.url, idle_timeout=IDLE, max_retries=0)
        try:
            _, err = await collect_error(llm.stream(model="o-reasoner", messages=ASK))
            assert err.kind == "bad_request"
            assert err.status == 400
            assert len(fake.requests) == 1  # no retry loop
        finally:
            await llm.close()


async def test_unsupported_parameter_code_is_enough() -> None:
    """The error code decides, whatever the prose says (here max_tokens on a reasoning model behind a proxy)."""
    message = "'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."
    async with PickyOpenAI({"o1": "max_tokens"}, code="unsupported_parameter", message=message) as fake:
        llm = LLM(api_key=fake.api_key, base_url=fake.url, idle_timeout=IDLE, max_retries=0)
        try:
            stream = llm.stream(model="o1", messages=ASK, options={"max_tokens": 99, "seed": 1})
            assert "".join(await collect(stream)) == "echo: Say hello"
            assert [("max_tokens" in r, r["seed"]) for r in fake.requests] == [(True, 1), (False, 1)]
            assert stream.completion.options == {"seed": 1}
        finally:
            await llm.close()


async def test_invalid_option_value_is_not_dropped() -> None:
    """Only an *unsupported* option is dropped; a bad value for a supported one is the prompt's bug."""
    async with PickyOpenAI({"gpt-4o": "temperature"}, code="invalid_value",
                           message="Invalid value for 'temperature': 5 is out of range.") as fake:
        llm = LLM(api_key=fake.api_key, base_url=fake.url, idle_timeout=IDLE, max_retries=0)
        try:
            _, err = await collect_error(llm.stream(model="gpt-4o", messages=ASK, options={"temperature": 5}))
            assert err.kind == "bad_request"
            assert "out of range" in str(err)
            assert len(fake.requests) == 1
            assert llm.request_options("gpt-4o", {"temperature": 1}) == {"temperature": 1}
        finally:
            await llm.close()


# -- HTTP errors -----------------------------------------------------------------------


async def test_401_is_auth_and_hides_the_key(fake: FakeOpenAI) -> None:
    key = "sk-proj-wrong-0123456789abcdefSECRET"
    llm = LLM(api_key=key, base_url=fake.url, idle_timeout=IDLE, max_retries=2)
    try:
        got, err = await collect_error(llm.stream(model="m", messages=ASK))
    finally:
        await llm.close()
    assert got == []
    assert err.kind == "auth"
    assert err.status == 401
    assert "401" in str(err)
    assert key not in str(err)
    assert key[:8] not in str(err)  # the provider's message quotes the key's first 8 characters
    assert "credentials" in err.user_message
    assert len(fake.requests) == 1  # auth errors are not retried


async def test_400_is_bad_request(fake: FakeOpenAI, llm: LLM) -> None:
    fake.reply(status=400, error="invalid_value")
    _, err = await collect_error(llm.stream(model="m", messages=ASK, options={"temperature": 0.3}))
    assert err.kind == "bad_request"
    assert err.status == 400
    assert "Invalid request." in str(err)  # the provider's own message
    assert len(fake.requests) == 1  # not an unsupported option: no retry


async def test_500_is_server(fake: FakeOpenAI, llm: LLM) -> None:
    fake.reply(status=500)
    _, err = await collect_error(llm.stream(model="m", messages=ASK))
    assert err.kind == "server"
    assert err.status == 500
    assert str(err).startswith("HTTP 500")
    assert len(fake.requests) == 1


async def test_429_is_rate_limited(fake: FakeOpenAI, llm: LLM) -> None:
    fake.reply(status=429)
    got, err = await collect_error(llm.stream(model="m", messages=ASK))
    assert got == []
    assert err.kind == "rate_limited"
    assert err.status == 429
    assert len(fake.requests) == 1


async def test_429_is_retried_and_then_succeeds(fake: FakeOpenAI) -> None:
    fast = {"retry-after-ms": "20"}
    fake.reply(status=429, headers=fast)
    fake.reply(status=429, headers=fast)
    fake.reply("finally through")
    llm = LLM(api_key=fake.api_key, base_url=fake.url, idle_timeout=IDLE, max_retries=2)
    try:
        started = time.monotonic()
        stream = llm.stream(model="m", messages=ASK)
        assert "".join(await collect(stream)) == "finally through"
        assert time.monotonic() - started < 2
    finally:
        await llm.close()
    assert len(fake.requests) == 3
    assert stream.completion.finish_reason == "stop"


async def test_429_gives_up_after_max_retries(fake: FakeOpenAI) -> None:
    for _ in range(4):
        fake.reply(status=429, headers={"retry-after-ms": "10"})
    llm = LLM(api_key=fake.api_key, base_url=fake.url, idle_timeout=IDLE, max_retries=2)
    try:
        _, err = await collect_error(llm.stream(model="m", messages=ASK))
    finally:
        await llm.close()
    assert err.kind == "rate_limited"
    assert len(fake.requests) == 3  # the first try and two retries
    assert fake.pending == 1


# -- transport and stream faults -------------------------------------------------------


async def test_refused_connection_is_connection() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The port is closed now: connecting is refused.
    llm = LLM(api_key="sk-x", base_url=f"http://127.0.0.1:{port}/v1", idle_timeout=IDLE, max_retries=0)
    try:
        stream = llm.stream(model="m", messages=ASK)
        got, err = await collect_error(stream)
    finally:
        await llm.close()
    assert got == []
    assert err.kind == "connection"
    assert stream.completion.text == ""
    assert stream.completion.latency_ms is not None


async def test_stall_is_a_timeout_after_the_idle_timeout(fake: FakeOpenAI, llm: LLM) -> None:
    fake.reply("one two three four", stall_after=2)
    stream = llm.stream(model="m", messages=ASK)
    started = time.monotonic()
    got, err = await collect_error(stream)
    elapsed = time.monotonic() - started
    assert got == ["one", " two"]
    assert err.kind == "timeout"
    assert IDLE * 0.8 <= elapsed < IDLE * 3
    assert stream.completion.text == "one two"
    assert stream.completion.finish_reason is None
    assert stream.completion.latency_ms is not None and stream.completion.latency_ms >= IDLE * 800


async def test_slow_but_steady_stream_is_not_a_timeout(fake: FakeOpenAI, llm: LLM) -> None:
    # Each gap is below the idle timeout, the whole answer takes longer than it.
    fake.reply("a b c d e", chunk_delay=IDLE / 3)
    stream = llm.stream(model="m", messages=ASK)
    assert "".join(await collect(stream)) == "a b c d e"
    assert stream.completion.latency_ms is not None and stream.completion.latency_ms > IDLE * 1000


async def test_cut_connection_is_interrupted_and_keeps_the_partial_text(fake: FakeOpenAI, llm: LLM) -> None:
    fake.reply("one two three four", cut_after=2)
    stream = llm.stream(model="m", messages=ASK)
    got, err = await collect_error(stream)
    assert got == ["one", " two"]
    assert err.kind == "interrupted"
    assert stream.completion.text == "one two"
    assert stream.completion.finish_reason is None


async def test_an_error_event_mid_stream_is_a_server_error_and_keeps_what_arrived(fake: FakeOpenAI,
                                                                                 llm: LLM) -> None:
    fake.reply(chunks=["The first ", "half"], error_after=2)
    stream = llm.stream(model="m", messages=ASK)
    got, err = await collect_error(stream)
    assert got == ["The first ", "half"] and stream.completion.text == "The first half"
    assert err.kind == "server" and "had an error" in str(err)


async def test_malformed_sse_is_malformed(fake: FakeOpenAI, llm: LLM) -> None:
    fake.reply("never shown", malformed=True)
    stream = llm.stream(model="m", messages=ASK)
    got, err = await collect_error(stream)
    assert got == []
    assert err.kind == "malformed"
    assert stream.completion.text == ""


async def test_stream_without_finish_reason_is_interrupted(fake: FakeOpenAI, llm: LLM) -> None:
    fake.reply("all of it", finish_reason=None, usage=(3, 3))  # type: ignore[arg-type]
    stream = llm.stream(model="m", messages=ASK)
    got, err = await collect_error(stream)
    assert got == ["all", " of", " it"]
    assert err.kind == "interrupted"
    assert stream.completion.text == "all of it"
    assert stream.completion.finish_reason is None
    assert stream.completion.prompt_tokens == 3  # the usage chunk still arrived
