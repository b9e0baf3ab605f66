"""`appforge migrate` and `appforge serve SERVICE`: what needs the database layer, imported
only by the commands that do (the others, `health` above all, start without it)."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.cli import installed
from appforge.services.common import db, migrate
from appforge.services.common.settings import Settings


async def prepare_schema(engine: AsyncEngine, service: str, apply_migrations: bool) -> None:
    """Apply the service's migrations, or refuse to serve on a schema that is behind."""
    histories = installed.histories([service])
    if apply_migrations:
        await migrate.upgrade(engine, histories)
    else:
        await migrate.require_current(engine, histories)


async def migrate_database(settings: Settings) -> list[str]:
    """Apply the migrations of every service installed here; return their names."""
    histories = installed.installed_histories()
    engine = db.create_engine(settings.resolved_database_url())
    try:
        await migrate.upgrade(engine, histories)
    finally:
        await engine.dispose()
    return [h.service for h in histories]


async def serve_chat(settings: Settings, host: str, port: int, apply_migrations: bool) -> None:
    from appforge.services.chat.bootstrap import build_chat
    from appforge.services.common.server import run_until_signalled

    runtime = build_chat(settings, host=host, port=port)
    await prepare_schema(runtime.engine, "chat", apply_migrations)

    def _ready() -> None:
        print(f"appforge chat serving on {runtime.server.address}", file=sys.stderr, flush=True)

    await run_until_signalled([runtime.server], runtime.close, ready=_ready)


async def serve_deployer(
    settings: Settings,
    env: Mapping[str, str],
    host: str,
    port: int,
    http_port: int | None,
    apply_migrations: bool,
) -> None:
    """`http_port` None: APPFORGE_DEPLOY_HTTP_PORT, else 8080."""
    from appforge.services.common.server import run_until_signalled
    from appforge.services.deployer.bootstrap import build_deployer
    from appforge.services.deployer.settings import DeploySettings

    deploy = DeploySettings.from_env(env)
    if http_port is not None:
        deploy = deploy.serving_on(http_port)
    runtime = build_deployer(settings, deploy, host=host, port=port, http_port=deploy.http_port)
    await prepare_schema(runtime.engine, "deployer", apply_migrations)
    await runtime.start_background()
    http = runtime.http

    def _ready() -> None:
        apps = f", apps on http://{host}:{http.port}/apps/" if http is not None else ""
        print(
            f"appforge deployer serving on {runtime.server.address}{apps}",
            file=sys.stderr,
            flush=True,
        )

    await run_until_signalled([runtime.server], runtime.close, ready=_ready)


async def serve_builder(
    settings: Settings, env: Mapping[str, str], host: str, port: int, apply_migrations: bool
) -> None:
    from appforge.services.builder.bootstrap import build_builder
    from appforge.services.builder.settings import BuilderSettings
    from appforge.services.common.server import run_until_signalled

    runtime = build_builder(settings, BuilderSettings.from_env(env), host=host, port=port)
    await prepare_schema(runtime.engine, "builder", apply_migrations)
    await runtime.start_background()
    models = ", ".join(runtime.service.models)

    def _ready() -> None:
        print(
            f"appforge builder serving on {runtime.server.address} "
            f"(models: {models}; chat {settings.chat_addr}, deployer {settings.deployer_addr})",
            file=sys.stderr,
            flush=True,
        )

    await run_until_signalled([runtime.server], runtime.close, ready=_ready)
