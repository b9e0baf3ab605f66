"""Calling another appforge service: its status codes become our domain errors."""

from __future__ import annotations

import grpc

from appforge.services.common.errors import (
    AlreadyExists,
    AppforgeError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from appforge.services.common.tls import TlsSettings, open_channel

_KINDS: dict[grpc.StatusCode, type[AppforgeError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    # A service refused by another is misconfigured (keys differ, a rule forbids): say so.
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}


def error_from_rpc(exc: grpc.aio.AioRpcError, service: str) -> AppforgeError:
    """The domain error for a failed call to `service`, keeping the callee's details.

    Codes a caller cannot act on (INTERNAL, UNKNOWN, ...) become Unavailable: the callee
    is broken, from where we stand, and retrying later is all we can do.
    """
    code = exc.code()
    details = exc.details() or code.name
    kind = _KINDS.get(code, Unavailable)
    if kind is Unavailable:
        return Unavailable(f"{service} unavailable: {code.name}: {details}")
    return kind(f"{service} said: {details}")


class LazyChannel:
    """A client of one address whose channel opens on first use; `close()` when done."""

    def __init__(self, address: str, tls: TlsSettings | None = None) -> None:
        self.address = address
        self.tls = tls  # None or nothing set: plaintext
        self._channel: grpc.aio.Channel | None = None

    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = open_channel(self.address, self.tls)
        return self._channel

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
