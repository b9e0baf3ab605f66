"""What must hold after a configuration's run: every deployment SUCCEEDED once, `versions/`
holds exactly the deployed versions, complete (in `noop` mode: no version directory at
all, the target publishes nothing), no staging left, every notice acknowledged."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from appforge.api.deployer.v1 import deployer_pb2

from .artifact import Artifact
from .tables import SUCCEEDED, Notices


@dataclass(frozen=True, kw_only=True)
class Checks:
    """What must hold after a configuration's run; `problems` empty when all of it does."""

    succeeded: int
    one_attempt: int
    version_dirs: int
    versions_complete: int
    staging_left: int
    notices_delivered: int
    notice_tries: int
    notice_lag_s: float  # the last notice acknowledged, after the last deployment ended
    problems: list[str]


def check_root(
    root: Path, app_id: str, version_ids: Sequence[str], artifact: Artifact
) -> dict[str, Any]:
    """The version directories as they are on disk, against the versions deployed."""
    versions = root / "apps" / app_id / "versions"
    listed = sorted(os.listdir(versions)) if versions.is_dir() else []
    expected = set(version_ids)
    complete = 0
    for version_id in expected.intersection(listed):
        base = versions / version_id
        found = {
            str((Path(d) / f).relative_to(base)) for d, _, names in os.walk(base) for f in names
        }
        index = base / "index.html"
        if found == artifact.paths and f"data-version={version_id}>" in index.read_text():
            complete += 1
    staging = root / ".staging"
    return {
        "listed": len(listed),
        "unique": len(set(listed)),
        "missing": len(expected.difference(listed)),
        "extra": len(set(listed).difference(expected)),
        "complete": complete,
        "staging_left": len(os.listdir(staging)) if staging.is_dir() else 0,
    }


def build_checks(
    rows: Sequence[asyncpg.Record],
    expected: Sequence[str],
    disk: dict[str, Any],
    notices: Notices,
    *,
    published: bool,
) -> Checks:
    """The checks, from the deployment rows, the disk (`check_root`) and the outbox;
    `published`: the target writes version directories (local), else none may appear."""
    problems: list[str] = []
    last_finished_us = max((r["finished_us"] or 0 for r in rows), default=0)
    succeeded = sum(1 for r in rows if r["status"] == SUCCEEDED)
    one_attempt = sum(1 for r in rows if r["attempts"] == 1)
    n = len(expected)
    if len(rows) != n:
        problems.append(f"{len(rows)} deployment rows for {n} Deploy calls")
    if succeeded != n:
        statuses = Counter(deployer_pb2.DeploymentStatus.Name(r["status"]) for r in rows)
        errors = [r["error"] for r in rows if r["status"] != SUCCEEDED][:1]
        problems.append(f"{succeeded}/{n} SUCCEEDED ({dict(statuses)}; first error {errors})")
    if one_attempt != n:
        problems.append(f"{n - one_attempt} deployments took more than one attempt")
    if not published:
        if disk["listed"]:
            problems.append(f"versions/: {disk['listed']} directories, the noop target wrote")
    elif disk["listed"] != n or disk["missing"] or disk["extra"]:
        problems.append(
            f"versions/: {disk['listed']} directories for {n} versions "
            f"({disk['missing']} missing, {disk['extra']} unexpected)"
        )
    if published and disk["complete"] != n:
        problems.append(f"{n - disk['complete']} version directories incomplete or wrong")
    if disk["staging_left"]:
        problems.append(f"{disk['staging_left']} staging directories left behind")
    if notices.delivered != n:
        problems.append(
            f"{notices.delivered}/{n} notices acknowledged by chat (an error: {notices.error!r})"
        )
    return Checks(
        succeeded=succeeded,
        one_attempt=one_attempt,
        version_dirs=disk["listed"],
        versions_complete=disk["complete"],
        staging_left=disk["staging_left"],
        notices_delivered=notices.delivered,
        notice_tries=notices.tries,
        notice_lag_s=(notices.last_delivered_us - last_finished_us) / 1e6,
        problems=problems,
    )
