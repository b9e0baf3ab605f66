"""gRPC server bootstrap shared by every service.

Registers health and reflection next to the service, maps domain errors to status codes
in one interceptor that also verifies each call's token and applies the service's rules
(`access`: health and reflection stay open), logs every RPC, and shuts down in order on
SIGTERM: health NOT_SERVING, new RPCs refused, the service's in-flight work ended (`draining`), the
in-flight RPCs drained within the grace, then the service's own cleanup (pools, buses).
Several servers in one process stop one after another, the last started first.
A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from appforge.services.common import auth, deadlines, reflection, tracing
from appforge.services.common.access import Guard, Rules, check_complete
from appforge.services.common.edge import check_request, decoding
from appforge.services.common.errors import AppforgeError, ErrorKind
from appforge.services.common.logging import get_logger
from appforge.services.common.metrics import RPC_SECONDS, RPCS
from appforge.services.common.secrets import redact
from appforge.services.common.settings import Limits, Settings
from appforge.services.common.tls import TlsSettings

log = get_logger(__name__)

_STATUS_BY_KIND = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
}


def grpc_status(error: AppforgeError) -> tuple[grpc.StatusCode, str]:
    """The status code and details for a domain error (details name the field)."""
    return _STATUS_BY_KIND[error.kind], str(error)


# The stubs' generics are not subscriptable at run time, hence the quoted aliases.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "Callable[[Any, Context], Any]"
MethodHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Turns `AppforgeError` into its status code and logs each RPC with its outcome; checks
    every call at the edge first: its token and the method's rule (`guard`, when tokens are
    checked), then the request (`edge`: undecodable bytes, NUL, timestamps)."""

    def __init__(self, guard: Guard | None = None) -> None:
        self.guard = guard
        # Handlers are fixed per method once registered: wrap each one once, not per call.
        self._wrapped: dict[str, MethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[MethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> MethodHandler:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(("/grpc.health", "/grpc.reflection")):
            return handler
        if handler.unary_unary is not None:
            wrapped = grpc.unary_unary_rpc_method_handler(
                _wrap_unary(method, handler.unary_unary, self.guard),  # type: ignore[arg-type]
                request_deserializer=decoding(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        elif handler.unary_stream is not None:
            wrapped = grpc.unary_stream_rpc_method_handler(
                _wrap_stream(method, handler.unary_stream, self.guard),  # type: ignore[arg-type]
                request_deserializer=decoding(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        else:
            return handler
        self._wrapped[method] = wrapped
        return wrapped


async def _abort(context: Context, method: str, exc: Exception, started: float) -> None:
    elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
    if isinstance(exc, AppforgeError):
        code, details = grpc_status(exc)
        log.info("rpc_failed", method=method, code=code.name, details=details, ms=elapsed_ms)
    else:
        code, details = grpc.StatusCode.INTERNAL, "internal error"
        log.exception("rpc_crashed", method=method, error=repr(exc), ms=elapsed_ms)
    RPCS.labels(method, code.name).inc()
    tracing.set_attribute("rpc.grpc.status_code", code.value[0])
    await context.abort(code, redact(details))


def _server_span(method: str, request: Any, context: Context) -> AbstractContextManager[Any]:
    """The RPC's SERVER span, child of the caller's (`traceparent`), when tracing is on."""
    if not tracing.enabled():
        return contextlib.nullcontext()
    service, _, name = method.lstrip("/").partition("/")
    return tracing.span(
        method.lstrip("/"),
        kind="server",
        parent=tracing.extract(context.invocation_metadata()),
        attributes={
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": name,
            tracing.EXECUTION_ID: getattr(request, "execution_id", ""),
        },
    )


async def _admit(guard: Guard | None, method: str, request: Any, context: Context) -> None:
    """The caller verified and allowed (`auth.caller()` says who, for the rest of the call),
    the request checked at the edge."""
    if guard is None:
        check_request(request)
        return
    principal = guard.authenticate(context.invocation_metadata())
    # Before the rule's lookups, which ask other services as this caller (a Build's app);
    # set in the call's own task and context: gone with it.
    auth.set_caller(principal)
    check_request(request)
    await guard.authorize(method, request, principal)


def _wrap_unary(method: str, fn: Handler, guard: Guard | None = None) -> Handler:
    async def wrapped(request: Any, context: Context) -> Any:
        started = time.perf_counter()
        with _server_span(method, request, context):
            try:
                await _admit(guard, method, request, context)
                with deadlines.serving(context.time_remaining()):
                    response = await fn(request, context)
            except asyncio.CancelledError:
                RPCS.labels(method, "CANCELLED").inc()
                raise
            except Exception as exc:
                if _is_abort(exc):
                    raise
                await _abort(context, method, exc, started)
        elapsed = time.perf_counter() - started
        RPCS.labels(method, "OK").inc()
        RPC_SECONDS.labels(method).observe(elapsed)
        log.debug("rpc", method=method, ms=round(elapsed * 1000, 2))
        return response

    return wrapped


def _wrap_stream(
    method: str, fn: Handler, guard: Guard | None = None
) -> Callable[..., AsyncIterator[Any]]:
    async def wrapped(request: Any, context: Context) -> AsyncIterator[Any]:
        started = time.perf_counter()
        with _server_span(method, request, context):
            try:
                await _admit(guard, method, request, context)
                # Not reset across the yields: the stream's task, and its context, end with it.
                deadlines.set_remaining(context.time_remaining())
                async for item in fn(request, context):
                    yield item
            except asyncio.CancelledError:
                RPCS.labels(method, "CANCELLED").inc()
                raise
            except Exception as exc:
                if _is_abort(exc):
                    raise
                await _abort(context, method, exc, started)
            else:
                RPCS.labels(method, "OK").inc()

    return wrapped


def _is_abort(exc: Exception) -> bool:
    # context.abort() raises an internal exception that must pass through untouched.
    return isinstance(exc, grpc.aio.AbortError)


@dataclass(frozen=True, kw_only=True)
class ServiceRegistration:
    """What one service contributes to a server."""

    name: str  # the fully qualified gRPC service name, e.g. appforge.chat.v1.ChatService
    register: Callable[[grpc.aio.Server], None]
    rules: Rules  # who may call each RPC (`access`): one per method, checked at start


class GrpcServer:
    """A grpc.aio server with health, reflection and the error interceptor; tokens checked
    when `auth` has a key."""

    def __init__(
        self,
        services: Sequence[ServiceRegistration],
        *,
        host: str,
        port: int,
        max_message_bytes: int,
        grace: float,
        draining: Callable[[], Awaitable[None]] | None = None,
        tls: TlsSettings | None = None,
        auth_settings: auth.AuthSettings | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.grace = grace
        self.draining = draining
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._services = services
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        tables = [(s.name, s.rules) for s in services]
        for name, table in tables:
            check_complete(name, table)
        guard = (
            Guard.over(auth_settings.verifier(), tables, limits or Limits())
            if auth_settings is not None and auth_settings.enabled
            else None
        )
        self.checks_tokens = guard is not None
        self.server = grpc.aio.server(
            interceptors=[ErrorMappingInterceptor(guard)], options=options
        )
        for service in services:
            service.register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [s.name for s in services]
        reflection.enable(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name], self.server
        )
        credentials = tls.server_credentials() if tls is not None else None
        try:
            if credentials is None:
                self.port = self.server.add_insecure_port(f"{host}:{port}")
            else:
                self.port = self.server.add_secure_port(f"{host}:{port}", credentials)
        except RuntimeError as exc:  # grpc raises RuntimeError when the port is taken
            raise OSError(f"cannot listen on {host}:{port}: address in use or not local") from exc
        if self.port == 0:
            raise OSError(f"cannot listen on {host}:{port}")
        self.address = f"{host}:{self.port}"

    @classmethod
    def serving(
        cls,
        service: ServiceRegistration,
        settings: Settings,
        *,
        host: str,
        port: int,
        draining: Callable[[], Awaitable[None]] | None = None,
    ) -> GrpcServer:
        """The server of one service process, sized and given its grace by `settings`."""
        return cls(
            [service],
            host=host,
            port=port,
            max_message_bytes=settings.limits.max_grpc_message_bytes,
            grace=settings.shutdown_grace,
            draining=draining,
            tls=settings.tls,
            auth_settings=settings.auth,
            limits=settings.limits,
        )

    async def start(self) -> None:
        await self.server.start()
        for service in self._services:
            await self.health.set(service.name, health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)

    async def stop(self) -> None:
        """Health NOT_SERVING first, so balancers drain us, then stop with grace.

        New RPCs are refused at once; `draining` then ends the service's in-flight work
        (the builder's executions), so that the streams serving it end by themselves
        with their last event instead of being cut when the grace runs out. Both share
        the one grace.
        """
        await self.health.enter_graceful_shutdown()
        stopping = asyncio.ensure_future(self.server.stop(self.grace))
        try:
            if self.draining is not None:
                try:
                    await asyncio.wait_for(self.draining(), self.grace)
                except TimeoutError:
                    log.warning("drain_timed_out", address=self.address, grace=self.grace)
        finally:
            await stopping


def freeze_startup_heap() -> None:
    """Leave what starting allocated (modules, descriptors, SQL compiled, pools) out of every
    later collection: it lives as long as the process, and walking it made each full
    collection pause a serving process for ~60 ms (bench/chat_growth.py's slowest call)."""
    gc.collect()
    gc.freeze()


async def run_until_signalled(
    servers: Sequence[GrpcServer],
    cleanup: Callable[[], Awaitable[None]],
    *,
    ready: Callable[[], None] | None = None,
) -> None:
    """Start the servers, wait for SIGTERM/SIGINT, then shut down in order.

    The servers start in the order given and stop in the reverse order, each stop
    (drain included) done before the next begins: list a server before those that call
    it, and its callers' in-flight work ends while it still answers.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def _on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second_signal_exiting_now", signal=signal.Signals(signum).name)
            os._exit(130)
        log.info("shutdown_requested", signal=signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, sig)
    try:
        for server in servers:
            await server.start()
            log.info("serving", address=server.address)
        freeze_startup_heap()
        if ready is not None:
            ready()
        await stop.wait()
        for server in reversed(servers):
            await server.stop()
            log.info("server_stopped", address=server.address)
    finally:
        await cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("stopped")
