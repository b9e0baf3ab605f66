"""Chat domain validation: every rejection has the right exception type and field."""

from __future__ import annotations

import math
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
    ItemKind,
    Message,
    MessageStatus,
    Role,
    ToolCall,
)
from appforge.services.chat.service import ChatService
from appforge.services.chat.store import MessageStore
from appforge.services.chat.validation import (
    check_size,
    json_safe,
    optional_id,
    require_id,
    require_name,
    validate_upsert,
    validate_user_content,
)
from appforge.services.common.bus import InProcessBus
from appforge.services.common.errors import AppforgeError, InvalidArgument, LimitExceeded
from appforge.services.common.server import grpc_status
from appforge.services.common.settings import Limits, Settings

LIMITS = Limits()
MAX_ID = LIMITS.max_id_length
CODEC = ProtoChangeCodec()


def text(seq: int, body: str = "hi", stamp: int | None = None) -> FlowItem:
    return FlowItem(seq=seq, kind=ItemKind.MESSAGE, text=body, timestamp_us=stamp)


def tools(seq: int, *calls: ToolCall) -> FlowItem:
    return FlowItem(seq=seq, kind=ItemKind.TOOLS, calls=calls)


def call(call_id: str = "c1", **fields: Any) -> ToolCall:
    return ToolCall(call_id=call_id, **fields)


def upsert(**fields: Any) -> AssistantUpsert:
    return AssistantUpsert(**{"app_id": "app-1", "execution_id": "exec-1", **fields})


# --- the README's "Limits and errors" table, enforced at each boundary ----------------------


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

    async def upsert_assistant(self, upsert: AssistantUpsert) -> tuple[Message, bool]:
        return self._message(), False

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


# --- ids and names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("a", id="one-char"),
        pytest.param("x" * MAX_ID, id="at-limit"),
        pytest.param("0b6f3c1e-6a1d-4f5e-9a57-0c3b6b9e7f21", id="uuid"),
        pytest.param("team a", id="inner-space"),
        pytest.param("équipe-ü", id="non-ascii"),
    ],
)
def test_require_id_accepts(value: str) -> None:
    assert require_id(value, "app_id", LIMITS) == value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("x" * (MAX_ID + 1), id="over-limit"),
        pytest.param(" app", id="leading-space"),
        pytest.param("app ", id="trailing-space"),
        pytest.param("app\n", id="trailing-newline"),
        pytest.param("\tapp", id="leading-tab"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a\x1bb", id="escape"),
        pytest.param("a\u200bb", id="zero-width-space"),
        pytest.param(" ", id="blank"),
    ],
)
def test_require_id_rejects(value: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        require_id(value, "execution_id", LIMITS)
    assert type(raised.value) is InvalidArgument
    assert raised.value.field == "execution_id"


def test_require_id_respects_the_configured_limit() -> None:
    small = Limits(max_id_length=4)
    assert require_id("abcd", "app_id", small) == "abcd"
    with pytest.raises(InvalidArgument) as raised:
        require_id("abcde", "app_id", small)
    assert raised.value.field == "app_id"
    assert str(raised.value) == "app_id: must be at most 4 characters, got 5"


@pytest.mark.parametrize(
    ("value", "expected"),
    [pytest.param("", None, id="empty-is-absent"), pytest.param("req-1", "req-1", id="given")],
)
def test_optional_id(value: str, expected: str | None) -> None:
    assert optional_id(value, "request_id", LIMITS) == expected


@pytest.mark.parametrize(
    "value", [" req", "r" * (MAX_ID + 1), "r\x00"], ids=["space", "over-limit", "control"]
)
def test_optional_id_rejects_a_bad_given_id(value: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        optional_id(value, "request_id", LIMITS)
    assert raised.value.field == "request_id"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("Calculator", "Calculator", id="plain"),
        pytest.param("  Calculator \n", "Calculator", id="stripped"),
        pytest.param("n" * LIMITS.max_name_length, "n" * LIMITS.max_name_length, id="at-limit"),
    ],
)
def test_require_name_accepts(value: str, expected: str) -> None:
    assert require_name(value, "name", LIMITS) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param(" \t\n", id="blank"),
        pytest.param("n" * (LIMITS.max_name_length + 1), id="over-limit"),
    ],
)
def test_require_name_rejects(value: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        require_name(value, "name", LIMITS)
    assert type(raised.value) is InvalidArgument
    assert raised.value.field == "name"


# --- sizes and user content ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "limit", "too_big"),
    [
        pytest.param("", 0, False, id="empty-zero-limit"),
        pytest.param("abcd", 4, False, id="ascii-at-limit"),
        pytest.param("abcde", 4, True, id="ascii-over-limit"),
        pytest.param("éé", 4, False, id="utf8-at-limit"),
        pytest.param("ééa", 4, True, id="utf8-counts-bytes-not-characters"),
        pytest.param("€", 2, True, id="three-byte-char"),
    ],
)
def test_check_size_counts_utf8_bytes(value: str, limit: int, too_big: bool) -> None:
    if not too_big:
        check_size(value, "items[0].message.text", limit)
        return
    with pytest.raises(LimitExceeded) as raised:
        check_size(value, "items[0].message.text", limit)
    assert raised.value.field == "items[0].message.text"
    assert isinstance(raised.value, InvalidArgument)


