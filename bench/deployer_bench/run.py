"""The run: the artifact, then both configurations (one deployer, two), one after the
other with the same load, then the report. In `noop` mode each deployer configuration is
followed by procrastinate's with as many worker processes, on the same PostgreSQL."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from .artifact import build_artifact, minimal_artifact
from .config import BenchConfig
from .phase import run_phase
from .procrastinate_phase import run_queue_phase
from .report import report


async def run_bench(config: BenchConfig, workdir: Path) -> dict[str, Any]:
    """Both configurations, one after the other, with the same artifact and load; in
    `noop` mode interleaved with procrastinate's (1 deployer, 1 worker process, 2, 2), so
    a drift of the machine during the run hits both queues alike."""
    if config.mode == "local":
        artifact = build_artifact(config.files, random.Random(config.seed))
        one = await run_phase(1, config, artifact, workdir)
        two = await run_phase(2, config, artifact, workdir)
        return report(config, artifact, one, two)
    artifact = minimal_artifact()
    one = await run_phase(1, config, artifact, workdir)
    queue_one = await run_queue_phase(1, config, workdir)
    two = await run_phase(2, config, artifact, workdir)
    queue_two = await run_queue_phase(2, config, workdir)
    return report(config, artifact, one, two, (queue_one, queue_two))
