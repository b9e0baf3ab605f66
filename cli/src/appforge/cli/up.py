"""`appforge up`: chat, builder and deployer in one process, for a first look or a laptop.

On the embedded default (no DATABASE_URL, no REDIS_URL) it needs nothing but the package:
SQLite in the data directory, the in-process bus, the `local` deploy target. With the URLs
set it uses them. Migrations are applied first; Ctrl-C shuts all three down gracefully,
the builder first: its running executions end as FAILED, their messages written, while
chat still answers.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping

from appforge.cli import installed
from appforge.services.builder.bootstrap import build_builder
from appforge.services.builder.settings import BuilderSettings
from appforge.services.chat.bootstrap import build_chat
from appforge.services.common import auth, db, migrate
from appforge.services.common.bus import create_bus
from appforge.services.common.server import run_until_signalled
from appforge.services.common.settings import Settings
from appforge.services.deployer.bootstrap import build_deployer
from appforge.services.deployer.settings import DeploySettings


@dataclasses.dataclass(frozen=True, kw_only=True)
class Ports:
    """Where `up` listens."""

    host: str
    chat: int
    builder: int
    deployer: int
    http: int | None  # None: APPFORGE_DEPLOY_HTTP_PORT, else 8080


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _address_flags(settings: Settings, ports: Ports) -> str:
    """The flags `appforge build` needs to find this `up`, when the defaults will not."""
    defaults = Settings()
    flags = [
        f" --{name} {address}"
        for name, address, default in (
            ("chat", settings.chat_addr, defaults.chat_addr),
            ("builder", settings.builder_addr, defaults.builder_addr),
            ("deployer", settings.deployer_addr, defaults.deployer_addr),
        )
        if address != default
    ]
    return "".join(flags)


def _tokens_line(settings: Settings) -> str:
    if not settings.auth.enabled:
        return "NOT checked (--insecure): every caller may do anything"
    local = settings.data_dir / auth.LOCAL_SECRET
    where = f"the secret in {local}" if auth.local_secret(settings.data_dir) else "your key"
    return f"checked, signed with {where}; for grpcurl: appforge token --team default"


async def up(settings: Settings, env: Mapping[str, str], ports: Ports) -> None:
    local = _client_host(ports.host)
    deploy = DeploySettings.from_env(env)
    if ports.http is not None:
        deploy = deploy.serving_on(ports.http)
    http_port = deploy.http_port
    settings = dataclasses.replace(
        settings,
        chat_addr=f"{local}:{ports.chat}",
        builder_addr=f"{local}:{ports.builder}",
        deployer_addr=f"{local}:{ports.deployer}",
    )
    # One engine and one bus for the three: on SQLite that is one writer, as it must be.
    engine = db.create_engine(settings.resolved_database_url(), pool_size=settings.db_pool_size)
    await migrate.upgrade(engine, installed.histories())
    bus = create_bus(settings.redis_url)
    chat = build_chat(settings, host=ports.host, port=ports.chat, engine=engine, bus=bus)
    deployer = build_deployer(
        settings,
        deploy,
        host=ports.host,
        port=ports.deployer,
        http_port=http_port,
        engine=engine,
        bus=bus,
    )
    builder = build_builder(
        settings,
        BuilderSettings.from_env(env),
        host=ports.host,
        port=ports.builder,
        engine=engine,
        bus=bus,
    )
    await deployer.start_background()
    await builder.start_background()

    async def close() -> None:
        # The servers stopped already, the builder's first (ending its executions while
        # chat still answered); now the loops and pools, the builder's first again.
        await builder.close()
        await deployer.close()
        await chat.close()

    def ready() -> None:
        database = (
            settings.database_url.split("@")[-1]
            if settings.database_url
            else f"SQLite {settings.resolved_database_url().split('///')[-1]}"
        )
        lines = [
            f"appforge up: chat, builder and deployer in one process ({database}, "
            f"{'Redis' if settings.redis_url else 'in-process bus'})",
            f"  chat      {chat.server.address}",
            f"  builder   {builder.server.address}  (models: {', '.join(builder.service.models)})",
            f"  deployer  {deployer.server.address}  apps on http://{local}:{http_port}/apps/",
            f"  tokens    {_tokens_line(settings)}",
            f'  try       appforge build "build a calculator"{_address_flags(settings, ports)}',
            "  Ctrl-C to stop",
        ]
        print("\n".join(lines), file=sys.stderr, flush=True)

    # Started in this order and stopped in reverse: the builder's server first, its drain
    # ending running executions (FAILED, final message written) while chat still answers;
    # then the deployer; chat last.
    await run_until_signalled([chat.server, deployer.server, builder.server], close, ready=ready)
