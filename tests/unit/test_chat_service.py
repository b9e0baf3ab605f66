"""ListMessages page tokens: opaque, bound to one app, and rejected cleanly when forged."""

from __future__ import annotations

import base64
import json

import pytest

from appforge.services.chat.domain import Message, MessageStatus, Role
from appforge.services.chat.service import _decode_page_token, _encode_page_token
from appforge.services.common.errors import InvalidArgument

T0 = 1_700_000_000_000_000


def message(app_id: str = "app-1", message_id: str = "msg-1", created_us: int = T0) -> Message:
    return Message(
        id=message_id,
        app_id=app_id,
        role=Role.USER,
        execution_id=None,
        content="hello",
        status=MessageStatus.COMPLETED,
        metadata={},
        version=1,
        created_us=created_us,
        updated_us=created_us,
        cursor=1,
    )


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("app_id", "message_id", "created_us"),
    [
        pytest.param("app-1", "msg-1", T0, id="plain"),
        pytest.param("app-ü", "msg-€", T0, id="non-ascii"),
        pytest.param("a", "m", 0, id="epoch"),
        pytest.param("app/+=", 'm"\\', 2**62, id="json-and-base64-specials"),
    ],
)
def test_page_token_round_trip(app_id: str, message_id: str, created_us: int) -> None:
    token = _encode_page_token(app_id, message(app_id, message_id, created_us))
    assert _decode_page_token(token, app_id) == (created_us, message_id)


def test_page_token_is_url_safe_and_unpadded() -> None:
    for n in range(1, 8):
        token = _encode_page_token("app", message(message_id="m" * n))
        assert not set(token) - set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(_encode_page_token("app-2", message("app-2")), id="another-app"),
        pytest.param("not a token!", id="garbage"),
        pytest.param("%%%%", id="no-base64-at-all"),
        pytest.param("a", id="impossible-base64-length"),
        pytest.param("ünïcode", id="non-ascii"),
        pytest.param(b64(b"\xff\xfe\x00"), id="not-utf8"),
        pytest.param(b64(b"{not json"), id="not-json"),
        pytest.param(b64(b"42"), id="json-number"),
        pytest.param(b64(b"null"), id="json-null"),
        pytest.param(b64(b'["app-1",1]'), id="two-fields"),
        pytest.param(b64(b'["app-1",1,"m","x"]'), id="four-fields"),
        pytest.param(b64(b'["app-1","1","m"]'), id="created-not-int"),
        pytest.param(b64(b'["app-1",1.5,"m"]'), id="created-float"),
        pytest.param(b64(b'["app-1",1,2]'), id="id-not-string"),
        pytest.param(b64(b'{"a":1,"b":2,"c":3}'), id="json-object"),
        pytest.param(b64(json.dumps(["app-2", T0, "msg-1"]).encode()), id="tampered-app"),
        pytest.param(_encode_page_token("app-1", message())[:-3] + "@@@", id="tampered-base64"),
    ],
)
def test_bad_page_token_is_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        _decode_page_token(token, "app-1")
    assert type(raised.value) is InvalidArgument
    assert raised.value.field == "page_token"


def test_deeply_nested_page_token_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as raised:
        _decode_page_token(b64(b"[" * 100_000), "app-1")
    assert raised.value.field == "page_token"
