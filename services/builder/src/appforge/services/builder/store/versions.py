"""App versions: what an execution built, stored once per execution, file by file."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.services.builder.domain import AppVersion
from appforge.services.builder.tables import app_version_files, app_versions
from appforge.services.common.db import translate_errors, upsert_insert
from appforge.services.common.errors import NotFound


class VersionQueries:
    """Saving and reading app versions."""

    engine: AsyncEngine

    async def save_version(
        self, execution_id: str, app_id: str, files: Sequence[tuple[str, bytes]], now_us: int
    ) -> str:
        """Store what an execution built; idempotent by execution (returns the version id)."""
        version_id = str(uuid.uuid4())
        async with translate_errors("saving an app version"), self.engine.begin() as conn:
            inserted = (
                await conn.execute(
                    upsert_insert(self.engine, app_versions)
                    .values(
                        id=version_id, app_id=app_id, execution_id=execution_id, created_us=now_us
                    )
                    .on_conflict_do_nothing(index_elements=["execution_id"])
                    .returning(app_versions.c.id)
                )
            ).first()
            if inserted is None:
                existing = await conn.scalar(
                    sa.select(app_versions.c.id).where(app_versions.c.execution_id == execution_id)
                )
                return str(existing)
            if files:
                await conn.execute(
                    app_version_files.insert(),
                    [{"version_id": version_id, "path": p, "content": c} for p, c in files],
                )
        return version_id

    async def version(self, version_id: str) -> AppVersion:
        """A version with its files in path order; NotFound if there is none."""
        async with translate_errors("reading an app version"), self.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(app_versions).where(app_versions.c.id == version_id))
            ).first()
            if row is None:
                raise NotFound(f"no app version {version_id!r}", field="app_version_id")
            files = await conn.execute(
                sa.select(app_version_files)
                .where(app_version_files.c.version_id == version_id)
                .order_by(app_version_files.c.path)
            )
            return AppVersion(
                id=row.id,
                app_id=row.app_id,
                execution_id=row.execution_id,
                created_us=row.created_us,
                files=tuple((f.path, bytes(f.content)) for f in files),
            )
