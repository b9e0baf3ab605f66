"""The async SQLAlchemy engine for PostgreSQL (asyncpg) and SQLite (aiosqlite)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from appforge.services.common import tracing
from appforge.services.common.errors import ConfigError, Unavailable

SUPPORTED_DRIVERS = ("postgresql+asyncpg", "sqlite+aiosqlite")

# Raised by asyncpg itself when code uses the raw driver connection (the hot paths).
DRIVER_CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    OSError,  # connection refused, reset, timeouts
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,  # the server is full: try again later
    # The connection's protocol state was broken by a connection lost mid-operation.
    asyncpg.exceptions.InternalClientError,
)
# SQLSTATEs of a server that is going away or not there yet: class 08 (connection
# exception), 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now.
UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def connection_trouble(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised from (SQLAlchemy wraps the driver's), says
    the database is unreachable, going away or starting: a reason to answer UNAVAILABLE."""
    current: BaseException | None = exc
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DRIVER_CONNECTION_ERRORS):
            return True
        state = getattr(current, "sqlstate", None)
        if isinstance(state, str) and state.startswith(UNAVAILABLE_SQLSTATES):
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An engine for `url`, tuned per backend.

    SQLite: WAL, foreign keys on, every transaction opened with BEGIN IMMEDIATE so
    concurrent writers queue on the busy timeout instead of failing on lock upgrades, and
    connections that let go of their locks when closed (`_LockFreeingConnection`).
    """
    parsed = make_url(url)
    if parsed.drivername not in SUPPORTED_DRIVERS:
        drivers = ", ".join(SUPPORTED_DRIVERS)
        raise ConfigError(f"DATABASE_URL must use one of {drivers}, got {parsed.drivername!r}")
    if parsed.drivername.startswith("sqlite"):
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url,
            pool_size=1,
            max_overflow=0,
            pool_timeout=60,
            connect_args={"factory": _LockFreeingConnection},
        )
        _tune_sqlite(engine)
        return engine
    # No pre-ping: it costs three round trips per checkout. A dead connection fails its
    # one request with UNAVAILABLE and is invalidated, so the next one gets a fresh one.
    # No overflow either: under load, overflow connections are opened and closed per burst.
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=0, pool_timeout=30, pool_recycle=1800
    )


class _LockFreeingConnection(sqlite3.Connection):
    """sqlite3's connection, whose close first rolls back a transaction still open.

    A task cancelled inside a transaction (a shutdown, a client gone) leaves SQLAlchemy to
    close its connection, and a cursor it never exhausted holds a statement unfinalized. A
    plain close of such a connection is only a "zombie" close (sqlite3_close_v2): the
    connection, and its write lock, live on until that statement is garbage collected,
    and every other writer waits out its busy timeout and fails with "database is
    locked". A rollback aborts the pending statements and ends the transaction, so the
    lock goes with the close.
    """

    def close(self) -> None:
        if self.in_transaction:
            with suppress(sqlite3.Error):
                self.rollback()
        super().close()


def _tune_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN out of the driver's hands so we can emit BEGIN IMMEDIATE ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def standalone(engine: AsyncEngine) -> AsyncEngine:
    """The engine (same pool) for statements that stand alone, on PostgreSQL in autocommit:
    one statement is atomic by itself, and SQLAlchemy's BEGIN and COMMIT would add two
    round trips to each. On SQLite, whose transactions are opened by hand (BEGIN
    IMMEDIATE, see `create_engine`), the engine itself. Write with `.begin()` (a no-op
    transaction in autocommit, a real one on SQLite), read with `.connect()`."""
    if not is_postgres(engine):
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def is_postgres(engine: AsyncEngine | AsyncConnection) -> bool:
    """True on PostgreSQL, False on SQLite."""
    return engine.dialect.name == "postgresql"


def upsert_insert(bind: AsyncEngine | AsyncConnection, table: sa.Table) -> Any:
    """An INSERT of the bind's dialect, the kind that supports ON CONFLICT (PostgreSQL or
    SQLite); typed Any because the two dialects' Insert classes share no such base."""
    return (postgresql.insert if is_postgres(bind) else sqlite.insert)(table)


@asynccontextmanager
async def translate_errors(what: str) -> AsyncIterator[None]:
    """Turn a database that is down, unreachable, shutting down or starting up into
    `Unavailable`, whichever layer (SQLAlchemy or asyncpg) noticed; one span per operation
    when tracing is on."""
    try:
        with tracing.span(
            f"db {what}", kind="client", within=True, attributes={"db.operation": what}
        ):
            yield
    except (OperationalError, InterfaceError) as exc:
        raise Unavailable(f"database unavailable while {what}: {exc.orig!r}") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated or connection_trouble(exc):
            raise Unavailable(f"database unavailable while {what}: {exc.orig!r}") from exc
        raise
    except Exception as exc:
        if connection_trouble(exc):
            raise Unavailable(f"database unavailable while {what}: {exc!r}") from exc
        raise
