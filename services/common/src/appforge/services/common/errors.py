"""The domain errors every service raises; `grpc_status` maps them to status codes.

Domain and store code raise these (adapters raise them `from` the driver error); only the
server bootstrap turns them into gRPC status codes, in one place.
"""

from __future__ import annotations

from enum import Enum


class ErrorKind(Enum):
    """What went wrong, independent of the transport."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    FAILED_PRECONDITION = "failed_precondition"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    UNAVAILABLE = "unavailable"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    INTERNAL = "internal"


class AppforgeError(Exception):
    """Root of every error appforge raises on purpose."""

    kind = ErrorKind.INTERNAL

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidArgument(AppforgeError):
    """The request itself is wrong; `field` names the offending field."""

    kind = ErrorKind.INVALID_ARGUMENT


class NotFound(AppforgeError):
    """A referenced entity does not exist."""

    kind = ErrorKind.NOT_FOUND


class AlreadyExists(AppforgeError):
    """The entity the request would create exists already."""

    kind = ErrorKind.ALREADY_EXISTS


class FailedPrecondition(AppforgeError):
    """The request is well-formed but conflicts with stored state."""

    kind = ErrorKind.FAILED_PRECONDITION


class LimitExceeded(InvalidArgument):
    """A field is larger than a documented limit (a whole request over the transport
    limit is refused by gRPC itself with RESOURCE_EXHAUSTED)."""


class Overloaded(AppforgeError):
    """The service is at a configured limit of concurrent work: nothing was done, and the
    same request can succeed later (RESOURCE_EXHAUSTED)."""

    kind = ErrorKind.RESOURCE_EXHAUSTED


class DeadlineExceeded(AppforgeError):
    """The caller's deadline passed before the work finished."""

    kind = ErrorKind.DEADLINE_EXCEEDED


class Unavailable(AppforgeError):
    """A dependency (database, Redis, another service) cannot be reached."""

    kind = ErrorKind.UNAVAILABLE


class Unauthenticated(AppforgeError):
    """The call carries no token, or one that is malformed, expired or not signed by our key
    (UNAUTHENTICATED). The message says which, never what the token held."""

    kind = ErrorKind.UNAUTHENTICATED


class PermissionDenied(AppforgeError):
    """A verified caller whose role may not make this call (PERMISSION_DENIED). A resource
    of another team is NotFound instead: whether it exists is not the caller's to know."""

    kind = ErrorKind.PERMISSION_DENIED


class ConfigError(AppforgeError):
    """A setting is missing or malformed."""

    kind = ErrorKind.INVALID_ARGUMENT
