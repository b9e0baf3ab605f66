"""Every Redis key and channel name appforge uses is built here."""

from __future__ import annotations

PREFIX = "appforge"


def app_changes_channel(app_id: str) -> str:
    """Pub/sub channel carrying every change to the messages of one app."""
    return f"{PREFIX}:chat:app:{app_id}:changes"


def deployment_changes_channel(deployment_id: str) -> str:
    """Pub/sub channel that says a deployment changed (watchers re-read it)."""
    return f"{PREFIX}:deployer:deployment:{deployment_id}:changes"


def deployer_jobs_channel() -> str:
    """Pub/sub channel that says a deployment was queued: every replica's idle workers claim."""
    return f"{PREFIX}:deployer:jobs"


def builder_notices_channel() -> str:
    """Pub/sub channel where a builder replica says it left a final notice undelivered."""
    return f"{PREFIX}:builder:notices"
