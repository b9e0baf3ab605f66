"""The run: the artifact, then both configurations (one deployer, two), one after the
other with the same load, then the report."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from .artifact import build_artifact
from .config import BenchConfig
from .phase import run_phase
from .report import report


async def run_bench(config: BenchConfig, workdir: Path) -> dict[str, Any]:
    """Both configurations, one after the other, with the same artifact and load."""
    artifact = build_artifact(config.files, random.Random(config.seed))
    one = await run_phase(1, config, artifact, workdir)
    two = await run_phase(2, config, artifact, workdir)
    return report(config, artifact, one, two)
