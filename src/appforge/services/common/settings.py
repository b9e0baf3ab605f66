"""Typed settings, read once from the environment in `main()` and passed down."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from appforge.services.common.errors import ConfigError

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
class DeploySettings:
    """The deployer: targets, default policy, workers (APPFORGE_DEPLOY_*, APPFORGE_S3_*)."""

    target: str = "local"
    root: Path | None = None  # None: <data dir>/deploys
    http_port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    s3_endpoint_url: str = ""
    s3_bucket: str = ""
    s3_region: str = "us-east-1"
    s3_public_url: str = ""
    aws_access_key_id: str = ""
    aws_secret_access_key: str = ""
    attempt_timeout: float = 300.0
    max_attempts: int = 4
    initial_backoff: float = 1.0
    max_backoff: float = 60.0
    lease: float = 30.0
    workers: int = 4
    poll_interval: float = 1.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DeploySettings:
        target = env.get("APPFORGE_DEPLOY_TARGET") or "local"
        if target not in ("local", "s3"):
            raise ConfigError(f"APPFORGE_DEPLOY_TARGET must be local or s3, got {target!r}")
        http_port = _count(env, "APPFORGE_DEPLOY_HTTP_PORT", 8080)
        root = env.get("APPFORGE_DEPLOY_ROOT")
        return cls(
            target=target,
            root=Path(root) if root else None,
            http_port=http_port,
            public_url=env.get("APPFORGE_DEPLOY_PUBLIC_URL") or f"http://127.0.0.1:{http_port}",
            s3_endpoint_url=env.get("APPFORGE_S3_ENDPOINT_URL", ""),
            s3_bucket=env.get("APPFORGE_S3_BUCKET", ""),
            s3_region=env.get("APPFORGE_S3_REGION") or "us-east-1",
            s3_public_url=env.get("APPFORGE_S3_PUBLIC_URL", ""),
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID", ""),
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY", ""),
            attempt_timeout=_seconds(env, "APPFORGE_DEPLOY_ATTEMPT_TIMEOUT", 300.0),
            max_attempts=_count(env, "APPFORGE_DEPLOY_MAX_ATTEMPTS", 4),
            initial_backoff=_seconds(env, "APPFORGE_DEPLOY_INITIAL_BACKOFF", 1.0),
            max_backoff=_seconds(env, "APPFORGE_DEPLOY_MAX_BACKOFF", 60.0),
            lease=_seconds(env, "APPFORGE_DEPLOY_LEASE", 30.0),
            workers=_count(env, "APPFORGE_DEPLOY_WORKERS", 4),
            poll_interval=_seconds(env, "APPFORGE_DEPLOY_POLL_INTERVAL", 1.0),
        )

    def serving_on(self, http_port: int) -> DeploySettings:
        """These settings with the HTTP server on `http_port`; a public URL that was only
        derived from the default port follows it, one set explicitly stays."""
        derived = self.public_url == f"http://127.0.0.1:{self.http_port}"
        return dataclasses.replace(
            self,
            http_port=http_port,
            public_url=f"http://127.0.0.1:{http_port}" if derived else self.public_url,
        )

    @property
    def s3_configured(self) -> bool:
        return bool(self.s3_bucket)


MODELS = ("scripted", "openai")


@dataclass(frozen=True, kw_only=True)
class BuilderSettings:
    """The builder: deadlines, the sweeper, the default model (APPFORGE_*, OPENAI_*)."""

    tool_timeout: float = 60.0
    sweep_interval: float = 5.0
    execution_lease: float = 30.0
    max_turns: int = 20
    model: str = "scripted"
    sandbox_root: Path | None = None  # None: <data dir>/sandboxes
    openai_base_url: str = ""
    openai_api_key: str = ""
    openai_model: str = ""
    openai_timeout: float = 120.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BuilderSettings:
        model = env.get("APPFORGE_MODEL") or "scripted"
        if model not in MODELS:
            raise ConfigError(f"APPFORGE_MODEL must be scripted or openai, got {model!r}")
        settings = cls(
            tool_timeout=_seconds(env, "APPFORGE_TOOL_TIMEOUT", 60.0),
            sweep_interval=_seconds(env, "APPFORGE_SWEEP_INTERVAL", 5.0),
            execution_lease=_seconds(env, "APPFORGE_EXECUTION_LEASE", 30.0),
            max_turns=_count(env, "APPFORGE_MAX_TURNS", 20),
            model=model,
            sandbox_root=Path(env["APPFORGE_SANDBOX_ROOT"])
            if env.get("APPFORGE_SANDBOX_ROOT")
            else None,
            openai_base_url=env.get("OPENAI_BASE_URL", ""),
            openai_api_key=env.get("OPENAI_API_KEY", ""),
            openai_model=env.get("APPFORGE_OPENAI_MODEL", ""),
            openai_timeout=_seconds(env, "APPFORGE_OPENAI_TIMEOUT", 120.0),
        )
        if model == "openai" and not settings.openai_configured:
            raise ConfigError(
                "APPFORGE_MODEL=openai needs OPENAI_BASE_URL and APPFORGE_OPENAI_MODEL"
            )
        return settings

    @property
    def openai_configured(self) -> bool:
        return bool(self.openai_base_url and self.openai_model)


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
    db_pool_size: int = 20
    metrics_port: int | None = None  # None: the service's default; 0: no metrics server
    deploy: DeploySettings = dataclasses.field(default_factory=DeploySettings)
    builder: BuilderSettings = dataclasses.field(default_factory=BuilderSettings)
    limits: Limits = dataclasses.field(default_factory=Limits)

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
            shutdown_grace=_seconds(env, "APPFORGE_SHUTDOWN_GRACE", 5.0),
            watch_poll_interval=_seconds(env, "APPFORGE_WATCH_POLL_INTERVAL", 5.0),
            db_pool_size=_count(env, "APPFORGE_DB_POOL_SIZE", 20),
            metrics_port=_port(env, "APPFORGE_METRICS_PORT"),
            deploy=DeploySettings.from_env(env),
            builder=BuilderSettings.from_env(env),
        )

    def deploy_root(self) -> Path:
        """Where the `local` target publishes: APPFORGE_DEPLOY_ROOT or <data dir>/deploys."""
        return self.deploy.root or (self.data_dir / "deploys")

    def sandbox_root(self) -> Path:
        """Where executions write their files: APPFORGE_SANDBOX_ROOT or <data dir>/sandboxes."""
        return self.builder.sandbox_root or (self.data_dir / "sandboxes")

    def resolved_database_url(self) -> str:
        """`DATABASE_URL`, or the embedded SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'appforge.db').resolve()}"


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
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


def _port(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or int(raw) > 65535:
        raise ConfigError(f"{name} must be a port number (0 turns it off), got {raw!r}")
    return int(raw)


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, got {raw!r}")
    return value
