"""A service's PostgreSQL hot path: a plain asyncpg pool beside its SQLAlchemy engine, and
statements compiled once.

Through SQLAlchemy, a Core statement is built, given a cache key, looked up in the
compilation cache and its rows wrapped on every call, and a raw connection is checked out
through the async adapter: on this stack about 700 µs of CPU for one small `UPDATE …
RETURNING`, against 200 µs for the same statement on a plain asyncpg pool (`bench/README.md`,
"the hot path"). Paths that run a few fixed statements per request keep them here:

- `HotPool`: the pool (the path's share of the process's connections, `pool_shares`),
  opened on first use; a connection whose call ended in anything but the server's own
  answer (a connection lost mid-call, a cancellation) is closed rather than handed on;
- `Prepared`: a Core statement compiled once for PostgreSQL with named parameters
  (`sa.bindparam`); `args(**values)` lays them out positionally, the values the statement
  was built with filling the rest;
- `Row`: an asyncpg record read by attribute, the way the stores read SQLAlchemy rows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.compiler import SQLCompiler

from appforge.services.common.db import connection_trouble
from appforge.services.common.errors import AppforgeError

_DIALECT = PGDialect_asyncpg()  # type: ignore[no-untyped-call]


def pool_shares(budget: int, *, postgres: bool) -> tuple[int, int]:
    """How a process's database connections (APPFORGE_DB_POOL_SIZE) are split between the
    engine (everything else) and the hot path's own pool: a quarter and the rest on
    PostgreSQL, so the process never opens more than its budget; SQLite has one engine
    connection and no hot path."""
    if not postgres:
        return budget, 0
    engine = max(1, budget // 4)
    return engine, max(1, budget - engine)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Release a connection without asyncpg's reset (`RESET ALL`, `UNLISTEN *`, …): the hot
    paths set no session state, and the reset would add a round trip and server work to
    every call (`reset=None` means "the default reset", not "none")."""


class HotPool:
    """A plain asyncpg pool on the engine's database, `size` connections at most."""

    def __init__(self, engine: AsyncEngine, size: int) -> None:
        self.dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.size = size
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def _acquire_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self.dsn, min_size=1, max_size=self.size, reset=_keep_session
                    )
        return self._pool

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection that goes back only in a known state: one whose call ended
        in anything but the server's own answer (or a refusal of the domain's) is closed,
        so the pool opens a fresh one rather than handing it to the next request."""
        pool = await self._acquire_pool()
        async with pool.acquire() as connection:
            try:
                yield connection
            except BaseException as exc:
                answered = isinstance(exc, (asyncpg.PostgresError, AppforgeError))
                if not answered or connection_trouble(exc):
                    connection.terminate()
                raise

    async def fetch(self, statement: Prepared, **values: Any) -> list[Row]:
        """`statement`'s rows, in one round trip, outside any transaction."""
        async with self.connection() as connection:
            records = await connection.fetch(statement.sql, *statement.args(values))
        return [Row(record) for record in records]

    async def fetchrow(self, statement: Prepared, **values: Any) -> Row | None:
        async with self.connection() as connection:
            record = await connection.fetchrow(statement.sql, *statement.args(values))
        return None if record is None else Row(record)

    async def close(self) -> None:
        """Close the pool (a later call opens a new one)."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


@dataclass(frozen=True)
class Prepared:
    """A Core statement as PostgreSQL (asyncpg) runs it: its SQL, and its parameters' names
    in the order of `$1, $2, …` with the values it was built with. `statement` is the Core
    statement itself, for a backend without the hot path to run with the same values (where
    it uses nothing PostgreSQL's own)."""

    sql: str
    names: tuple[str, ...]
    built_with: Mapping[str, Any]
    statement: sa.Executable

    @classmethod
    def of(cls, statement: sa.Executable) -> Prepared:
        assert isinstance(statement, sa.ClauseElement)
        compiled = statement.compile(dialect=_DIALECT)
        assert isinstance(compiled, SQLCompiler)
        return cls(
            str(compiled), tuple(compiled.positiontup or ()), dict(compiled.params), statement
        )

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        if not values.keys() <= self.built_with.keys():  # a misspelt name would go unset
            unknown = sorted(values.keys() - self.built_with.keys())
            raise KeyError(f"the statement has no parameter {unknown}")
        merged = {**self.built_with, **values}
        return [merged[name] for name in self.names]


class Row:
    """An asyncpg record whose columns read as attributes."""

    __slots__ = ("_record",)

    def __init__(self, record: asyncpg.Record) -> None:
        self._record = record

    def __getattr__(self, name: str) -> Any:
        try:
            return self._record[name]
        except KeyError:
            raise AttributeError(name) from None
