"""What every request is checked for at the server's edge, before any handler sees it.

Some requests are valid protobuf that no store can hold, and would otherwise fail deep
inside as INTERNAL: a NUL character (PostgreSQL refuses it in text and JSON) and a
`Timestamp` outside 0001-01-01..9999-12-31 or with nanos outside 0..999,999,999 (the
conversion to a datetime raises). Bytes that are not the method's request at all (or nest
a `Struct` past the decoder's depth limit) never reach a handler either: gRPC would answer
UNKNOWN. All three are INVALID_ARGUMENT here, naming the field, on every backend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from appforge.services.common.errors import InvalidArgument

_TIMESTAMP = timestamp_pb2.Timestamp.DESCRIPTOR.full_name
MIN_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_NANOS = 999_999_999


class Undecodable:
    """What the request deserialiser hands on for bytes it cannot parse: the handler then
    answers INVALID_ARGUMENT (`check_request`) instead of gRPC answering UNKNOWN."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def decoding(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserializer`, answering `Undecodable` instead of raising."""
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError, RecursionError: whatever the parser raises
            return Undecodable(exc)

    return decode


def check_request(request: Any) -> None:
    """Raise InvalidArgument, naming the field, for what no store can hold (see above)."""
    if isinstance(request, Undecodable):
        detail = str(request.error) or type(request.error).__name__
        raise InvalidArgument(f"the request is not this method's request message: {detail}")
    if isinstance(request, Message):
        _check_message(request, "")


def _check_message(message: Message, path: str) -> None:
    if message.DESCRIPTOR.full_name == _TIMESTAMP:
        _check_timestamp(message, path)
        return
    for field, value in message.ListFields():
        name = f"{path}.{field.name}" if path else field.name
        if field.type == FieldDescriptor.TYPE_STRING:
            if field.is_repeated:
                for n, text in enumerate(value):
                    _check_text(text, f"{name}[{n}]")
            else:
                _check_text(value, name)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if _is_map(field):
                _check_map(field, value, name)
            elif field.is_repeated:
                for n, item in enumerate(value):
                    _check_message(item, f"{name}[{n}]")
            else:
                _check_message(value, name)


def _is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return entry is not None and entry.GetOptions().map_entry


def _check_map(field: FieldDescriptor, entries: Any, name: str) -> None:
    assert field.message_type is not None
    value_field = field.message_type.fields_by_name["value"]
    for key, value in entries.items():
        entry = f"{name}[{key!r}]"
        if isinstance(key, str):
            _check_text(key, f"{name} key {key!r}")
        if value_field.type == FieldDescriptor.TYPE_MESSAGE:
            _check_message(value, entry)
        elif value_field.type == FieldDescriptor.TYPE_STRING:
            _check_text(value, entry)


def _check_text(text: str, name: str) -> None:
    if "\x00" in text:
        raise InvalidArgument("must not contain a NUL character", field=name)


def _check_timestamp(stamp: Message, name: str) -> None:
    seconds, nanos = stamp.seconds, stamp.nanos  # type: ignore[attr-defined]
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise InvalidArgument(
            "must lie between 0001-01-01 and 9999-12-31 (seconds "
            f"{MIN_SECONDS}..{MAX_SECONDS}), got seconds {seconds}",
            field=name,
        )
    if not 0 <= nanos <= MAX_NANOS:
        raise InvalidArgument(f"nanos must be 0..{MAX_NANOS}, got {nanos}", field=name)
