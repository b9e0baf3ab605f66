"""Wire the deployer once: engine, bus, store, targets, workers, deliverer, servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.api.deployer.v1 import deployer_pb2_grpc
from appforge.services.common import db
from appforge.services.common.app_teams import AppTeams
from appforge.services.common.bus import Bus, create_bus
from appforge.services.common.pg_hot import pool_shares
from appforge.services.common.server import GrpcServer, ServiceRegistration
from appforge.services.common.settings import Settings
from appforge.services.deployer.chat_client import GrpcChatNotifier
from appforge.services.deployer.deliverer import ChatNotifier, NoticeDeliverer
from appforge.services.deployer.grpc_api import SERVICE_NAME, DeployerServicer
from appforge.services.deployer.rules import rules
from appforge.services.deployer.service import DeployerService
from appforge.services.deployer.settings import DeploySettings
from appforge.services.deployer.store import DeployerStores
from appforge.services.deployer.targets.base import Target
from appforge.services.deployer.targets.local import DeployHttpServer, LocalTarget
from appforge.services.deployer.targets.noop import NoopTarget
from appforge.services.deployer.timing import Timer, WallTimer
from appforge.services.deployer.worker import DeploymentWorker, IdleWorkers, listen_for_jobs


@dataclass(kw_only=True)
class DeployerRuntime:
    """A deployer process's parts; `start_background` starts workers and the HTTP server."""

    service: DeployerService
    server: GrpcServer
    engine: AsyncEngine
    stores: DeployerStores
    bus: Bus
    http: DeployHttpServer | None
    targets: dict[str, Target]
    workers: list[DeploymentWorker]
    deliverer: NoticeDeliverer
    chat: ChatNotifier
    wake: asyncio.Event  # this process's workers: a deployment may be due
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start_background(self) -> None:
        local = self.targets.get("local")
        if isinstance(local, LocalTarget):
            # Staging dirs of crashed publishes; younger ones may be another replica's.
            stale_after = max(3600.0, 2 * self.service.config.policy.attempt_timeout)
            await local.sweep_staging(older_than_seconds=stale_after)
        if self.http is not None:
            await self.http.start()
        self.tasks = [
            asyncio.create_task(w.run(), name=f"deploy-worker-{n}")
            for n, w in enumerate(self.workers)
        ]
        self.tasks.append(asyncio.create_task(self.deliverer.run(), name="deploy-notices"))
        if self.workers:  # a Deploy any replica took wakes them here
            wakeups = listen_for_jobs(self.bus, self.wake)
            self.tasks.append(asyncio.create_task(wakeups, name="deploy-wakeups"))

    async def close(self) -> None:
        """After the gRPC server stopped: stop loops, then release targets and pools."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.http is not None:
            await self.http.stop()
        for target in self.targets.values():
            with contextlib.suppress(Exception):
                await target.close()
        close_chat = getattr(self.chat, "close", None)
        if close_chat is not None:
            await close_chat()
        await self.bus.close()
        await self.stores.close()
        await self.engine.dispose()


def registration(service: DeployerService, teams: AppTeams) -> ServiceRegistration:
    def register(server: grpc.aio.Server) -> None:
        deployer_pb2_grpc.add_DeployerServiceServicer_to_server(DeployerServicer(service), server)

    return ServiceRegistration(name=SERVICE_NAME, register=register, rules=rules(service, teams))


def build_targets(config: DeploySettings, data_dir: Path) -> dict[str, Target]:
    """The targets this process can publish to (s3 only when a bucket is configured), by
    name: the name a Deploy request's `target` selects. `noop` costs nothing to hold, and
    is always there so that any replica can finish a noop deployment another one queued."""
    made: list[Target] = [
        LocalTarget(config.root_under(data_dir), config.public_url),
        NoopTarget(),
    ]
    if config.s3_configured:
        from appforge.services.deployer.targets.s3 import S3Config, S3Target

        made.append(
            S3Target(
                S3Config(
                    endpoint_url=config.s3_endpoint_url or None,
                    bucket=config.s3_bucket,
                    region=config.s3_region,
                    public_url=config.s3_public_url or None,
                    access_key_id=config.aws_access_key_id or None,
                    secret_access_key=config.aws_secret_access_key or None,
                    read_timeout=config.policy.attempt_timeout,
                )
            )
        )
    return {target.name: target for target in made}


def build_deployer(
    settings: Settings,
    deploy: DeploySettings | None = None,
    *,
    host: str,
    port: int,
    http_port: int | None,
    engine: AsyncEngine | None = None,
    bus: Bus | None = None,
    clock: Timer | None = None,
    chat: ChatNotifier | None = None,
    targets: dict[str, Target] | None = None,
) -> DeployerRuntime:
    """Everything the deployer needs, built from settings (or handed in by tests).

    `http_port` None serves no HTTP (another process serves the deploy root).
    """
    deploy = deploy or DeploySettings()
    url = settings.resolved_database_url()
    engine_share, hot_share = pool_shares(
        settings.db_pool_size, postgres=url.startswith("postgresql")
    )
    engine = engine or db.create_engine(url, pool_size=engine_share)
    bus = bus or create_bus(settings.redis_url)
    clock = clock or WallTimer()
    minter = settings.auth.minter("appforge-deployer")
    notifier = GrpcChatNotifier(settings.chat_addr, tls=settings.tls, minter=minter)
    chat = chat or notifier
    # The apps' teams come from chat even when a notifier is handed in (tests without tokens
    # never ask: the rules are only applied where tokens are checked).
    teams = chat.teams if isinstance(chat, GrpcChatNotifier) else notifier.teams
    targets = targets if targets is not None else build_targets(deploy, settings.data_dir)
    stores = DeployerStores.over(engine, hot_pool_size=hot_share or None)
    wake = asyncio.Event()
    idle = IdleWorkers()
    service = DeployerService(
        stores.deployments,
        bus,
        clock,
        settings,
        deploy,
        wake_workers=wake,
        available_targets=list(targets),
        idle_workers=idle,
    )
    deliverer = NoticeDeliverer(
        outbox=stores.outbox,
        chat=chat,
        clock=clock,
        poll_interval=deploy.worker.poll_interval,
        wake=asyncio.Event(),
    )
    identity = f"{socket.gethostname()[:40]}:{os.getpid()}"
    workers = [
        DeploymentWorker(
            worker_id=f"{identity}:{n}",
            store=stores.attempts,
            targets=targets,
            clock=clock,
            config=deploy.worker,
            wake=wake,
            on_change=service.changed,
            notices=deliverer,  # a success's notice goes straight to this process's deliverer
            idle=idle,
        )
        for n in range(deploy.workers)
    ]

    server = GrpcServer.serving(registration(service, teams), settings, host=host, port=port)
    http = (
        DeployHttpServer(deploy.root_under(settings.data_dir), host, http_port)
        if http_port is not None
        else None
    )
    return DeployerRuntime(
        service=service,
        server=server,
        engine=engine,
        stores=stores,
        bus=bus,
        http=http,
        targets=targets,
        workers=workers,
        deliverer=deliverer,
        chat=chat,
        wake=wake,
    )
