"""The server's edge (`edge`): what no store can hold is INVALID_ARGUMENT naming the field,
before any handler runs; and ids are one path component."""

from __future__ import annotations

import pytest
from google.protobuf import struct_pb2

from appforge.api.chat.v1 import chat_pb2
from appforge.api.deployer.v1 import deployer_pb2
from appforge.api.flow.v1 import flow_pb2
from appforge.services.common import edge
from appforge.services.common.errors import InvalidArgument
from appforge.services.common.settings import Limits
from appforge.services.common.validation import require_id


def refused(request: object) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as err:
        edge.check_request(request)
    return err.value


def test_a_nul_anywhere_is_refused_naming_the_field() -> None:
    assert refused(chat_pb2.CreateAppRequest(team_id="t", name="calc\x00")).field == "name"
    request = chat_pb2.UpsertAssistantMessageRequest(app_id="a", execution_id="e")
    request.items.add(seq=1).message.text = "ok"
    request.items.add(seq=2).tools.calls.add(call_id="c", arguments_json='{"a":"\x00"}')
    assert refused(request).field == "items[1].tools.calls[0].arguments_json"
    request = chat_pb2.UpsertAssistantMessageRequest(app_id="a", execution_id="e")
    request.metadata.update({"outer": {"inner": ["fine", "bad\x00"]}})
    error = refused(request)
    assert error.field is not None and error.field.startswith("metadata.fields['outer']")
    request = chat_pb2.UpsertAssistantMessageRequest(app_id="a", execution_id="e")
    request.metadata.update({"key\x00": 1})
    assert "key" in (refused(request).field or "")


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(0, -1), (0, 1_000_000_000), (253_402_300_800, 0), (-62_135_596_801, 0)],
)
def test_a_timestamp_protobuf_cannot_represent_is_refused(seconds: int, nanos: int) -> None:
    request = chat_pb2.UpsertAssistantMessageRequest(app_id="a", execution_id="e")
    item = request.items.add(seq=1)
    item.message.text = "hi"
    item.timestamp.seconds, item.timestamp.nanos = seconds, nanos
    assert refused(request).field == "items[0].timestamp"


def test_what_a_store_can_hold_passes() -> None:
    request = chat_pb2.UpsertAssistantMessageRequest(app_id="a", execution_id="e")
    item = request.items.add(seq=1, message=flow_pb2.TextPart(text="é ✓ \t\n"))
    item.timestamp.seconds, item.timestamp.nanos = 253_402_300_799, 999_999_999
    request.metadata.update({"progress": 0.5, "list": [1, "two", None]})
    edge.check_request(request)
    edge.check_request(deployer_pb2.DeployRequest(app_id="a"))  # bytes are not text


def test_bytes_that_are_not_the_request_are_refused() -> None:
    decode = edge.decoding(chat_pb2.CreateAppRequest.FromString)
    assert decode is not None
    assert decode(chat_pb2.CreateAppRequest(name="n").SerializeToString()).name == "n"
    assert "not this method's request" in str(refused(decode(b"\xff\xff\xff")))
    deep = struct_pb2.Struct()
    for _ in range(150):
        outer = struct_pb2.Struct()
        outer.fields["a"].struct_value.CopyFrom(deep)
        deep = outer
    request = chat_pb2.UpsertAssistantMessageRequest()
    request.metadata.CopyFrom(deep)
    upsert = request.SerializeToString()
    decode_upsert = edge.decoding(chat_pb2.UpsertAssistantMessageRequest.FromString)
    assert decode_upsert is not None
    assert isinstance(decode_upsert(upsert), edge.Undecodable)


@pytest.mark.parametrize("value", ["..", ".", "/tmp", "a/x", "a\\b"])
def test_an_id_shaped_like_a_path_is_refused(value: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        require_id(value, "app_id", Limits())
    assert err.value.field == "app_id"


def test_ordinary_ids_pass() -> None:
    for value in ("3ecec7ad-5b6a-4d43-9f1e-0c1a2b3c4d5e", "team-1", "a.b", "user@example"):
        assert require_id(value, "app_id", Limits()) == value
