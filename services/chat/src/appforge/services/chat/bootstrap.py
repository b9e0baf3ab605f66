"""Wire the chat service once: engine, bus, store, service, gRPC server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.api.chat.v1 import chat_pb2_grpc
from appforge.services.chat.convert import ProtoChangeCodec
from appforge.services.chat.grpc_api import SERVICE_NAME, ChatServicer, watch_handler
from appforge.services.chat.rules import rules
from appforge.services.chat.service import ChatService
from appforge.services.chat.store import MessageStore
from appforge.services.common import db
from appforge.services.common.bus import Bus, create_bus
from appforge.services.common.clock import HybridClock
from appforge.services.common.pg_hot import pool_shares
from appforge.services.common.server import GrpcServer, MethodHandler, ServiceRegistration
from appforge.services.common.settings import Settings


@dataclass(kw_only=True)
class ChatRuntime:
    """A running chat service and what it owns."""

    service: ChatService
    server: GrpcServer
    engine: AsyncEngine
    bus: Bus

    async def close(self) -> None:
        """Release pools after the server stopped."""
        await self.bus.close()
        await self.service.store.close()
        await self.engine.dispose()


def registration(service: ChatService) -> ServiceRegistration:
    def register(server: grpc.aio.Server) -> None:
        # The generated handlers, with WatchApp's serializer passing serialised events on.
        handlers = _Handlers()
        chat_pb2_grpc.add_ChatServiceServicer_to_server(
            ChatServicer(service), cast(grpc.aio.Server, handlers)
        )
        handlers.methods["WatchApp"] = watch_handler(handlers.methods["WatchApp"])
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers.methods),)
        )
        # As the generated code does (grpcio >= 1.63; not in its type stubs yet).
        cast(Any, server).add_registered_method_handlers(SERVICE_NAME, handlers.methods)

    return ServiceRegistration(name=SERVICE_NAME, register=register, rules=rules(service))


class _Handlers:
    """Takes the generated registration's method handlers instead of a server."""

    def __init__(self) -> None:
        self.methods: dict[str, MethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        """The same handlers again, as a generic handler: `methods` has them already."""

    def add_registered_method_handlers(
        self, service: str, methods: dict[str, MethodHandler]
    ) -> None:
        self.methods.update(methods)


def build_chat(
    settings: Settings,
    *,
    host: str,
    port: int,
    engine: AsyncEngine | None = None,
    bus: Bus | None = None,
    clock: HybridClock | None = None,
) -> ChatRuntime:
    """Everything the chat service needs, built from settings (or handed in by tests)."""
    url = settings.resolved_database_url()
    engine_share, writer_share = pool_shares(
        settings.db_pool_size, postgres=url.startswith("postgresql")
    )
    engine = engine or db.create_engine(url, pool_size=engine_share)
    bus = bus or create_bus(settings.redis_url)
    store = MessageStore(
        engine,
        clock or HybridClock(),
        writer_pool_size=writer_share or None,
        write_batches=settings.write_batches,
    )
    service = ChatService(store, bus, settings, changes=ProtoChangeCodec())
    server = GrpcServer.serving(registration(service), settings, host=host, port=port)
    return ChatRuntime(service=service, server=server, engine=engine, bus=bus)
