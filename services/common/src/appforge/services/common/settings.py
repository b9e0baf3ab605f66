"""Typed settings, read once from the environment in `main()` and passed down.

These are what every service reads (where the database, Redis and the peers are, logging,
shutdown, limits). What only one service reads lives with it: `DeploySettings` in
`appforge.services.deployer.settings`, `BuilderSettings` in `appforge.services.builder.settings`;
they parse their variables with the `read_*` functions below.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from appforge.services.common.auth import AuthSettings
from appforge.services.common.errors import ConfigError
from appforge.services.common.tls import TlsSettings

DEFAULT_PORTS = {"chat": 50051, "builder": 50052, "deployer": 50053}
# Prometheus metrics over HTTP; `appforge up` serves all three services' on "up".
DEFAULT_METRICS_PORTS = {"chat": 9051, "builder": 9052, "deployer": 9053, "up": 9050}


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Input limits enforced by every service; documented in the README."""

    max_id_length: int = 128
    max_name_length: int = 200
    max_user_content_bytes: int = 64 * 1024
    max_text_bytes: int = 256 * 1024
    max_items_per_upsert: int = 500
    max_calls_per_batch: int = 100
    max_json_bytes: int = 256 * 1024
    max_metadata_bytes: int = 64 * 1024
    max_page_size: int = 500
    default_page_size: int = 50
    max_grpc_message_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything an appforge process needs to know about its environment."""

    data_dir: Path = Path(".appforge")
    database_url: str = ""
    redis_url: str = ""
    chat_addr: str = "127.0.0.1:50051"
    builder_addr: str = "127.0.0.1:50052"
    deployer_addr: str = "127.0.0.1:50053"
    host: str = "127.0.0.1"
    log_level: str = "INFO"
    log_format: str = "logfmt"
    shutdown_grace: float = 5.0
    watch_poll_interval: float = 5.0
    # Changes a WatchApp stream may fall behind by before it catches up in snapshots.
    watch_buffer: int = 1024
    db_pool_size: int = 20
    # Batches of writes a process runs at once on PostgreSQL (chat's upserts); writes that
    # arrive while all are busy leave together in the next one.
    write_batches: int = 2
    metrics_port: int | None = None  # None: the service's default; 0: no metrics server
    limits: Limits = dataclasses.field(default_factory=Limits)
    tls: TlsSettings = dataclasses.field(default_factory=TlsSettings)
    auth: AuthSettings = dataclasses.field(default_factory=AuthSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables (see the README for each one)."""
        env = os.environ if env is None else env
        data_dir = Path(env.get("APPFORGE_DATA_DIR") or ".appforge")
        return cls(
            data_dir=data_dir,
            database_url=env.get("DATABASE_URL", ""),
            redis_url=env.get("REDIS_URL", ""),
            chat_addr=env.get("APPFORGE_CHAT_ADDR") or "127.0.0.1:50051",
            builder_addr=env.get("APPFORGE_BUILDER_ADDR") or "127.0.0.1:50052",
            deployer_addr=env.get("APPFORGE_DEPLOYER_ADDR") or "127.0.0.1:50053",
            host=env.get("APPFORGE_HOST") or "127.0.0.1",
            log_level=(env.get("APPFORGE_LOG_LEVEL") or "INFO").upper(),
            log_format=env.get("APPFORGE_LOG_FORMAT") or "logfmt",
            shutdown_grace=read_seconds(env, "APPFORGE_SHUTDOWN_GRACE", 5.0),
            watch_poll_interval=read_seconds(env, "APPFORGE_WATCH_POLL_INTERVAL", 5.0),
            watch_buffer=read_count(env, "APPFORGE_WATCH_BUFFER", 1024),
            db_pool_size=read_count(env, "APPFORGE_DB_POOL_SIZE", 20),
            write_batches=read_count(env, "APPFORGE_WRITE_BATCHES", 2),
            metrics_port=read_port(env, "APPFORGE_METRICS_PORT"),
            tls=TlsSettings.from_env(env),
            auth=AuthSettings.from_env(env),
        )

    def resolved_database_url(self) -> str:
        """`DATABASE_URL`, or the embedded SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'appforge.db').resolve()}"


def read_seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive, finite number of seconds, got {raw!r}")
    return value


def read_port(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or int(raw) > 65535:
        raise ConfigError(f"{name} must be a port number (0 turns it off), got {raw!r}")
    return int(raw)


def read_count(env: Mapping[str, str], name: str, default: int, *, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value
