"""Validation of chat requests against the rules and the documented limits. No I/O."""

from __future__ import annotations

import json
from dataclasses import replace

from appforge.services.chat.domain import AssistantUpsert, FlowItem, ItemKind
from appforge.services.common.errors import InvalidArgument, LimitExceeded
from appforge.services.common.settings import Limits
from appforge.services.common.validation import check_size, optional_id, require_id, require_name

__all__ = [
    "check_size",
    "optional_id",
    "require_id",
    "require_name",
    "validate_upsert",
    "validate_user_content",
]


def validate_user_content(content: str, limits: Limits) -> str:
    """A user message must say something, within the size limit."""
    if not content.strip():
        raise InvalidArgument("must not be empty", field="content")
    check_size(content, "content", limits.max_user_content_bytes)
    return content


def validate_upsert(upsert: AssistantUpsert, limits: Limits) -> AssistantUpsert:
    """Check an upsert against the rules and limits; raises on the first problem."""
    require_id(upsert.app_id, "app_id", limits)
    require_id(upsert.execution_id, "execution_id", limits)
    if len(upsert.items) > limits.max_items_per_upsert:
        raise LimitExceeded(
            f"has {len(upsert.items)} items; the limit is {limits.max_items_per_upsert}",
            field="items",
        )
    seen_calls: dict[str, int] = {}
    for index, item in enumerate(upsert.items):
        _validate_item(index, item, seen_calls, limits)
    if not upsert.metadata:
        return upsert
    # Encoded once, here: the size check and the store both use this text.
    try:
        encoded = json.dumps(upsert.metadata, separators=(",", ":"), allow_nan=False)
    except ValueError:  # NaN and infinities are not JSON
        raise InvalidArgument("numbers must be finite", field="metadata") from None
    except TypeError as exc:
        raise InvalidArgument(f"is not JSON: {exc}", field="metadata") from None
    check_size(encoded, "metadata", limits.max_metadata_bytes)
    return replace(upsert, metadata_json=encoded)


def _validate_item(index: int, item: FlowItem, seen_calls: dict[str, int], limits: Limits) -> None:
    where = f"items[{index}]"
    if item.seq < 1:
        raise InvalidArgument(f"seq must be at least 1, got {item.seq}", field=f"{where}.seq")
    if item.timestamp_us is not None and item.timestamp_us <= 0:
        raise InvalidArgument("timestamp must be after the epoch", field=f"{where}.timestamp")
    if item.kind is ItemKind.MESSAGE:
        check_size(item.text, f"{where}.message.text", limits.max_text_bytes)
        if item.text_end > limits.max_text_bytes:
            raise LimitExceeded(
                f"would make the text {item.text_end} characters long; the limit is "
                f"{limits.max_text_bytes}",
                field=f"{where}.message.offset",
            )
        return
    if len(item.calls) > limits.max_calls_per_batch:
        raise LimitExceeded(
            f"has {len(item.calls)} calls; the limit is {limits.max_calls_per_batch}",
            field=f"{where}.tools.calls",
        )
    for c_index, call in enumerate(item.calls):
        at = f"{where}.tools.calls[{c_index}]"
        require_id(call.call_id, f"{at}.call_id", limits)
        previous_seq = seen_calls.setdefault(call.call_id, item.seq)
        if previous_seq != item.seq:
            raise InvalidArgument(
                f"call {call.call_id!r} appears under seq {previous_seq} and seq {item.seq}",
                field=f"{at}.call_id",
            )
        if len(call.name) > limits.max_name_length:
            raise InvalidArgument(
                f"must be at most {limits.max_name_length} characters", field=f"{at}.name"
            )
        check_size(call.arguments_json, f"{at}.arguments_json", limits.max_json_bytes)
        check_size(call.result_json, f"{at}.result_json", limits.max_json_bytes)
        check_size(call.error, f"{at}.error", limits.max_json_bytes)
