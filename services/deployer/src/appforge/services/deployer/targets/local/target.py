"""`LocalTarget`: the `local` target's async face over the thread that writes versions."""

from __future__ import annotations

import asyncio
import os
import posixpath
import threading
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from appforge.services.common.logging import get_logger
from appforge.services.common.paths import component_problem
from appforge.services.deployer.targets.base import ArtifactFile, Publication, PublishError
from appforge.services.deployer.targets.local.layout import (
    APPS_DIR,
    CURRENT_LINK,
    VERSIONS_DIR,
    validate_publication,
)
from appforge.services.deployer.targets.local.publishing import (
    Aborted,
    VersionWriter,
    is_retryable_os_error,
)

log = get_logger(__name__)


class LocalTarget:
    """Publishes app versions under a directory, atomically and once per version.

    `publish` validates first (nothing is written for bad input), writes the files into a
    staging directory in a worker thread, renames it to the version directory (the commit)
    unless that version is already there, then points the app's `current` link at it.
    Cancelling `publish` stops the writer before the commit; a staging directory left behind
    by a crash is removed by `sweep_staging`, which every publish also runs for directories
    older than `stale_staging_after` seconds (other processes may share the root, so a young
    staging directory may be another worker's publish in progress).
    """

    name: str = "local"

    def __init__(
        self,
        root: Path,
        public_url: str,
        *,
        stale_staging_after: float = 3600.0,
        close_timeout: float = 10.0,
    ) -> None:
        self._root = root
        self._public_url = public_url.rstrip("/")
        self._close_timeout = close_timeout
        self._writer = VersionWriter(root, stale_staging_after=stale_staging_after)
        self._abandoned: set[asyncio.Task[bool]] = set()

    @property
    def root(self) -> Path:
        return self._root

    @property
    def publish_count(self) -> int:
        """Versions this target actually wrote (publishes of an existing version not counted)."""
        return self._writer.publish_count

    def url_for(self, app_id: str) -> str:
        """The public URL of the app's current version."""
        return f"{self._public_url}/{APPS_DIR}/{quote(app_id, safe='')}/"

    def published_versions(self, app_id: str) -> list[str]:
        """The app's published version ids, sorted."""
        if component_problem(app_id) is not None:
            return []
        try:
            return sorted(os.listdir(self._root / APPS_DIR / app_id / VERSIONS_DIR))
        except FileNotFoundError:
            return []

    def current_version(self, app_id: str) -> str | None:
        """The version id the app's `current` link points at, or None before any publish."""
        if component_problem(app_id) is not None:
            return None
        try:
            target = os.readlink(self._root / APPS_DIR / app_id / CURRENT_LINK)
        except OSError:
            return None
        return posixpath.basename(target)

    async def publish(
        self, *, app_id: str, app_version_id: str, files: Sequence[ArtifactFile]
    ) -> Publication:
        validate_publication(app_id, app_version_id, files)
        abort = threading.Event()
        job = asyncio.ensure_future(
            asyncio.to_thread(self._writer.publish, app_id, app_version_id, tuple(files), abort)
        )
        try:
            # Shielded: a cancelled caller must not orphan the thread's result unobserved.
            written = await asyncio.shield(job)
        except asyncio.CancelledError:
            abort.set()
            self._abandon(job)
            raise
        except OSError as exc:
            retryable = is_retryable_os_error(exc)
            log.warning(
                "deploy.local.publish_failed",
                app_id=app_id,
                app_version_id=app_version_id,
                error=str(exc),
                retryable=retryable,
            )
            raise PublishError(f"local publish failed: {exc}", retryable=retryable) from exc
        log.info(
            "deploy.local.published",
            app_id=app_id,
            app_version_id=app_version_id,
            files=len(files),
            written=written,
        )
        return Publication(url=self.url_for(app_id))

    async def sweep_staging(self, older_than_seconds: float) -> int:
        """Remove staging dirs and temporary links older than this; the number removed.

        Run at startup to clear what a crashed process left behind. Staging directories of
        publishes in progress in this process are never removed.
        """
        return await asyncio.to_thread(self._writer.sweep, older_than_seconds)

    async def close(self) -> None:
        """Wait (bounded by `close_timeout`) for writers of cancelled publishes to stop."""
        pending = set(self._abandoned)
        if pending:
            _, still = await asyncio.wait(pending, timeout=self._close_timeout)
            if still:
                log.warning("deploy.local.writers_still_running", count=len(still))

    def _abandon(self, job: asyncio.Task[bool]) -> None:
        self._abandoned.add(job)
        job.add_done_callback(self._reap)

    def _reap(self, job: asyncio.Task[bool]) -> None:
        self._abandoned.discard(job)
        if job.cancelled():
            return
        exc = job.exception()
        if exc is not None and not isinstance(exc, Aborted):
            log.warning("deploy.local.abandoned_publish_failed", error=str(exc))
