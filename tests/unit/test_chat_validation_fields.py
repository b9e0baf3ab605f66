"""Chat validation of single fields: ids, names, byte sizes, user content and JSON-safe
metadata; every rejection has the right exception type and field."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from appforge.services.chat.validation import (
    check_size,
    optional_id,
    require_id,
    require_name,
    validate_upsert,
    validate_user_content,
)
from appforge.services.common.errors import InvalidArgument, LimitExceeded
from appforge.services.common.settings import Limits
from tests.unit.chat_values import LIMITS, MAX_ID, upsert

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


# --- metadata: encoded once, finite numbers only -------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"a": 1, "b": [1.5, "x", None, True], "c": {"d": -0.0}}, id="nested"),
        pytest.param({"s": "plain"}, id="scalar"),
        pytest.param({"big": 1e308}, id="huge-but-finite"),
    ],
)
def test_metadata_is_encoded_once_by_validation(value: Any) -> None:
    checked = validate_upsert(upsert(metadata=value), LIMITS)
    assert checked.metadata_json is not None and json.loads(checked.metadata_json) == value


def test_no_metadata_encodes_nothing() -> None:
    assert validate_upsert(upsert(), LIMITS).metadata_json is None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"x": math.nan}, id="nan"),
        pytest.param({"x": math.inf}, id="inf-in-dict"),
        pytest.param({"x": [1.0, -math.inf]}, id="minus-inf-in-list"),
        pytest.param({"a": {"b": [{"c": math.nan}]}}, id="deeply-nested-nan"),
    ],
)
def test_metadata_rejects_non_finite_numbers(value: Any) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_upsert(upsert(metadata=value), LIMITS)
    assert type(raised.value) is InvalidArgument
    assert raised.value.field == "metadata"
    assert "finite" in str(raised.value)
