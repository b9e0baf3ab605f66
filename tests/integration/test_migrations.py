"""Migrations build exactly the tables the store declares, on both backends."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from appforge.cli import installed
from appforge.services.builder.tables import metadata as builder_metadata
from appforge.services.chat.store import metadata as chat_metadata
from appforge.services.common import db, migrate
from appforge.services.deployer.tables import metadata as deployer_metadata

metadata = sa.MetaData()
for source in (chat_metadata, deployer_metadata, builder_metadata):
    for table in source.tables.values():
        table.to_metadata(metadata)


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return [
        d
        for d in compare_metadata(context, metadata)
        # Alembic's own version tables are not the store's business.
        if not (d[0] == "remove_table" and d[1].name.startswith("alembic_version"))
    ]


async def test_migrated_schema_matches_the_store(backend: tuple[str, str, str | None]) -> None:
    _, url, _ = backend
    engine = db.create_engine(url)
    try:
        await migrate.upgrade(engine, installed.histories())
        await migrate.upgrade(engine, installed.histories())  # idempotent
        await migrate.require_current(engine, installed.histories())
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()
