"""Shared test infrastructure: real PostgreSQL and Redis for every run.

Where they come from, in order:
1. testcontainers, when a container engine answers (images from
   APPFORGE_TEST_POSTGRES_IMAGE / APPFORGE_TEST_REDIS_IMAGE, official ones when unset);
2. the servers named by TEST_DATABASE_URL / TEST_REDIS_URL, defaulting to the local
   ones on 127.0.0.1:5432 and :6379.
Under CI=true a test that needs them fails when neither is there; elsewhere it skips.
Each run gets its own database, migrated once and dropped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy.engine import make_url

# Fixtures shared by the modules of one concept, split apart to stay readable.
pytest_plugins = [
    "tests.unit.deployer_local_helpers",
    "tests.integration.builder_service_helpers",
    "tests.integration.deployer_s3_fixtures",
    "tests.e2e.golden_stack",
]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass(frozen=True, kw_only=True)
class Infra:
    """Where this run's PostgreSQL server and Redis are."""

    admin_url: str  # postgresql+asyncpg URL of a maintenance database
    redis_url: str
    source: str  # "testcontainers" or "local"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def _engine_reachable() -> bool:
    if os.environ.get("APPFORGE_TEST_CONTAINERS", "auto") == "off":
        return False
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://") and not os.path.exists(host[len("unix://") :]):
        return False
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _tcp_open(url: str, default_port: int) -> bool:
    parts = urlsplit(url.replace("+asyncpg", ""))
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _containers() -> Iterator[Infra]:
    with warnings.catch_warnings():
        # Older testcontainers only had the top-level modules, which newer ones deprecate.
        warnings.filterwarnings(
            "ignore", message=r"testcontainers\.\w+ is deprecated", category=DeprecationWarning
        )
        try:
            from testcontainers.community.postgres import PostgresContainer
            from testcontainers.community.redis import RedisContainer
        except ImportError:
            from testcontainers.postgres import PostgresContainer
            from testcontainers.redis import RedisContainer
    pg_image = os.environ.get("APPFORGE_TEST_POSTGRES_IMAGE") or "postgres:16-alpine"
    redis_image = os.environ.get("APPFORGE_TEST_REDIS_IMAGE") or "redis:7-alpine"
    # Whoever started this run (.ci/run sets APPFORGE_TEST_RUN_ID) removes by this label exactly
    # the containers it started, not every testcontainers container on the host. The
    # org.testcontainers.* labels are testcontainers' own; their session id is per process.
    run_id = os.environ.get("APPFORGE_TEST_RUN_ID") or f"pytest-{os.getpid()}-{uuid.uuid4().hex}"
    labels = {"io.appforge.test-run": run_id}
    postgres = PostgresContainer(
        pg_image,
        username="postgres",
        password="postgres",
        dbname="postgres",
        driver=None,
        labels=labels,
    )
    redis = RedisContainer(redis_image, labels=labels)
    with postgres, redis:
        pg_host, pg_port = postgres.get_container_host_ip(), postgres.get_exposed_port(5432)
        r_host, r_port = redis.get_container_host_ip(), redis.get_exposed_port(6379)
        yield Infra(
            admin_url=f"postgresql+asyncpg://postgres:postgres@{pg_host}:{pg_port}/postgres",
            redis_url=f"redis://{r_host}:{r_port}/0",
            source="testcontainers",
        )


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """PostgreSQL and Redis for this run (see the module docstring)."""
    if _engine_reachable():
        with _containers() as found:
            yield found
        return
    admin_url = (
        os.environ.get("TEST_DATABASE_URL")
        or "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    )
    redis_url = os.environ.get("TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
    if not _tcp_open(admin_url, 5432):
        _unavailable(
            f"no container engine and no PostgreSQL at {make_url(admin_url).render_as_string()}"
        )
    if not _tcp_open(redis_url, 6379):
        _unavailable(f"no container engine and no Redis at {redis_url}")
    yield Infra(admin_url=admin_url, redis_url=redis_url, source="local")


async def _admin(infra: Infra, sql: str) -> None:
    import asyncpg

    url = make_url(infra.admin_url).set(drivername="postgresql")
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _create_database(infra: Infra, name: str) -> str:
    from appforge.cli import installed
    from appforge.services.common import db, migrate

    await _admin(infra, f'CREATE DATABASE "{name}"')
    url = make_url(infra.admin_url).set(database=name).render_as_string(hide_password=False)
    engine = db.create_engine(url)
    try:
        await migrate.upgrade(engine, installed.histories())
    finally:
        await engine.dispose()
    return url


@pytest.fixture(scope="session")
def pg_url(infra: Infra) -> Iterator[str]:
    """A fresh, migrated database on the run's PostgreSQL server, dropped at the end.

    Synchronous (its own short event loop) so that parametrized fixtures can ask for it.
    """
    name = f"appforge_test_{uuid.uuid4().hex[:12]}"
    url = asyncio.run(_create_database(infra, name))
    yield url
    asyncio.run(_admin(infra, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def redis_url(infra: Infra) -> str:
    return infra.redis_url


def pytest_report_header(config: pytest.Config) -> str:
    if _engine_reachable():
        images = (
            os.environ.get("APPFORGE_TEST_POSTGRES_IMAGE") or "postgres:16-alpine",
            os.environ.get("APPFORGE_TEST_REDIS_IMAGE") or "redis:7-alpine",
        )
        return f"appforge infra: testcontainers ({', '.join(images)})"
    return "appforge infra: local servers (TEST_DATABASE_URL / TEST_REDIS_URL or 127.0.0.1)"


# The suite a test belongs to is the folder it lives in; the markers say the same, so
# `pytest -m "not e2e"` (or `-m integration`) selects across folders and no module can forget one.
_SUITE_MARKERS = {"integration": pytest.mark.integration, "e2e": pytest.mark.e2e}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_root = Path(__file__).parent
    for item in items:
        suite = item.path.relative_to(tests_root).parts[0]
        marker = _SUITE_MARKERS.get(suite)
        if marker is not None:
            item.add_marker(marker)
