"""Alembic migrations, run programmatically on an async engine.

Each service keeps its own migration history (its own version table), because each owns its
own tables, and hands it over as a `SchemaHistory` (`appforge.services.<name>.schema.HISTORY`):
this module knows no service by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.services.common.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class SchemaHistory:
    """One service's migrations: where its Alembic scripts are, and its version table."""

    service: str
    location: Traversable  # the `migrations/` folder shipped in the service's package

    @property
    def version_table(self) -> str:
        return f"alembic_version_{self.service}"


def alembic_config(history: SchemaHistory) -> Config:
    """The Alembic configuration of one service's migration history."""
    config = Config()
    config.set_main_option("script_location", str(history.location))
    config.attributes["version_table"] = history.version_table
    return config


def _revision(connection: Connection, history: SchemaHistory) -> str | None:
    from alembic.runtime.migration import MigrationContext

    opts = {"version_table": history.version_table}
    return MigrationContext.configure(connection, opts=opts).get_current_revision()


async def upgrade(engine: AsyncEngine, histories: Sequence[SchemaHistory]) -> None:
    """Bring the schema of each service handed over up to its latest revision; one log line
    per schema that moved (Alembic's own narration is kept below INFO)."""
    for history in histories:
        config = alembic_config(history)

        def _run(
            connection: Connection, config: Config = config, history: SchemaHistory = history
        ) -> tuple[str | None, str | None]:
            before = _revision(connection, history)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            return before, _revision(connection, history)

        async with engine.begin() as conn:
            before, after = await conn.run_sync(_run)
        if before != after:
            log.info("schema.migrated", service=history.service, before=before, after=after)


def run_env(context: EnvironmentContext) -> None:
    """The body of every service's `env.py`: migrate over the connection we were handed."""
    config = context.config
    connection: Connection | None = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through `appforge migrate`, not the alembic CLI")
    options: dict[str, Any] = {
        "connection": connection,
        "version_table": config.attributes["version_table"],
        "render_as_batch": connection.dialect.name == "sqlite",
    }
    context.configure(**options)
    with context.begin_transaction():
        context.run_migrations()


async def require_current(engine: AsyncEngine, histories: Sequence[SchemaHistory]) -> None:
    """Refuse to serve on a schema that is behind: tell the operator what to run."""
    from alembic.script import ScriptDirectory

    from appforge.services.common.errors import FailedPrecondition

    for history in histories:
        head = ScriptDirectory.from_config(alembic_config(history)).get_current_head()
        async with engine.connect() as conn:
            current = await conn.run_sync(_revision, history)
        if current != head:
            raise FailedPrecondition(
                f"the {history.service} schema is at {current or 'nothing'}, not {head}: "
                "run `appforge migrate`"
            )
