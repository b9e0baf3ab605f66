"""The run: the artifact, then both configurations (one deployer, two), one after the
other with the same load, then the report. In `noop` mode each deployer configuration is
followed by procrastinate's with as many worker processes, on the same PostgreSQL."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from .artifact import build_artifact, minimal_artifact
from .compare import Round, rounds_summary
from .config import BenchConfig
from .phase import run_phase
from .procrastinate_phase import run_queue_phase
from .report import report
from .wake import run_wake


async def run_bench(config: BenchConfig, workdir: Path) -> dict[str, Any]:
    """Both configurations, one after the other, with the same artifact and load; in
    `noop` mode interleaved with procrastinate's (1 deployer, 1 worker process, 2, 2),
    `rounds` times, so a drift of the machine during the run hits both queues alike; the
    detailed tables are the last round's."""
    if config.mode == "wake":
        return await run_wake(config, workdir)
    if config.mode == "local":
        artifact = build_artifact(config.files, random.Random(config.seed))
        one = await run_phase(1, config, artifact, workdir)
        two = await run_phase(2, config, artifact, workdir)
        return report(config, artifact, one, two)
    artifact = minimal_artifact()
    rounds: list[Round] = []
    for n in range(1, config.rounds + 1):
        here = workdir / f"round-{n}"  # each round's roots and logs
        here.mkdir()
        one = await run_phase(1, config, artifact, here)
        queue_one = await run_queue_phase(1, config, here)
        two = await run_phase(2, config, artifact, here)
        queue_two = await run_queue_phase(2, config, here)
        rounds.append(Round(one, queue_one, two, queue_two))
    last = rounds[-1]
    result = report(config, artifact, last.one, last.two, (last.queue_one, last.queue_two))
    result.update(rounds_summary(rounds))
    result["correct"] = result["correct"] and all(r.correct for r in rounds)
    return result
