"""Apps: their rows, and each app's change counter.

Every write to an app's messages bumps `chat_apps.change_seq` inside its transaction and
stamps the message with the new value: the row lock taken by the bump orders the commits,
so an app's change cursors are dense and commit in cursor order.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from appforge.services.chat.domain import App
from appforge.services.chat.store.rows import app_from_row, new_id
from appforge.services.chat.store.tables import apps
from appforge.services.common.clock import HybridClock
from appforge.services.common.db import translate_errors
from appforge.services.common.errors import AlreadyExists, NotFound


async def create_app(
    engine: AsyncEngine, clock: HybridClock, team_id: str, name: str, *, return_existing: bool
) -> App:
    """A new app; the team's app of that name when `return_existing`, else ALREADY_EXISTS."""
    app = App(id=new_id(), team_id=team_id, name=name, created_us=clock.tick())
    try:
        async with translate_errors("creating an app"), engine.begin() as conn:
            await conn.execute(
                apps.insert().values(
                    id=app.id, team_id=team_id, name=name, created_us=app.created_us
                )
            )
    except IntegrityError as exc:
        if return_existing:
            return await _app_named(engine, team_id, name)
        raise AlreadyExists(
            f"team {team_id!r} already has an app named {name!r}", field="name"
        ) from exc
    return app


async def _app_named(engine: AsyncEngine, team_id: str, name: str) -> App:
    async with translate_errors("reading an app"), engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(apps).where(apps.c.team_id == team_id, apps.c.name == name)
            )
        ).one()
    return app_from_row(row._mapping)


async def get_app(engine: AsyncEngine, app_id: str) -> App:
    async with translate_errors("reading an app"), engine.connect() as conn:
        row = (await conn.execute(sa.select(apps).where(apps.c.id == app_id))).first()
    if row is None:
        raise NotFound(f"no app {app_id!r}", field="app_id")
    return app_from_row(row._mapping)


async def require_app(conn: AsyncConnection, app_id: str) -> None:
    """NOT_FOUND unless the app exists (inside the caller's transaction)."""
    found = await conn.scalar(sa.select(apps.c.id).where(apps.c.id == app_id))
    if found is None:
        raise NotFound(f"no app {app_id!r}", field="app_id")


async def bump_cursor(conn: AsyncConnection, app_id: str) -> int:
    """The app's next change cursor; the row lock orders commits by cursor."""
    stmt = (
        apps.update()
        .where(apps.c.id == app_id)
        .values(change_seq=apps.c.change_seq + 1)
        .returning(apps.c.change_seq)
    )
    return int((await conn.execute(stmt)).scalar_one())
