"""SQLite: a connection SQLAlchemy throws away in the middle of a write transaction (what it
does when a task is cancelled inside one) lets go of the write lock at once, even with a
cursor left unfinished, so the next writer does not wait out its busy timeout and fail
with "database is locked"."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from appforge.services.common import db

ROWS = 200  # more than one fetch of a cursor, so the SELECT below stays unfinished


async def _with_rows(path: Path) -> AsyncEngine:
    engine = db.create_engine(f"sqlite+aiosqlite:///{path}")
    async with engine.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        await conn.exec_driver_sql(
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?) "
            "INSERT INTO t (x) SELECT x FROM n",
            (ROWS,),
        )
    return engine


def _can_write(path: Path) -> bool:
    """Whether another connection gets the write lock within half a second."""
    other = sqlite3.connect(path, timeout=0.5, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc), exc
        return False
    finally:
        other.close()


async def test_a_connection_invalidated_mid_transaction_frees_the_write_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "locks.db"
    engine = await _with_rows(path)
    try:
        conn = await engine.connect()
        await conn.begin()  # BEGIN IMMEDIATE: this connection holds the write lock
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        cursor = await driver.execute("SELECT x FROM t")
        assert await cursor.fetchone() == (1,)  # and a statement left unfinished
        assert not await asyncio.to_thread(_can_write, path)

        await conn.invalidate()  # as on a CancelledError inside the transaction

        assert await asyncio.to_thread(_can_write, path)
        del cursor  # held until here: the lock went with the close, not with this
        await conn.close()
    finally:
        await engine.dispose()
