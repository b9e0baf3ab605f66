"""The `openai` model against a loopback server that speaks the streaming chat-completions format.

The fake endpoint answers each request with the next scripted reply: a stream of chunks, an
HTTP error, or silence. It records every request so the tests can check what was sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from appforge.services.builder.models.base import (
    LIST_FILES,
    TOOL_SCHEMAS,
    WRITE_FILE,
    Exchange,
    ModelError,
    ToolResult,
    Turn,
)
from appforge.services.builder.models.openai import (
    OpenAIConfig,
    OpenAIModel,
    retry_after_seconds,
)
from appforge.services.common.retry import backoff_delay
from tests.openai_endpoint import (
    APP_ARGS,
    INDEX_ARGS,
    LOGIC,
    PLAN,
    STYLES_ARGS,
    SUMMARY,
    Failure,
    FakeEndpoint,
    Silence,
    Stream,
    calculator_replies,
    chunk,
    finish,
    serving,
    split,
    text_chunks,
)

WAIT = 5.0
KEY = "sk-test-123"
PROMPT = "build a calculator"


@pytest.fixture
async def endpoint() -> AsyncIterator[FakeEndpoint]:
    async with serving(FakeEndpoint(replies=[])) as fake:
        yield fake


def make_model(endpoint: FakeEndpoint, **overrides: Any) -> OpenAIModel:
    settings: dict[str, Any] = {"initial_backoff": 0.001, "max_backoff": 0.01, **overrides}
    config = OpenAIConfig(base_url=endpoint.base_url, api_key=KEY, model="gpt-test", **settings)
    return OpenAIModel(config)


@pytest.fixture
async def models() -> AsyncIterator[list[OpenAIModel]]:
    """Models to close after the test."""
    opened: list[OpenAIModel] = []
    yield opened
    for model in opened:
        await model.close()


def written(path: str, content: str) -> dict[str, Any]:
    return {"path": path, "size": len(content.encode())}


# --- the tests ---------------------------------------------------------------------------


async def test_builds_the_calculator_from_streamed_chunks(
    endpoint: FakeEndpoint, models: list[OpenAIModel]
) -> None:
    endpoint.replies.extend(calculator_replies())
    deltas: list[str] = []

    async def on_text(delta: str) -> None:
        deltas.append(delta)

    model = make_model(endpoint)
    models.append(model)
    assert model.name == "openai"

    async with asyncio.timeout(WAIT):
        first = await model.next_turn(PROMPT, [], on_text=on_text)
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
