"""The builder's settings: deadlines, the sweeper, the default model, how text streams
(APPFORGE_*, OPENAI_*)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from appforge.services.common.errors import ConfigError
from appforge.services.common.settings import read_count, read_seconds

MODELS = ("scripted", "openai")


@dataclass(frozen=True, kw_only=True)
class BuilderSettings:
    """The builder: deadlines, the sweeper, the default model (APPFORGE_*, OPENAI_*), and
    how a turn's text streams into the flow: pending text is written `stream_flush_ms`
    after it began to wait, or at once when `stream_flush_chars` are pending; the scripted
    model waits `scripted_stream_ms` between words (0: no wait). A replica runs at most
    `max_running` executions, and a team at most `team_max_running` across replicas; a
    Build past either is refused at once (admission control, fair share)."""

    tool_timeout: float = 60.0
    sweep_interval: float = 5.0
    execution_lease: float = 30.0
    max_turns: int = 20
    model: str = "scripted"
    sandbox_root: Path | None = None  # None: <data dir>/sandboxes
    openai_base_url: str = ""
    openai_api_key: str = field(default="", repr=False)
    openai_model: str = ""
    openai_timeout: float = 120.0
    stream_flush_ms: float = 50.0
    stream_flush_chars: int = 256
    scripted_stream_ms: float = 20.0
    max_running: int = 64  # executions one replica runs at once; one more is refused
    team_max_running: int = 4  # executions one team runs at once, in every replica

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BuilderSettings:
        model = env.get("APPFORGE_MODEL") or "scripted"
        if model not in MODELS:
            raise ConfigError(f"APPFORGE_MODEL must be scripted or openai, got {model!r}")
        settings = cls(
            tool_timeout=read_seconds(env, "APPFORGE_TOOL_TIMEOUT", 60.0),
            sweep_interval=read_seconds(env, "APPFORGE_SWEEP_INTERVAL", 5.0),
            execution_lease=read_seconds(env, "APPFORGE_EXECUTION_LEASE", 30.0),
            max_turns=read_count(env, "APPFORGE_MAX_TURNS", 20),
            model=model,
            sandbox_root=Path(env["APPFORGE_SANDBOX_ROOT"])
            if env.get("APPFORGE_SANDBOX_ROOT")
            else None,
            openai_base_url=env.get("OPENAI_BASE_URL", ""),
            openai_api_key=env.get("OPENAI_API_KEY", ""),
            openai_model=env.get("APPFORGE_OPENAI_MODEL", ""),
            openai_timeout=read_seconds(env, "APPFORGE_OPENAI_TIMEOUT", 120.0),
            stream_flush_ms=read_millis(env, "APPFORGE_STREAM_FLUSH_MS", 50.0),
            stream_flush_chars=read_count(env, "APPFORGE_STREAM_FLUSH_CHARS", 256),
            scripted_stream_ms=read_millis(
                env, "APPFORGE_SCRIPTED_STREAM_MS", 20.0, zero_allowed=True
            ),
            max_running=read_count(env, "APPFORGE_BUILDER_MAX_RUNNING", 64),
            team_max_running=read_count(env, "APPFORGE_TEAM_MAX_RUNNING_BUILDS", 4),
        )
        if model == "openai" and not settings.openai_configured:
            raise ConfigError(
                "APPFORGE_MODEL=openai needs OPENAI_BASE_URL and APPFORGE_OPENAI_MODEL"
            )
        return settings

    def sandboxes_under(self, data_dir: Path) -> Path:
        """Where executions write their files: APPFORGE_SANDBOX_ROOT or <data dir>/sandboxes."""
        return self.sandbox_root or (data_dir / "sandboxes")

    @property
    def openai_configured(self) -> bool:
        return bool(self.openai_base_url and self.openai_model)


def read_millis(
    env: Mapping[str, str], name: str, default: float, *, zero_allowed: bool = False
) -> float:
    """A duration in milliseconds (decimals allowed): positive, or also 0 if `zero_allowed`."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of milliseconds, got {raw!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_allowed):
        if zero_allowed:
            kind = "a finite number of milliseconds, 0 or more"
        else:
            kind = "a positive, finite number of milliseconds"
        raise ConfigError(f"{name} must be {kind}, got {raw!r}")
    return value
