"""Atomic publishing of one version on disk, and the sweep of what crashed publishes left.

A version directory appears only through one `os.rename` of a complete, fsynced staging
directory: the rename is the commit point, so a version is either absent or whole, whatever
happens to the process or the awaiting coroutine. `current` is switched by `os.replace` of a
fresh relative symlink, so a reader sees the old version or the new one, never a mix.

Everything here blocks; `LocalTarget` runs it in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

from appforge.services.common.logging import get_logger
from appforge.services.deployer.targets.base import ArtifactFile
from appforge.services.deployer.targets.local.layout import (
    APPS_DIR,
    CURRENT_LINK,
    STAGING_DIR,
    TMP_LINK_PREFIX,
    VERSIONS_DIR,
)

log = get_logger(__name__)

# Errors another attempt would only repeat. Everything else (ENOSPC, EDQUOT, EIO, EMFILE,
# EAGAIN, ESTALE, ...) may clear with time or on another worker, so it is retried.
_PERMANENT_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENAMETOOLONG,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ELOOP,
        errno.EINVAL,
        errno.EXDEV,
    }
)


def is_retryable_os_error(exc: OSError) -> bool:
    """Whether another publish attempt may succeed after this disk error.

    Not retryable: permissions (EACCES, EPERM), a read-only filesystem (EROFS) and names
    the filesystem refuses. Retryable: everything else, such as a full disk (ENOSPC,
    EDQUOT) or an I/O error (EIO).
    """
    return exc.errno not in _PERMANENT_ERRNOS


class Aborted(Exception):
    """The awaiting coroutine was cancelled; the writer thread stops before the commit."""


class VersionWriter:
    """Writes versions under `root` once each, and sweeps stale staging leftovers.

    Thread-safe: several publishes (and sweeps) may run at once in different threads, and
    other processes may share the root. `publish_count` counts the versions this writer
    committed itself.
    """

    def __init__(self, root: Path, *, stale_staging_after: float) -> None:
        self.root = root
        self.stale_staging_after = stale_staging_after
        self._lock = threading.Lock()
        self._publish_count = 0
        self._active_staging: set[str] = set()

    @property
    def publish_count(self) -> int:
        with self._lock:
            return self._publish_count

    def publish(
        self,
        app_id: str,
        version_id: str,
        files: tuple[ArtifactFile, ...],
        abort: threading.Event,
    ) -> bool:
        """Commit the version unless it is there already, then make it current; whether it
        was written now. Raises Aborted once `abort` is set, before committing anything."""
        self.sweep(self.stale_staging_after, links=False)
        app_dir = self.root / APPS_DIR / app_id
        written = False
        if not (app_dir / VERSIONS_DIR / version_id).is_dir():
            written = self._write_version(app_dir, version_id, files, abort)
        if abort.is_set():
            raise Aborted
        switch_current(app_dir, version_id)
        return written

    def _write_version(
        self,
        app_dir: Path,
        version_id: str,
        files: tuple[ArtifactFile, ...],
        abort: threading.Event,
    ) -> bool:
        staging_root = self.root / STAGING_DIR
        staging_root.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        staging = staging_root / name
        with self._lock:
            self._active_staging.add(name)
        try:
            os.mkdir(staging)
            dirs = {staging}
            for file in files:
                if abort.is_set():
                    raise Aborted
                target = staging / file.path
                for parent in reversed(target.relative_to(staging).parents[:-1]):
                    if (staging / parent) not in dirs:
                        (staging / parent).mkdir(exist_ok=True)
                        dirs.add(staging / parent)
                write_file(target, file.content)
            for directory in dirs:
                fsync_dir(directory)
            if abort.is_set():
                raise Aborted
            versions = app_dir / VERSIONS_DIR
            makedirs_durably(versions)
            try:
                os.rename(staging, versions / version_id)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    return False  # another publish of this version committed first
                raise
            fsync_dir(versions)
            with self._lock:
                self._publish_count += 1
            return True
        finally:
            with self._lock:
                self._active_staging.discard(name)
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def sweep(self, older_than_seconds: float, *, links: bool = True) -> int:
        """Remove staging dirs (and, with `links`, temporary links) older than this; the
        number removed. Staging dirs of this writer's publishes in progress stay."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        entries = _scandir(self.root / STAGING_DIR)
        # Read after listing: a listed directory of this process was registered before mkdir.
        with self._lock:
            active = set(self._active_staging)
        for entry in entries:
            if entry.name not in active and _older(entry, cutoff):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
        # Temporary links are left only by a crash between symlink() and replace().
        for app in _scandir(self.root / APPS_DIR) if links else []:
            for entry in _scandir(Path(app.path)):
                if entry.name.startswith(TMP_LINK_PREFIX) and _older(entry, cutoff):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        removed += 1
        if removed:
            log.info("deploy.local.staging_swept", removed=removed)
        return removed


def fsync_dir(path: Path) -> None:
    """Make a directory's entries durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durably(path: Path) -> None:
    """`mkdir -p`, with each new directory's entry fsynced into its parent."""
    missing: list[Path] = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
        except FileExistsError:
            continue
        fsync_dir(directory.parent)


def write_file(path: Path, content: bytes) -> None:
    """Create `path` (never an existing file, never through a symlink) with `content`, fsynced."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o644)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def switch_current(app_dir: Path, version_id: str) -> None:
    """Point the app's `current` link at a version, atomically (a no-op if it does already)."""
    link = app_dir / CURRENT_LINK
    target = f"{VERSIONS_DIR}/{version_id}"
    try:
        if os.readlink(link) == target:
            return
    except OSError:  # missing, or not a link
        pass
    tmp = app_dir / f"{TMP_LINK_PREFIX}{uuid.uuid4().hex}"
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(app_dir)


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _older(entry: os.DirEntry[str], cutoff: float) -> bool:
    try:
        return entry.stat(follow_symlinks=False).st_mtime < cutoff
    except FileNotFoundError:
        return False
