"""Checks every service applies to identifiers, names and sizes."""

from __future__ import annotations

from appforge.services.common.errors import InvalidArgument, LimitExceeded
from appforge.services.common.paths import component_problem
from appforge.services.common.settings import Limits


def require_id(value: str, field_name: str, limits: Limits) -> str:
    """A non-empty identifier within the length limit, without control characters, that is
    one path component (no `/` or `\\`, not `.` or `..`)."""
    if not value:
        raise InvalidArgument("must not be empty", field=field_name)
    if len(value) > limits.max_id_length:
        raise InvalidArgument(
            f"must be at most {limits.max_id_length} characters, got {len(value)}", field=field_name
        )
    if not value.isprintable() or value != value.strip():
        raise InvalidArgument(
            "must be printable, without surrounding white space", field=field_name
        )
    if (problem := component_problem(value)) is not None:
        # Ids name directories, object keys and Redis keys: one component, never a path.
        raise InvalidArgument(f"{problem}; an id must not look like a path", field=field_name)
    return value


def optional_id(value: str, field_name: str, limits: Limits) -> str | None:
    """Like `require_id`, but empty means absent."""
    return require_id(value, field_name, limits) if value else None


def require_name(value: str, field_name: str, limits: Limits) -> str:
    """A non-blank display name within the length limit."""
    if not value.strip():
        raise InvalidArgument("must not be empty", field=field_name)
    if len(value) > limits.max_name_length:
        raise InvalidArgument(
            f"must be at most {limits.max_name_length} characters, got {len(value)}",
            field=field_name,
        )
    return value.strip()


def check_size(value: str, field_name: str, limit: int) -> None:
    """Reject text whose UTF-8 encoding exceeds `limit` bytes."""
    size = len(value.encode())
    if size > limit:
        raise LimitExceeded(f"is {size} bytes; the limit is {limit} bytes", field=field_name)
