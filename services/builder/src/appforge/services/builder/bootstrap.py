"""Wire the builder once: engine, store, clients, models, service, loops, server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.api.builder.v1 import builder_pb2_grpc
from appforge.services.builder.clients import GrpcChat, GrpcDeployer
from appforge.services.builder.grpc_api import SERVICE_NAME, BuilderServicer
from appforge.services.builder.models.base import Model
from appforge.services.builder.models.openai import OpenAIConfig, OpenAIModel
from appforge.services.builder.models.scripted import ScriptedModel
from appforge.services.builder.notices import announcer, listen_for_notices
from appforge.services.builder.ports import ChatPort, DeployerPort
from appforge.services.builder.rules import rules
from appforge.services.builder.sandbox import Sandbox
from appforge.services.builder.service import BuilderService
from appforge.services.builder.settings import BuilderSettings
from appforge.services.builder.store import ExecutionStore
from appforge.services.builder.sweeper import Sweeper
from appforge.services.builder.text_stream import Sleep
from appforge.services.builder.workspace import SandboxWorkspace, Workspace
from appforge.services.common import db
from appforge.services.common.bus import Bus, create_bus
from appforge.services.common.clock import Clock, SystemClock
from appforge.services.common.logging import get_logger
from appforge.services.common.server import GrpcServer, ServiceRegistration
from appforge.services.common.settings import Settings

log = get_logger(__name__)


@dataclass(kw_only=True)
class BuilderRuntime:
    """A builder process's parts; `start_background` starts the heartbeat and sweeper."""

    service: BuilderService
    server: GrpcServer
    engine: AsyncEngine
    sweeper: Sweeper
    heartbeat_interval: float
    bus: Bus
    closers: list[object] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start_background(self) -> None:
        notices, owner = self.service.notices, self.service.owner
        notices.announce = announcer(self.bus, owner)
        self.tasks = [
            asyncio.create_task(self._heartbeat(), name="builder-heartbeat"),
            asyncio.create_task(self.sweeper.run(), name="builder-sweeper"),
            asyncio.create_task(
                listen_for_notices(self.bus, notices, owner), name="builder-notice-wakeups"
            ),
        ]

    async def _heartbeat(self) -> None:
        while True:
            try:
                await self.service.heartbeat_once()
            except Exception:  # a database blip: the lease is three beats long
                log.exception("heartbeat_failed")
            await asyncio.sleep(self.heartbeat_interval)

    async def close(self) -> None:
        """After the gRPC server stopped (which ended the running executions already,
        unless its drain ran out of grace): end any left, stop loops, release."""
        await self.service.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for closer in self.closers:
            close = getattr(closer, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        await self.bus.close()
        await self.engine.dispose()


def registration(service: BuilderService) -> ServiceRegistration:
    def register(server: grpc.aio.Server) -> None:
        builder_pb2_grpc.add_BuilderServiceServicer_to_server(BuilderServicer(service), server)

    return ServiceRegistration(
        name=SERVICE_NAME, register=register, rules=rules(service.store, service.chat)
    )


def build_models(config: BuilderSettings) -> dict[str, Model]:
    """The models this builder offers: scripted always, openai when configured."""
    models: dict[str, Model] = {
        "scripted": ScriptedModel(chunk_delay=config.scripted_stream_ms / 1000)
    }
    if config.openai_configured:
        models["openai"] = OpenAIModel(
            OpenAIConfig(
                base_url=config.openai_base_url,
                api_key=config.openai_api_key,
                model=config.openai_model,
                timeout=config.openai_timeout,
            )
        )
    return models


def build_builder(
    settings: Settings,
    builder: BuilderSettings | None = None,
    *,
    host: str,
    port: int,
    engine: AsyncEngine | None = None,
    clock: Clock | None = None,
    chat: ChatPort | None = None,
    deployer: DeployerPort | None = None,
    models: dict[str, Model] | None = None,
    workspace_for: Callable[[str], Workspace] | None = None,
    owner: str | None = None,
    sleep: Sleep = asyncio.sleep,
    bus: Bus | None = None,
) -> BuilderRuntime:
    """Everything the builder needs, built from settings (or handed in by tests)."""
    builder = builder or BuilderSettings()
    engine = engine or db.create_engine(
        settings.resolved_database_url(), pool_size=settings.db_pool_size
    )
    clock = clock or SystemClock()
    minter = settings.auth.minter("appforge-builder")
    if chat is None:
        grpc_chat = GrpcChat(settings.chat_addr, tls=settings.tls, minter=minter)
        chat, teams = grpc_chat, grpc_chat.teams
    else:
        teams = None  # a chat handed in: its apps' teams are not asked of a real chat
    deployer = deployer or GrpcDeployer(settings.deployer_addr, tls=settings.tls, teams=teams)
    models = models if models is not None else build_models(builder)
    store = ExecutionStore(engine)
    sandboxes = builder.sandboxes_under(settings.data_dir)

    def sandbox_workspace(execution_id: str) -> Workspace:
        return SandboxWorkspace(Sandbox(sandboxes / execution_id))

    service = BuilderService(
        store=store,
        chat=chat,
        deployer=deployer,
        models=models,
        workspace_for=workspace_for or sandbox_workspace,
        clock=clock,
        settings=settings,
        builder=builder,
        owner=owner or f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
        sleep=sleep,
    )
    lease = builder.execution_lease
    sweeper = Sweeper(
        store,
        service.notices,
        clock,
        interval=builder.sweep_interval,
        lease=lease,
        ended=service.ended_elsewhere,
    )

    # The server's stop ends running executions (`draining`) before it waits for its RPCs,
    # so each Build stream ends with `finished` and each message is FAILED with the reason
    # while chat still answers, not after the grace cut the streams.
    server = GrpcServer.serving(
        registration(service), settings, host=host, port=port, draining=service.close
    )
    return BuilderRuntime(
        service=service,
        server=server,
        engine=engine,
        sweeper=sweeper,
        heartbeat_interval=lease / 3,
        bus=bus or create_bus(settings.redis_url),
        closers=[chat, deployer, *models.values()],
    )
