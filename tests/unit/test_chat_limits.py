"""The README's "Limits and errors" table, enforced at each ChatService boundary: what is
within a limit reaches the store, what is past it is refused with INVALID_ARGUMENT naming
the field."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import grpc
import pytest

from appforge.services.chat.convert import ProtoChangeCodec
from appforge.services.chat.domain import (
    App,
    AssistantUpsert,
    FlowItem,
    Message,
    MessageStatus,
    MessageView,
    Role,
    UpsertResult,
)
from appforge.services.chat.service import ChatService
from appforge.services.chat.store import MessageStore
from appforge.services.common.bus import InProcessBus
from appforge.services.common.errors import AppforgeError
from appforge.services.common.server import grpc_status
from appforge.services.common.settings import Settings
from tests.unit.chat_values import call, text, tools, upsert

CODEC = ProtoChangeCodec()


class AcceptingStore:
    """Stands in for the database: takes whatever the service lets through, and counts it."""

    def __init__(self) -> None:
        self.reached = 0

    def _message(self) -> Message:
        self.reached += 1
        return Message(
            id="msg-1",
            app_id="app-1",
            role=Role.USER,
            execution_id=None,
            content="hi",
            status=MessageStatus.COMPLETED,
            metadata={},
            version=1,
            created_us=1,
            updated_us=1,
            cursor=1,
        )

    async def create_app(self, team_id: str, name: str, *, return_existing: bool = False) -> App:
        self.reached += 1
        return App(id="app-1", team_id=team_id, name=name, created_us=1)

    async def get_app(self, app_id: str) -> App:
        self.reached += 1
        return App(id=app_id, team_id="team", name="app", created_us=1)

    async def post_user_message(self, *args: Any) -> tuple[Message, bool]:
        return self._message(), False  # nothing new: nothing to publish

    async def upsert_assistant(self, upsert: AssistantUpsert, view: MessageView) -> UpsertResult:
        return UpsertResult(message=self._message(), delta=None)

    async def get_message(self, message_id: str) -> Message:
        return self._message()

    async def get_message_by_execution(self, execution_id: str) -> Message:
        return self._message()

    async def list_messages(self, *args: Any) -> list[Message]:
        self.reached += 1
        return []


KIB = 1024
Request = Callable[[ChatService, int], Awaitable[object]]


def sized_metadata(size: int) -> dict[str, str]:
    """Metadata whose compact JSON encoding is exactly `size` bytes."""
    return {"k": "x" * (size - len('{"k":""}'))}


def upsert_of(service: ChatService, **fields: Any) -> Awaitable[object]:
    return service.upsert_assistant(upsert(**fields))


def one_call(**fields: Any) -> tuple[FlowItem, ...]:
    return (tools(1, call(**fields)),)


@dataclass(frozen=True, kw_only=True)
class Boundary:
    """One row of the table: a request whose checked value has a given size."""

    field: str
    largest: int
    request: Request
    smallest: int | None = None


# The numbers are the README's, not `Limits()`: a default drifting from the documentation
# fails here.
BOUNDARIES = {
    "team_id": Boundary(
        field="team_id",
        largest=128,
        smallest=1,
        request=lambda s, n: s.create_app("t" * n, "Calculator"),
    ),
    "app_id-of-a-user-message": Boundary(
        field="app_id",
        largest=128,
        smallest=1,
        request=lambda s, n: s.post_user_message("a" * n, "hi", ""),
    ),
    "app_id-of-an-upsert": Boundary(
        field="app_id", largest=128, smallest=1, request=lambda s, n: upsert_of(s, app_id="a" * n)
    ),
    "app_id-of-a-list": Boundary(
        field="app_id",
        largest=128,
        smallest=1,
        request=lambda s, n: s.list_messages("a" * n, 0, ""),
    ),
    "execution_id-of-an-upsert": Boundary(
        field="execution_id",
        largest=128,
        smallest=1,
        request=lambda s, n: upsert_of(s, execution_id="e" * n),
    ),
    "execution_id-of-a-read": Boundary(
        field="execution_id",
        largest=128,
        smallest=1,
        request=lambda s, n: s.get_message_by_execution("e" * n),
    ),
    "message_id": Boundary(
        field="message_id", largest=128, smallest=1, request=lambda s, n: s.get_message("m" * n)
    ),
    # An empty request_id means "none given", so only the upper bound applies.
    "request_id": Boundary(
        field="request_id",
        largest=128,
        request=lambda s, n: s.post_user_message("a", "hi", "r" * n),
    ),
    "call_id": Boundary(
        field="items[0].tools.calls[0].call_id",
        largest=128,
        smallest=1,
        request=lambda s, n: upsert_of(s, items=one_call(call_id="c" * n)),
    ),
    "app-name": Boundary(
        field="name", largest=200, smallest=1, request=lambda s, n: s.create_app("team", "n" * n)
    ),
    "tool-name": Boundary(
        field="items[0].tools.calls[0].name",
        largest=200,
        request=lambda s, n: upsert_of(s, items=one_call(name="n" * n)),
    ),
    "user-content": Boundary(
        field="content",
        largest=64 * KIB,
        smallest=1,
        request=lambda s, n: s.post_user_message("a", "x" * n, ""),
    ),
    "text-of-an-item": Boundary(
        field="items[0].message.text",
        largest=256 * KIB,
        request=lambda s, n: upsert_of(s, items=(text(1, "x" * n),)),
    ),
    "items-per-upsert": Boundary(
        field="items",
        largest=500,
        request=lambda s, n: upsert_of(s, items=tuple(text(i) for i in range(1, n + 1))),
    ),
    "calls-per-tools-item": Boundary(
        field="items[0].tools.calls",
        largest=100,
        request=lambda s, n: upsert_of(s, items=(tools(1, *(call(f"c{i}") for i in range(n))),)),
    ),
    "arguments_json": Boundary(
        field="items[0].tools.calls[0].arguments_json",
        largest=256 * KIB,
        request=lambda s, n: upsert_of(s, items=one_call(arguments_json="x" * n)),
    ),
    "result_json": Boundary(
        field="items[0].tools.calls[0].result_json",
        largest=256 * KIB,
        request=lambda s, n: upsert_of(s, items=one_call(result_json="x" * n)),
    ),
    "error": Boundary(
        field="items[0].tools.calls[0].error",
        largest=256 * KIB,
        request=lambda s, n: upsert_of(s, items=one_call(error="x" * n)),
    ),
    "metadata": Boundary(
        field="metadata",
        largest=64 * KIB,
        request=lambda s, n: upsert_of(s, metadata=sized_metadata(n)),
    ),
    "page_size": Boundary(
        field="page_size", largest=500, smallest=0, request=lambda s, n: s.list_messages("a", n, "")
    ),
}


async def assert_refused(service: ChatService, case: Boundary, size: int) -> None:
    """`size` is refused with INVALID_ARGUMENT, its details naming the field first."""
    with pytest.raises(AppforgeError) as raised:
        await case.request(service, size)
    code, details = grpc_status(raised.value)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.field == case.field
    assert details.startswith(f"{case.field}: ")


@pytest.mark.parametrize("case", BOUNDARIES.values(), ids=BOUNDARIES.keys())
async def test_each_documented_limit_is_enforced_at_its_boundary(case: Boundary) -> None:
    store = AcceptingStore()
    service = ChatService(cast(MessageStore, store), InProcessBus(), Settings(), changes=CODEC)
    sizes = [case.largest] if case.smallest is None else [case.smallest, case.largest]
    for size in sizes:
        await case.request(service, size)
    assert store.reached == len(sizes)  # what is within the limits reaches the store
    await assert_refused(service, case, case.largest + 1)
    if case.smallest is not None:
        await assert_refused(service, case, case.smallest - 1)
    assert store.reached == len(sizes)  # what is refused never does