def test_validate_user_content_accepts_content_at_the_limit() -> None:
    content = "x" * LIMITS.max_user_content_bytes
    assert validate_user_content(content, LIMITS) is content


@pytest.mark.parametrize(
    ("content", "error"),
    [
        pytest.param("", InvalidArgument, id="empty"),
        pytest.param("  \n\t", InvalidArgument, id="blank"),
        pytest.param("x" * (LIMITS.max_user_content_bytes + 1), LimitExceeded, id="too-big"),
        pytest.param(
            "é" * (LIMITS.max_user_content_bytes // 2 + 1), LimitExceeded, id="too-many-bytes"
        ),
    ],
)
def test_validate_user_content_rejects(content: str, error: type[InvalidArgument]) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_user_content(content, LIMITS)
    assert type(raised.value) is error
    assert raised.value.field == "content"


# --- json_safe -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"a": 1, "b": [1.5, "x", None, True], "c": {"d": -0.0}}, id="nested"),
        pytest.param({}, id="empty"),
        pytest.param("plain", id="scalar"),
        pytest.param(1e308, id="huge-but-finite"),
    ],
)
def test_json_safe_passes_finite_values_through(value: Any) -> None:
    assert json_safe(value) == value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(math.nan, id="nan"),
        pytest.param({"x": math.inf}, id="inf-in-dict"),
        pytest.param({"x": [1.0, -math.inf]}, id="minus-inf-in-list"),
        pytest.param({"a": {"b": [{"c": math.nan}]}}, id="deeply-nested-nan"),
    ],
)
def test_json_safe_rejects_non_finite_numbers(value: Any) -> None:
    with pytest.raises(InvalidArgument) as raised:
        json_safe(value)
    assert type(raised.value) is InvalidArgument
    assert raised.value.field == "metadata"


# --- validate_upsert -----------------------------------------------------------------------


def _over(limit: int) -> str:
    return "x" * (limit + 1)


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(upsert(), id="nothing-but-ids"),
        pytest.param(upsert(items=(text(1), tools(2, call("a"), call("b")))), id="items"),
        pytest.param(upsert(items=(tools(2, call("a")), tools(2, call("a")))), id="call-repeated"),
        pytest.param(upsert(items=(text(1, stamp=1),)), id="stamp-just-after-epoch"),
        pytest.param(
            upsert(items=tuple(text(n) for n in range(1, LIMITS.max_items_per_upsert + 1))),
            id="items-at-limit",
        ),
        pytest.param(
            upsert(items=(tools(1, *(call(f"c{n}") for n in range(LIMITS.max_calls_per_batch))),)),
            id="calls-at-limit",
        ),
        pytest.param(upsert(items=(text(1, "x" * LIMITS.max_text_bytes),)), id="text-at-limit"),
        pytest.param(upsert(metadata={"error": "Deployment timeout"}), id="metadata"),
    ],
)
def test_validate_upsert_accepts(request_: AssistantUpsert) -> None:
    assert validate_upsert(request_, LIMITS) is request_


CALL0 = "items[0].tools.calls[0]"


