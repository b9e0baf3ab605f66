"""chat, the deployer and the builder, each `appforge serve` as an OS process, on a bench
database; the builder's model is `openai`, pointed at the bench's endpoint.

The deployer is there because a build ends with a real Deploy (local target): without it
every build would fail after its reply. It works after the measured window (the endpoint
holds the replies' ends until then), so its CPU there is near zero.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from harness import (
    MIGRATE_TIMEOUT_S,
    UNCAPPED_BUILDS,
    Child,
    appforge_command,
    free_port,
    run_command,
    running,
    serve_child,
)

from .config import StreamConfig

SERVICES = ("chat", "deployer", "builder")
MODEL_TIMEOUT_S = 120.0  # on top of the reply's streaming time


def _environments(
    config: StreamConfig, dsn: str, workdir: Path, addresses: dict[str, str], model_url: str
) -> dict[str, dict[str, str]]:
    """Each service's environment: the shared settings, then its own."""
    shared = {
        **os.environ,
        "DATABASE_URL": dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
        "REDIS_URL": config.redis_url,
        "APPFORGE_DATA_DIR": str(workdir / "data"),
        "APPFORGE_LOG_LEVEL": config.log_level,
        "APPFORGE_CHAT_ADDR": addresses["chat"],
        "APPFORGE_DEPLOYER_ADDR": addresses["deployer"],
    }
    return {
        "migrate": shared,
        "chat": shared,
        "deployer": {
            **shared,
            "APPFORGE_DEPLOY_ROOT": str(workdir / "deploys"),
            "APPFORGE_DEPLOY_PUBLIC_URL": f"http://{addresses['http']}",
        },
        "builder": {
            **shared,
            "APPFORGE_MODEL": "openai",
            "OPENAI_BASE_URL": model_url,
            "OPENAI_API_KEY": "bench",
            "APPFORGE_OPENAI_MODEL": "bench",
            "APPFORGE_OPENAI_TIMEOUT": f"{config.stream_s + MODEL_TIMEOUT_S:g}",
            "APPFORGE_STREAM_FLUSH_MS": f"{config.flush_ms:g}",
            **UNCAPPED_BUILDS,
        },
    }


async def start_services(
    config: StreamConfig,
    dsn: str,
    workdir: Path,
    model_url: str,
    stack: contextlib.AsyncExitStack,
) -> tuple[dict[str, Child], dict[str, str]]:
    """`appforge migrate`, then each service SERVING (stopped by `stack`); their addresses."""
    ports = {name: free_port() for name in (*SERVICES, "http")}
    addresses = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    envs = _environments(config, dsn, workdir, addresses, model_url)
    await run_command([*appforge_command(), "migrate"], envs["migrate"], MIGRATE_TIMEOUT_S)
    logs = config.logs or workdir
    extra = {"deployer": ("--http-port", str(ports["http"]))}
    children = {}
    for name in SERVICES:
        child = serve_child(name, ports[name], envs[name], logs, *extra.get(name, ()))
        children[name] = await stack.enter_async_context(running(child, addresses[name]))
    return children, addresses
