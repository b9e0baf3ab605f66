"""Domain errors to gRPC status codes, in the one place that maps them."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any, cast

import grpc
import pytest

from appforge.services.common.errors import (
    AlreadyExists,
    AppforgeError,
    ConfigError,
    DeadlineExceeded,
    ErrorKind,
    FailedPrecondition,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    Unavailable,
)
from appforge.services.common.server import (
    Context,
    GrpcServer,
    _wrap_unary,
    grpc_status,
    run_until_signalled,
)


class ResourceExhausted(AppforgeError):
    kind = ErrorKind.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    ("error", "code"),
    [
        pytest.param(InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT, id="invalid-argument"),
        pytest.param(LimitExceeded, grpc.StatusCode.INVALID_ARGUMENT, id="limit-exceeded"),
        pytest.param(ConfigError, grpc.StatusCode.INVALID_ARGUMENT, id="config-error"),
        pytest.param(NotFound, grpc.StatusCode.NOT_FOUND, id="not-found"),
        pytest.param(AlreadyExists, grpc.StatusCode.ALREADY_EXISTS, id="already-exists"),
        pytest.param(
            FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION, id="failed-precondition"
        ),
        pytest.param(ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED, id="exhausted"),
        pytest.param(DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED, id="deadline"),
        pytest.param(Unavailable, grpc.StatusCode.UNAVAILABLE, id="unavailable"),
        pytest.param(AppforgeError, grpc.StatusCode.INTERNAL, id="root-is-internal"),
    ],
)
def test_grpc_status_maps_each_error_and_names_the_field(
    error: type[AppforgeError], code: grpc.StatusCode
) -> None:
    assert grpc_status(error("must not be empty", field="app_id")) == (
        code,
        "app_id: must not be empty",
    )


def test_grpc_status_details_without_a_field_are_the_message() -> None:
    assert grpc_status(NotFound("no such message")) == (
        grpc.StatusCode.NOT_FOUND,
        "no such message",
    )


@pytest.mark.parametrize("kind", list(ErrorKind), ids=lambda k: k.value)
def test_every_error_kind_has_the_status_code_of_the_same_name(kind: ErrorKind) -> None:
    error = AppforgeError("boom", field="f")
    error.kind = kind
    code, details = grpc_status(error)
    assert code is grpc.StatusCode[kind.name]
    assert details == "f: boom"


class FakeContext:
    """Just enough of grpc.aio.ServicerContext: `abort` records and raises like grpc."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise grpc.aio.AbortError()

    def time_remaining(self) -> float | None:
        return None  # the caller set no deadline

    def typed(self) -> Context:
        return cast(Context, self)


async def test_unary_wrapper_aborts_with_the_mapped_status() -> None:
    async def handler(request: Any, context: Any) -> Any:
        raise InvalidArgument("must be at least 1, got 0", field="items[0].seq")

    context = FakeContext()
    with pytest.raises(grpc.aio.AbortError):
        await _wrap_unary("/appforge.chat.v1.ChatService/Upsert", handler)(None, context.typed())
    assert context.aborted == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "items[0].seq: must be at least 1, got 0",
    )


async def test_unary_wrapper_hides_unexpected_errors_behind_internal() -> None:
    async def handler(request: Any, context: Any) -> Any:
        raise KeyError("secret detail")

    context = FakeContext()
    with pytest.raises(grpc.aio.AbortError):
        await _wrap_unary("/appforge.chat.v1.ChatService/Get", handler)(None, context.typed())
    assert context.aborted == (grpc.StatusCode.INTERNAL, "internal error")


async def test_unary_wrapper_passes_the_response_through() -> None:
    async def handler(request: Any, context: Any) -> Any:
        return ("echo", request)

    context = FakeContext()
    assert await _wrap_unary("/m", handler)("hi", context.typed()) == ("echo", "hi")
    assert context.aborted is None


class FakeServer:
    """Records starts and stops in a shared journal; each stop takes a loop turn."""

    def __init__(self, name: str, journal: list[str]) -> None:
        self.name = name
        self.address = f"{name}:0"
        self.journal = journal

    async def start(self) -> None:
        self.journal.append(f"start {self.name}")

    async def stop(self) -> None:
        self.journal.append(f"stopping {self.name}")
        await asyncio.sleep(0)  # a concurrent stop of the next server would interleave here
        self.journal.append(f"stopped {self.name}")


async def test_servers_start_in_order_and_stop_one_by_one_in_reverse() -> None:
    journal: list[str] = []
    servers = [FakeServer(name, journal) for name in ("chat", "deployer", "builder")]

    async def cleanup() -> None:
        journal.append("cleanup")

    def ready() -> None:
        journal.append("ready")
        os.kill(os.getpid(), signal.SIGTERM)  # handled by run_until_signalled's handler

    await asyncio.wait_for(
        run_until_signalled(cast(list[GrpcServer], servers), cleanup, ready=ready), 5
    )
    assert journal == [
        "start chat",
        "start deployer",
        "start builder",
        "ready",
        *("stopping builder", "stopped builder"),
        *("stopping deployer", "stopped deployer"),
        *("stopping chat", "stopped chat"),
        "cleanup",
    ]
