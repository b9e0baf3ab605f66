"""One run's parameters, from the command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Mode = Literal["local", "noop", "wake"]
MODES: tuple[Mode, ...] = ("local", "noop", "wake")


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """One run's parameters, from the command line. `mode`: `local` deploys `files` files to
    the local target; `noop` deploys one file to the noop target and runs procrastinate's
    no-op jobs beside it, its workers polling every `procrastinate_poll_interval` seconds,
    `rounds` times over (the medians judge the target: on a shared VM one round is noise);
    `wake` sends noop deployments to a replica whose workers are all busy (`wake.py`)."""

    mode: Mode
    deployments: int
    files: int
    workers: int
    concurrency: int
    poll_interval: float
    seed: int
    admin_dsn: str
    redis_url: str
    procrastinate_poll_interval: float
    py_spy: Path | None
    rounds: int = 1
