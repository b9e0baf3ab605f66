"""The `openai` model against a loopback server that speaks the streaming chat-completions format.

The fake endpoint answers each request with the next scripted reply: a stream of chunks, an
HTTP error, or silence. It records every request so the tests can check what was sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from appforge.services.builder.models.base import (
    LIST_FILES,
    TOOL_SCHEMAS,
    WRITE_FILE,
    Exchange,
    ToolResult,
    Turn,
)
from appforge.services.builder.models.openai import (
    ModelError,
    OpenAIConfig,
    OpenAIModel,
    backoff_delay,
    retry_after_seconds,
)
from appforge.services.builder.models.templates import CALCULATOR

WAIT = 5.0
KEY = "sk-test-123"
PROMPT = "build a calculator"


@dataclass(frozen=True, kw_only=True)
class Stream:
    """A 200 answer: these chunks as SSE events, then `data: [DONE]`."""

    chunks: Sequence[dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class Failure:
    """An HTTP error answer."""

    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Silence:
    """Accept the request and never answer (until the server stops)."""


Reply = Stream | Failure | Silence


@dataclass(frozen=True, kw_only=True)
class Recorded:
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass(kw_only=True)
class FakeEndpoint:
    """A scripted OpenAI-compatible endpoint on loopback."""

    replies: list[Reply]
    base_url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Recorded(headers=dict(request.headers), body=await request.json()))
        reply = self.replies.pop(0)
        if isinstance(reply, Failure):
            return web.Response(status=reply.status, text=reply.body, headers=reply.headers)
        if isinstance(reply, Silence):
            await self.release.wait()
            return web.Response(status=500, text="released")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in reply.chunks:
            event = f"data: {json.dumps(chunk)}\n\n".encode()
            # Split every event over two writes so lines straddle reads on the client.
            middle = len(event) // 2
            await response.write(event[:middle])
            await response.write(event[middle:])
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


@pytest.fixture
async def endpoint() -> AsyncIterator[FakeEndpoint]:
    fake = FakeEndpoint(replies=[])
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.base_url = f"http://{host}:{port}/v1"
    yield fake
    fake.release.set()
    await runner.cleanup()


def make_model(
    endpoint: FakeEndpoint, *, text_deltas: list[str] | None = None, **overrides: Any
) -> OpenAIModel:
    settings: dict[str, Any] = {"initial_backoff": 0.001, "max_backoff": 0.01, **overrides}
    config = OpenAIConfig(base_url=endpoint.base_url, api_key=KEY, model="gpt-test", **settings)

    async def on_text(delta: str) -> None:
        if text_deltas is not None:
            text_deltas.append(delta)

    return OpenAIModel(config, on_text_delta=on_text)


@pytest.fixture
async def models() -> AsyncIterator[list[OpenAIModel]]:
    """Models to close after the test."""
    opened: list[OpenAIModel] = []
    yield opened
    for model in opened:
        await model.close()


# --- chunk builders ----------------------------------------------------------------------


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "gpt-test",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def split(text: str, parts: int) -> list[str]:
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)]


def text_chunks(text: str, parts: int = 3) -> list[dict[str, Any]]:
    pieces = split(text, parts)
    first = [chunk({"role": "assistant", "content": pieces[0]})]
    return first + [chunk({"content": piece}) for piece in pieces[1:]]


def call_chunks(
    index: int, call_id: str, name: str, arguments: dict[str, Any], parts: int = 5
) -> list[dict[str, Any]]:
    """A tool call the way OpenAI streams it: id and name first, then argument fragments."""
    head = {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }
    rest = [
        {"index": index, "function": {"arguments": piece}}
        for piece in split(json.dumps(arguments), parts)
    ]
    return [chunk({"tool_calls": [head]})] + [chunk({"tool_calls": [delta]}) for delta in rest]


def finish(reason: str) -> dict[str, Any]:
    return chunk({}, finish_reason=reason)


PLAN = "I'll build a calculator. First the page and its styles."
LOGIC = "Now the logic in app.js, then a look at the files."
SUMMARY = "Your calculator is ready."
INDEX_ARGS = {"path": "index.html", "content": CALCULATOR.index_html}
STYLES_ARGS = {"path": "styles.css", "content": CALCULATOR.styles_css}
APP_ARGS = {"path": "app.js", "content": CALCULATOR.app_js}


def calculator_replies() -> list[Reply]:
    return [
        Stream(
            chunks=[
                *text_chunks(PLAN),
                *call_chunks(0, "call_a", WRITE_FILE, INDEX_ARGS),
                *call_chunks(1, "call_b", WRITE_FILE, STYLES_ARGS),
                finish("tool_calls"),
            ]
        ),
        Stream(
            chunks=[
                *text_chunks(LOGIC),
                *call_chunks(0, "call_c", WRITE_FILE, APP_ARGS),
                *call_chunks(1, "call_d", LIST_FILES, {}, parts=1),
                finish("tool_calls"),
            ]
        ),
        Stream(chunks=[*text_chunks(SUMMARY, parts=2), finish("stop")]),
    ]


def written(path: str, content: str) -> dict[str, Any]:
    return {"path": path, "size": len(content.encode())}


# --- the tests ---------------------------------------------------------------------------


async def test_builds_the_calculator_from_streamed_chunks(
    endpoint: FakeEndpoint, models: list[OpenAIModel]
) -> None:
    endpoint.replies.extend(calculator_replies())
    deltas: list[str] = []
    model = make_model(endpoint, text_deltas=deltas)
    models.append(model)
    assert model.name == "openai"

    async with asyncio.timeout(WAIT):
        first = await model.next_turn(PROMPT, [])
    assert first.text == PLAN
    assert deltas == split(PLAN, 3)
    assert [(c.call_id, c.name) for c in first.tool_calls] == [
        ("call_a", WRITE_FILE),
        ("call_b", WRITE_FILE),
    ]
    assert [dict(c.arguments) for c in first.tool_calls] == [INDEX_ARGS, STYLES_ARGS]
    assert not first.done

    # Results come back in completion order; the request must follow the calls' order.
    history = [
        Exchange(
            turn=first,
            results=(
                ToolResult(call_id="call_b", ok=True, output=written(**STYLES_ARGS)),
                ToolResult(call_id="call_a", ok=True, output=written(**INDEX_ARGS)),
            ),
        )
    ]
    async with asyncio.timeout(WAIT):
        second = await model.next_turn(PROMPT, history)
    assert second.text == LOGIC
    assert [(c.call_id, c.name) for c in second.tool_calls] == [
        ("call_c", WRITE_FILE),
        ("call_d", LIST_FILES),
    ]
    assert [dict(c.arguments) for c in second.tool_calls] == [APP_ARGS, {}]

    history.append(
        Exchange(
            turn=second,
            results=(
                ToolResult(call_id="call_c", ok=True, output=written(**APP_ARGS)),
                ToolResult(call_id="call_d", ok=False, error="disk on fire"),
            ),
        )
    )
    async with asyncio.timeout(WAIT):
        third = await model.next_turn(PROMPT, history)
    assert third == Turn(text=SUMMARY)
    assert third.done

    assert len(endpoint.requests) == 3
    for recorded in endpoint.requests:
        assert recorded.headers["Authorization"] == f"Bearer {KEY}"
        assert recorded.body["model"] == "gpt-test"
        assert recorded.body["stream"] is True
        assert recorded.body["tools"] == list(TOOL_SCHEMAS)
        assert recorded.body["tool_choice"] == "auto"
        system, user = recorded.body["messages"][:2]
        assert system["role"] == "system" and "index.html" in system["content"]
        assert user == {"role": "user", "content": PROMPT}

    second_messages = endpoint.requests[1].body["messages"][2:]
    assert second_messages == [
        {
            "role": "assistant",
            "content": PLAN,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": WRITE_FILE, "arguments": json.dumps(INDEX_ARGS)},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": WRITE_FILE, "arguments": json.dumps(STYLES_ARGS)},
                },
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "call_a",
            "content": json.dumps(written(**INDEX_ARGS)),
        },
        {
            "role": "tool",
            "tool_call_id": "call_b",
            "content": json.dumps(written(**STYLES_ARGS)),
        },
    ]
    third_messages = endpoint.requests[2].body["messages"][2:]
    assert third_messages[:3] == second_messages
    assert [m["role"] for m in third_messages[3:]] == ["assistant", "tool", "tool"]
    assistant, app_result, list_result = third_messages[3:]
    assert assistant["content"] == LOGIC
    assert [(c["id"], c["function"]["name"]) for c in assistant["tool_calls"]] == [
        ("call_c", WRITE_FILE),
        ("call_d", LIST_FILES),
    ]
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == APP_ARGS
    assert app_result == {
        "role": "tool",
        "tool_call_id": "call_c",
        "content": json.dumps(written(**APP_ARGS)),
    }
    assert list_result["tool_call_id"] == "call_d"
    assert json.loads(list_result["content"]) == {"error": "disk on fire"}


async def test_retries_server_errors_then_succeeds(
    endpoint: FakeEndpoint, models: list[OpenAIModel]
) -> None:
    endpoint.replies.extend(
        [
            Failure(status=503, body='{"error": {"message": "overloaded"}}'),
            Failure(status=503, body="upstream down"),
            Stream(chunks=[*text_chunks(SUMMARY), finish("stop")]),
        ]
    )
    model = make_model(endpoint)
    models.append(model)
    async with asyncio.timeout(WAIT):
        turn = await model.next_turn(PROMPT, [])
    assert turn == Turn(text=SUMMARY)
    assert len(endpoint.requests) == 3


async def test_retry_after_is_honoured_and_capped(
    endpoint: FakeEndpoint, models: list[OpenAIModel]
) -> None:
    endpoint.replies.extend(
        [
            Failure(status=429, body="slow down", headers={"Retry-After": "0.002"}),
            Failure(status=429, body="slow down", headers={"Retry-After": "30"}),
            Stream(chunks=[*text_chunks(SUMMARY), finish("stop")]),
        ]
    )
    slept: list[float] = []

    async def record_sleep(delay: float) -> None:
        slept.append(delay)

    config = OpenAIConfig(
        base_url=endpoint.base_url, api_key=KEY, model="gpt-test", max_backoff=0.01
    )
    model = OpenAIModel(config, sleep=record_sleep)
    models.append(model)
    async with asyncio.timeout(WAIT):
        turn = await model.next_turn(PROMPT, [])
    assert turn.text == SUMMARY
    assert slept == [0.002, 0.01]


async def test_gives_up_after_max_attempts_of_server_errors(
    endpoint: FakeEndpoint, models: list[OpenAIModel]
) -> None:
    endpoint.replies.extend(Failure(status=500, body="boom") for _ in range(3))
    model = make_model(endpoint, max_attempts=3)
    models.append(model)
    with pytest.raises(ModelError) as caught:
        async with asyncio.timeout(WAIT):
            await model.next_turn(PROMPT, [])
    assert caught.value.retryable
    assert caught.value.status == 500
    assert "boom" in str(caught.value)
    assert len(endpoint.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 403])
async def test_client_errors_fail_at_once_with_the_servers_message(
    endpoint: FakeEndpoint, models: list[OpenAIModel], status: int
) -> None:
    message = "Incorrect API key provided: sk-test-***"
    endpoint.replies.append(
        Failure(status=status, body=json.dumps({"error": {"message": message}}))
    )
    model = make_model(endpoint)
    models.append(model)
    with pytest.raises(ModelError) as caught:
        async with asyncio.timeout(WAIT):
            await model.next_turn(PROMPT, [])
    assert caught.value.retryable is False
    assert caught.value.status == status
    assert message in str(caught.value)
    assert len(endpoint.requests) == 1


async def test_a_silent_server_times_out_every_attempt(
    endpoint: FakeEndpoint, models: list[OpenAIModel]
) -> None:
    endpoint.replies.extend(Silence() for _ in range(2))
    model = make_model(endpoint, timeout=0.5, max_attempts=2)
    models.append(model)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ModelError) as caught:
        async with asyncio.timeout(WAIT):
            await model.next_turn(PROMPT, [])
    elapsed = loop.time() - started
    assert caught.value.retryable
    assert "timed out" in str(caught.value)
    assert len(endpoint.requests) == 2
    assert 0.9 <= elapsed < 3.0


async def test_invalid_json_arguments_fail_the_turn_without_retrying(
    endpoint: FakeEndpoint, models: list[OpenAIModel]
) -> None:
    broken = [
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_x",
                        "type": "function",
                        "function": {"name": WRITE_FILE, "arguments": '{"path": "index.html", '},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"content": <html>'}}]}),
        finish("tool_calls"),
    ]
    endpoint.replies.append(Stream(chunks=broken))
    model = make_model(endpoint)
    models.append(model)
    with pytest.raises(ModelError) as caught:
        async with asyncio.timeout(WAIT):
            await model.next_turn(PROMPT, [])
    assert caught.value.retryable is False
    assert WRITE_FILE in str(caught.value)
    assert "not valid JSON" in str(caught.value)
    assert len(endpoint.requests) == 1


async def test_a_stream_cut_short_is_retried(
    endpoint: FakeEndpoint, models: list[OpenAIModel]
) -> None:
    # No finish_reason and no [DONE]: the first answer is incomplete.
    cut = Failure(status=200, body=f"data: {json.dumps(chunk({'content': 'Half'}))}\n\n")
    endpoint.replies.extend([cut, Stream(chunks=[*text_chunks(SUMMARY), finish("stop")])])
    config = OpenAIConfig(
        base_url=endpoint.base_url, api_key=KEY, model="gpt-test", initial_backoff=0.001
    )
    model = OpenAIModel(config)
    models.append(model)
    async with asyncio.timeout(WAIT):
        turn = await model.next_turn(PROMPT, [])
    assert turn == Turn(text=SUMMARY)
    assert len(endpoint.requests) == 2


@pytest.mark.parametrize("attempt, ceiling", [(1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (9, 8.0)])
def test_backoff_is_full_jitter_under_a_capped_doubling(attempt: int, ceiling: float) -> None:
    assert backoff_delay(attempt, initial=0.5, maximum=8.0, uniform=lambda a, b: b) == ceiling
    assert backoff_delay(attempt, initial=0.5, maximum=8.0, uniform=lambda a, b: a) == 0.0


@pytest.mark.parametrize(
    "header, expected",
    [
        ("2", 2.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("Thu, 01 Jan 1970 00:00:10 GMT", 5.0),
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after_parsing(header: str | None, expected: float | None) -> None:
    assert retry_after_seconds(header, now=5.0) == expected
