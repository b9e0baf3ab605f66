"""`appforge migrate` and `appforge serve SERVICE`: what needs the database layer, imported
only by the commands that do (the others, `health` above all, start without it)."""

from __future__ import annotations

import sys

from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.services.common import db, migrate
from appforge.services.common.settings import Settings


async def prepare_schema(engine: AsyncEngine, service: str, apply_migrations: bool) -> None:
    """Apply migrations, or refuse to serve on a schema that is behind."""
    if apply_migrations:
        await migrate.upgrade(engine)
    else:
        await migrate.require_current(engine, (service,))


async def migrate_database(settings: Settings) -> None:
    engine = db.create_engine(settings.resolved_database_url())
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()


async def serve_chat(settings: Settings, host: str, port: int, apply_migrations: bool) -> None:
    from appforge.services.chat.bootstrap import build_chat
    from appforge.services.common.server import run_until_signalled

    runtime = build_chat(settings, host=host, port=port)
    await prepare_schema(runtime.engine, "chat", apply_migrations)

    def _ready() -> None:
        print(f"appforge chat serving on {runtime.server.address}", file=sys.stderr, flush=True)

    await run_until_signalled([runtime.server], runtime.close, ready=_ready)


async def serve_deployer(
    settings: Settings, host: str, port: int, http_port: int, apply_migrations: bool
) -> None:
    from appforge.services.common.server import run_until_signalled
    from appforge.services.deployer.bootstrap import build_deployer

    runtime = build_deployer(settings, host=host, port=port, http_port=http_port)
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


async def serve_builder(settings: Settings, host: str, port: int, apply_migrations: bool) -> None:
    from appforge.services.builder.bootstrap import build_builder
    from appforge.services.common.server import run_until_signalled

    runtime = build_builder(settings, host=host, port=port)
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
