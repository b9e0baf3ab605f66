"""Incoming deadlines reach outgoing calls: the server's wrapper records what is left of the
caller's deadline, an outgoing call's timeout is the smaller of its own and that, a call
whose caller already gave up is not made, and work that outlives its RPC is not bound."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import grpc
import pytest

from appforge.api.chat.v1 import chat_pb2
from appforge.services.builder.clients import GrpcChat, RetryPolicy
from appforge.services.common import deadlines
from appforge.services.common.errors import DeadlineExceeded
from appforge.services.common.server import Context, _wrap_unary

WIRE_SLACK_S = 0.05  # what a deadline may gain between the client's clock and the server's


def test_no_incoming_deadline_leaves_the_calls_own_timeout() -> None:
    assert deadlines.remaining() is None
    assert deadlines.bounded(30.0) == 30.0


def test_a_sooner_incoming_deadline_bounds_the_call() -> None:
    with deadlines.serving(2.0):
        assert 1.5 < deadlines.bounded(30.0) <= 2.0
        assert deadlines.bounded(0.5) == 0.5  # the call's own bound is sooner
    assert deadlines.remaining() is None  # restored after the block


def test_a_passed_deadline_makes_no_call() -> None:
    with deadlines.serving(-0.1), pytest.raises(DeadlineExceeded):
        deadlines.bounded(10.0)


async def test_work_detached_from_the_rpc_is_not_bound_by_it() -> None:
    with deadlines.serving(2.0):
        inherited = await asyncio.create_task(_remaining())
        detached = await asyncio.create_task(_remaining(), context=deadlines.detached())
    assert inherited is not None and detached is None


async def _remaining() -> float | None:
    return deadlines.remaining()


class DeadlineContext:
    def __init__(self, remaining: float | None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AssertionError(f"aborted: {code} {details}")


async def test_the_server_wrapper_records_the_callers_deadline() -> None:
    async def handler(request: Any, context: Any) -> float | None:
        return deadlines.remaining()

    seen = await _wrap_unary("/m", handler)(None, cast(Context, DeadlineContext(3.0)))
    assert seen is not None and 2.5 < seen <= 3.0
    assert await _wrap_unary("/m", handler)(None, cast(Context, DeadlineContext(None))) is None


class RecordingChat:
    """A chat that answers PostUserMessage and records the deadline each call came with."""

    def __init__(self) -> None:
        self.remaining: list[float | None] = []

    async def post(self, request: chat_pb2.PostUserMessageRequest, context: Any) -> Any:
        self.remaining.append(context.time_remaining())
        return chat_pb2.ChatMessage(id="m", app_id=request.app_id, content=request.content)

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        post = grpc.unary_unary_rpc_method_handler(
            self.post,
            request_deserializer=chat_pb2.PostUserMessageRequest.FromString,
            response_serializer=chat_pb2.ChatMessage.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(
            "appforge.chat.v1.ChatService", {"PostUserMessage": post}
        )


async def test_the_builders_call_to_chat_carries_the_sooner_deadline() -> None:
    recording = RecordingChat()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((recording.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = GrpcChat(f"127.0.0.1:{port}", RetryPolicy(timeout=30.0))
    try:
        with deadlines.serving(1.5):
            await client.post_user_message(app_id="a", content="hi", request_id="")
        await client.post_user_message(app_id="a", content="hi", request_id="")
    finally:
        await client.close()
        await server.stop(None)
    bounded, unbounded = recording.remaining
    # The serving deadline's 1.5 s, not the policy's 30: gRPC sends the timeout rounded up on
    # the wire and the server reads it against another clock, so a few ms over is the same.
    assert bounded is not None and bounded <= 1.5 + WIRE_SLACK_S
    assert unbounded is not None and unbounded > 20.0
