"""Every RPC of the three services, fuzzed with requests built from their descriptors.

Hypothesis builds each method's request from its protobuf descriptor: strings that are
ids of real apps and messages, or path-shaped (`..`, `/tmp`, `a/x`), or carry a NUL, or
are huge; integers at their type's limits; enum numbers nobody defined; timestamps outside
0001..9999 and nanos outside 0..999,999,999; nested metadata. Raw bytes that are not the
request at all, and a `Struct` nested past the decoder's depth limit, go too. Whatever the
request, the answer is never INTERNAL or UNKNOWN: bad input is the caller's error and the
status says so. The three services run as their own processes on PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message_factory, struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appforge.api.builder.v1 import builder_pb2
from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.api.deployer.v1 import deployer_pb2
from tests.e2e.golden_stack import StackFactory

# The same examples every run, so CI never fails by chance; APPFORGE_FUZZ_RANDOM=1 and more
# examples explore further.
EXAMPLES = int(os.environ.get("APPFORGE_FUZZ_EXAMPLES", "400"))
RANDOM = bool(os.environ.get("APPFORGE_FUZZ_RANDOM"))
CALL_TIMEOUT_S = 10.0
STREAM_TIMEOUT_S = 1.0  # a stream that is still open after this is waiting: fine
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
SERVICES = [
    chat_pb2.DESCRIPTOR.services_by_name["ChatService"],
    builder_pb2.DESCRIPTOR.services_by_name["BuilderService"],
    deployer_pb2.DESCRIPTOR.services_by_name["DeployerService"],
]
METHODS: list[MethodDescriptor] = [m for s in SERVICES for m in s.methods]
AWKWARD = ["", ".", "..", "/tmp", "a/x", "a\\b", "\x00", "a\x00b", " padded ", "é", "x" * 5000]
INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
MAX_DEPTH = 4


class Requests:
    """Hypothesis strategies for the request messages, from their descriptors; `known`
    holds real ids, so that generated requests reach past the lookups too."""

    def __init__(self, known: list[str]) -> None:
        self.text = st.one_of(
            st.sampled_from(known), st.sampled_from(AWKWARD), st.text(max_size=30)
        )

    def message(self, descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
        cls = message_factory.GetMessageClass(descriptor)
        fields = [f for f in descriptor.fields if depth < MAX_DEPTH or not _nests(f)]
        values = st.fixed_dictionaries({}, optional={f.name: self.field(f, depth) for f in fields})
        return values.map(lambda chosen: _build(cls, descriptor, chosen))

    def field(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        if _is_map(field):
            entry = field.message_type
            assert entry is not None
            key = self.single(entry.fields_by_name["key"], depth + 1)
            value = self.single(entry.fields_by_name["value"], depth + 1)
            return st.dictionaries(key, value, max_size=3)
        single = self.single(field, depth)
        return st.lists(single, max_size=3) if field.is_repeated else single

    def single(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        kind = field.type
        if kind == FieldDescriptor.TYPE_STRING:
            return self.text
        if kind == FieldDescriptor.TYPE_BYTES:
            return st.binary(max_size=64)
        if kind == FieldDescriptor.TYPE_BOOL:
            return st.booleans()
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return st.floats(width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64)
        if kind == FieldDescriptor.TYPE_ENUM:
            assert field.enum_type is not None
            top = max(v.number for v in field.enum_type.values)
            return st.integers(-1, top + 2)
        if kind in INT_RANGES:
            low, high = INT_RANGES[kind]
            return st.one_of(st.sampled_from([low, -1, 0, 1, high]), st.integers(low, high))
        assert field.message_type is not None, field.full_name
        return self.message(field.message_type, depth + 1)


def _nests(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE


def _is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return entry is not None and entry.GetOptions().map_entry


def _build(cls: type[Message], descriptor: Descriptor, chosen: dict[str, Any]) -> Message:
    message = cls()
    for name, value in chosen.items():
        field = descriptor.fields_by_name[name]
        target = getattr(message, name)
        if _is_map(field):
            for key, item in value.items():
                if isinstance(item, Message):
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif field.is_repeated:
            target.extend(value)
        elif isinstance(value, Message):
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def deep_struct(levels: int) -> bytes:
    """A Struct nested `levels` deep, serialised (the decoder stops at 100)."""
    inner = struct_pb2.Struct()
    for _ in range(levels):
        outer = struct_pb2.Struct()
        outer.fields["a"].struct_value.CopyFrom(inner)
        inner = outer
    request = chat_pb2.UpsertAssistantMessageRequest(app_id="a", execution_id="e")
    request.metadata.CopyFrom(inner)
    return request.SerializeToString()


def call(channel: grpc.Channel, method: MethodDescriptor, payload: bytes) -> grpc.StatusCode:
    """The status one raw request ends with (OK for a stream still open after its bound)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path, None, None)(payload, timeout=STREAM_TIMEOUT_S)
            for _ in stream:
                pass
        else:
            channel.unary_unary(path, None, None)(payload, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        if method.server_streaming and code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return grpc.StatusCode.OK
        return code
    return grpc.StatusCode.OK


def fuzz(addresses: dict[str, str], known: list[str]) -> Callable[[], None]:
    requests = Requests(known)
    channels = {name: grpc.insecure_channel(address) for name, address in addresses.items()}

    def channel_for(method: MethodDescriptor) -> grpc.Channel:
        return channels[method.containing_service.name]

    def check(method: MethodDescriptor, payload: bytes, shown: object) -> None:
        code = call(channel_for(method), method, payload)
        assert code not in NEVER, f"{method.full_name} answered {code.name} to {shown!r}"

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=not RANDOM,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def every_rpc(data: st.DataObject) -> None:
        method = data.draw(st.sampled_from(METHODS), label="method")
        if data.draw(st.integers(0, 9), label="raw?") == 0:
            payload = data.draw(st.binary(min_size=1, max_size=64), label="raw bytes")
            check(method, payload, payload)
            return
        request = data.draw(requests.message(method.input_type), label="request")
        check(method, request.SerializeToString(), request)

    def run() -> None:
        try:
            for method in METHODS:  # bytes that are no message, and a too-deep Struct
                check(method, b"\xff\xff\xff", b"\xff\xff\xff")
            upsert = chat_pb2.DESCRIPTOR.services_by_name["ChatService"].methods_by_name[
                "UpsertAssistantMessage"
            ]
            check(upsert, deep_struct(150), "a Struct 150 deep")
            every_rpc()
        finally:
            for channel in channels.values():
                channel.close()

    return run


async def test_no_request_to_any_rpc_answers_internal_or_unknown(
    stacks: StackFactory,
) -> None:
    stack = await stacks.stack()
    async with grpc.aio.insecure_channel(stack.chat.address) as channel:
        chat = chat_pb2_grpc.ChatServiceStub(channel)
        app = await chat.CreateApp(chat_pb2.CreateAppRequest(team_id="fuzz", name="fuzzed"))
        posted = await chat.PostUserMessage(
            chat_pb2.PostUserMessageRequest(app_id=app.id, content="build a calculator")
        )
    known = [app.id, posted.id, "fuzz", str(uuid.uuid4())]
    addresses = {
        "ChatService": stack.chat.address,
        "BuilderService": stack.builder.address,
        "DeployerService": stack.deployer.address,
    }
    await asyncio.to_thread(fuzz(addresses, known))
