"""Which database errors mean "unavailable": whatever layer raised them (SQLAlchemy wraps
asyncpg's), a server that is unreachable, shutting down or starting up is UNAVAILABLE; an
answer of the server about the statement is not."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError

from appforge.services.common.db import connection_trouble, translate_errors
from appforge.services.common.errors import Unavailable


def wrapped(driver_error: Exception) -> DBAPIError:
    """What SQLAlchemy's asyncpg adapter raises: its own error, from the driver's."""
    adapter_error = Exception(str(driver_error))
    adapter_error.__cause__ = driver_error
    return DBAPIError("SELECT 1", None, adapter_error)


def server_error(cls: type[asyncpg.PostgresError]) -> asyncpg.PostgresError:
    return cls.new({"C": cls.sqlstate, "M": "message"})


@pytest.mark.parametrize(
    "error",
    [
        server_error(asyncpg.exceptions.AdminShutdownError),  # 57P01: shutting down
        server_error(asyncpg.exceptions.CannotConnectNowError),  # 57P03: starting up
        server_error(asyncpg.exceptions.ConnectionFailureError),  # class 08
        asyncpg.exceptions.InternalClientError("cannot switch to state 12"),
        ConnectionRefusedError(111, "refused"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_server_going_away_is_trouble_however_wrapped(error: Exception) -> None:
    assert connection_trouble(error)
    assert connection_trouble(wrapped(error))


def test_the_servers_answer_about_a_statement_is_not() -> None:
    unique = server_error(asyncpg.exceptions.UniqueViolationError)
    assert not connection_trouble(unique) and not connection_trouble(wrapped(unique))
    assert not connection_trouble(ValueError("no"))


async def test_translate_errors_answers_unavailable_and_lets_the_rest_through() -> None:
    with pytest.raises(Unavailable, match="reading"):
        async with translate_errors("reading"):
            raise wrapped(server_error(asyncpg.exceptions.CannotConnectNowError))
    with pytest.raises(DBAPIError):
        async with translate_errors("reading"):
            raise wrapped(server_error(asyncpg.exceptions.UniqueViolationError))
