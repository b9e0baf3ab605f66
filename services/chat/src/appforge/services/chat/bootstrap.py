"""Wire the chat service once: engine, bus, store, service, gRPC server."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.api.chat.v1 import chat_pb2_grpc
from appforge.services.chat.convert import ProtoChangeCodec
from appforge.services.chat.grpc_api import SERVICE_NAME, ChatServicer
from appforge.services.chat.service import ChatService
from appforge.services.chat.store import MessageStore
from appforge.services.common import db
from appforge.services.common.bus import Bus, create_bus
from appforge.services.common.clock import HybridClock
from appforge.services.common.server import GrpcServer, ServiceRegistration
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
        chat_pb2_grpc.add_ChatServiceServicer_to_server(ChatServicer(service), server)

    return ServiceRegistration(name=SERVICE_NAME, register=register)


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
    engine = engine or db.create_engine(
        settings.resolved_database_url(), pool_size=settings.db_pool_size
    )
    bus = bus or create_bus(settings.redis_url)
    store = MessageStore(engine, clock or HybridClock())
    service = ChatService(store, bus, settings, changes=ProtoChangeCodec())
    server = GrpcServer.serving(registration(service), settings, host=host, port=port)
    return ChatRuntime(service=service, server=server, engine=engine, bus=bus)