@pytest.mark.parametrize(
    ("request_", "error", "field"),
    [
        pytest.param(upsert(app_id=""), InvalidArgument, "app_id", id="empty-app-id"),
        pytest.param(upsert(app_id=_over(MAX_ID)), InvalidArgument, "app_id", id="long-app-id"),
        pytest.param(upsert(execution_id=""), InvalidArgument, "execution_id", id="empty-exec"),
        pytest.param(
            upsert(execution_id=" exec-1"), InvalidArgument, "execution_id", id="padded-exec"
        ),
        pytest.param(
            upsert(execution_id="exec\x07"), InvalidArgument, "execution_id", id="control-exec"
        ),
        pytest.param(
            upsert(execution_id=_over(MAX_ID)), InvalidArgument, "execution_id", id="long-exec"
        ),
        pytest.param(upsert(items=(text(0),)), InvalidArgument, "items[0].seq", id="seq-zero"),
        pytest.param(
            upsert(items=(text(1), text(-3))), InvalidArgument, "items[1].seq", id="seq-negative"
        ),
        pytest.param(
            upsert(items=(text(1, stamp=0),)),
            InvalidArgument,
            "items[0].timestamp",
            id="stamp-at-epoch",
        ),
        pytest.param(
            upsert(items=tuple(text(n) for n in range(1, LIMITS.max_items_per_upsert + 2))),
            LimitExceeded,
            "items",
            id="too-many-items",
        ),
        pytest.param(
            upsert(
                items=(
                    text(1),
                    tools(2, *(call(f"c{n}") for n in range(LIMITS.max_calls_per_batch + 1))),
                )
            ),
            LimitExceeded,
            "items[1].tools.calls",
            id="too-many-calls",
        ),
        pytest.param(
            upsert(items=(text(1, _over(LIMITS.max_text_bytes)),)),
            LimitExceeded,
            "items[0].message.text",
            id="text-too-big",
        ),
        pytest.param(
            upsert(items=(tools(1, call("")),)), InvalidArgument, f"{CALL0}.call_id", id="no-id"
        ),
        pytest.param(
            upsert(items=(tools(1, call("a"), call(_over(MAX_ID))),)),
            InvalidArgument,
            "items[0].tools.calls[1].call_id",
            id="long-call-id",
        ),
        pytest.param(
            upsert(items=(tools(1, call("a")), tools(2, call("a")))),
            InvalidArgument,
            "items[1].tools.calls[0].call_id",
            id="call-under-two-seqs",
        ),
        pytest.param(
            upsert(items=(tools(1, call(name=_over(LIMITS.max_name_length))),)),
            InvalidArgument,
            f"{CALL0}.name",
            id="long-call-name",
        ),
        pytest.param(
            upsert(items=(tools(1, call(arguments_json=_over(LIMITS.max_json_bytes))),)),
            LimitExceeded,
            f"{CALL0}.arguments_json",
            id="arguments-too-big",
        ),
        pytest.param(
            upsert(items=(tools(1, call(result_json=_over(LIMITS.max_json_bytes))),)),
            LimitExceeded,
            f"{CALL0}.result_json",
            id="result-too-big",
        ),
        pytest.param(
            upsert(items=(tools(1, call(error=_over(LIMITS.max_json_bytes))),)),
            LimitExceeded,
            f"{CALL0}.error",
            id="error-too-big",
        ),
        pytest.param(
            upsert(metadata={"log": _over(LIMITS.max_metadata_bytes)}),
            LimitExceeded,
            "metadata",
            id="metadata-too-big",
        ),
    ],
)
def test_validate_upsert_rejects(
    request_: AssistantUpsert, error: type[InvalidArgument], field: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_upsert(request_, LIMITS)
    assert type(raised.value) is error
    assert raised.value.field == field


def test_validate_upsert_reports_the_first_problem() -> None:
    request_ = upsert(app_id="", execution_id="", items=(text(0),))
    with pytest.raises(InvalidArgument) as raised:
        validate_upsert(request_, LIMITS)
    assert raised.value.field == "app_id"


def test_limit_exceeded_message_names_field_and_limit() -> None:
    with pytest.raises(LimitExceeded) as raised:
        validate_upsert(upsert(items=(text(1, "x" * 11),)), Limits(max_text_bytes=10))
    assert str(raised.value) == "items[0].message.text: is 11 bytes; the limit is 10 bytes"


def test_validate_upsert_rejects_nan_metadata_as_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_upsert(upsert(metadata={"progress": math.nan}), LIMITS)
    assert raised.value.field == "metadata"
