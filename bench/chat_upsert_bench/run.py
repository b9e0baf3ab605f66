"""The run, wired: a bench database, migrations and the ceiling's table; then the service,
then the ceiling, each its own OS process, driven the same way; then the report."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any

from harness import (
    MIGRATE_TIMEOUT_S,
    Child,
    appforge_command,
    bench_database,
    free_port,
    log,
    run_command,
    running,
)

from appforge.services.common import auth

from .ceiling import CEILING_POOL_SIZE, create_ceiling_table
from .config import BenchConfig
from .phase import drive_server
from .report import report


async def run_bench(config: BenchConfig, workdir: Path, script: Path) -> dict[str, Any]:
    """The whole run: database, migrations, both servers, one after the other. `script` is
    the bench's entry point, which serves the ceiling when given `--ceiling-server`."""
    async with bench_database(config.admin_dsn) as dsn:
        env = {
            **os.environ,
            "DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
            "REDIS_URL": config.redis_url,
        }
        await run_command([*appforge_command(), "migrate"], env, MIGRATE_TIMEOUT_S)
        await create_ceiling_table(dsn)
        credentials = None
        if config.auth:
            key = secrets.token_hex(32)
            env[auth.SECRET] = key
            minter = auth.AuthSettings(secret=key.encode()).minter("bench")
            assert minter is not None
            token = minter.token(teams=["bench"], role=auth.Role.SERVICE, ttl=3600)
            credentials = auth.metadata_of(token)

        port = free_port()
        service = Child(
            "service",
            [*appforge_command(), "serve", "chat", "--host", "127.0.0.1", "--port", str(port)],
            env,
            workdir / "service.log",
        )
        async with running(service, f"127.0.0.1:{port}"):
            log(f"service serving on 127.0.0.1:{port} (pid {service.pid})")
            svc, app_ids = await drive_server(
                "service",
                f"127.0.0.1:{port}",
                service,
                None,
                config,
                profile=config.py_spy,
                credentials=credentials,
            )

        port = free_port()
        ceiling = Child(
            "ceiling",
            [
                sys.executable,
                str(script),
                "--ceiling-server",
                *("--port", str(port), "--dsn", dsn, "--pool-size", str(CEILING_POOL_SIZE)),
            ],
            dict(os.environ),
            workdir / "ceiling.log",
        )
        async with running(ceiling, f"127.0.0.1:{port}"):
            log(f"ceiling serving on 127.0.0.1:{port} (pid {ceiling.pid})")
            ceil, _ = await drive_server(
                "ceiling", f"127.0.0.1:{port}", ceiling, app_ids, config, credentials=credentials
            )
    return report(config, svc, ceil)
