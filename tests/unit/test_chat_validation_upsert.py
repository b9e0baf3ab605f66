"""Chat validation of a whole assistant upsert: what it accepts, each rejection with its
exception type and field, and which problem it reports first."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from appforge.services.chat.domain import AssistantUpsert
from appforge.services.chat.validation import validate_upsert
from appforge.services.common.errors import InvalidArgument, LimitExceeded
from appforge.services.common.settings import Limits
from tests.unit.chat_values import LIMITS, MAX_ID, call, text, tools, upsert


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
    assert replace(validate_upsert(request_, LIMITS), metadata_json=None) == request_


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
