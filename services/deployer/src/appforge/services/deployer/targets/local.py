"""The `local` target: versions published atomically under a directory, served over HTTP.

Layout under the deploy root::

    .staging/<random>/                    a version being written (same filesystem as apps/)
    apps/<app_id>/versions/<version_id>/  one directory per published version, never rewritten
    apps/<app_id>/current -> versions/<version_id>

A version directory appears only through one `os.rename` of a complete, fsynced staging
directory: the rename is the commit point, so a version is either absent or whole, whatever
happens to the process or the awaiting coroutine. `current` is switched by `os.replace` of a
fresh relative symlink, so a reader sees the old version or the new one, never a mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import posixpath
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from appforge.services.common.logging import get_logger
from appforge.services.deployer.content_types import content_type_for
from appforge.services.deployer.targets.base import ArtifactFile, Publication, PublishError

log = get_logger(__name__)

STAGING_DIR = ".staging"
APPS_DIR = "apps"
_TMP_LINK_PREFIX = "current.tmp-"
_NAME_MAX = 255  # bytes in one path component on the usual filesystems

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


def id_problem(value: str) -> str | None:
    """Why `value` is not a safe single path component (an app or version id), or None."""
    if not value:
        return "is empty"
    if not value.isprintable():
        return "contains unprintable characters"
    if "/" in value or "\\" in value:
        return "contains a path separator"
    if value in (".", ".."):
        return "is a dot segment"
    if len(value.encode()) > _NAME_MAX:
        return "is too long"
    return None


def path_problem(path: str) -> str | None:
    """Why `path` is not a relative, normalised file path inside a version, or None."""
    if not path:
        return "is empty"
    if not path.isprintable():  # NUL and every other control character included
        return "contains unprintable characters"
    if "\\" in path:
        return "contains a backslash"
    if path.startswith("/"):
        return "is absolute"
    parts = path.split("/")
    if ".." in parts or "." in parts:
        return "has a dot segment"
    if posixpath.normpath(path) != path:
        return "is not normalised"
    if any(len(part.encode()) > _NAME_MAX for part in parts):
        return "has a component that is too long"
    return None


def _invalid(message: str) -> PublishError:
    return PublishError(message, retryable=False)


def validate_publication(app_id: str, app_version_id: str, files: Sequence[ArtifactFile]) -> None:
    """Refuse, before anything touches the disk, what could write outside the version dir."""
    for field, value in (("app_id", app_id), ("app_version_id", app_version_id)):
        if (problem := id_problem(value)) is not None:
            raise _invalid(f"{field} {value!r} {problem}")
    if not files:
        raise _invalid("a version needs at least one file")
    paths: set[str] = set()
    for file in files:
        if (problem := path_problem(file.path)) is not None:
            raise _invalid(f"file path {file.path!r} {problem}")
        if file.path in paths:
            raise _invalid(f"file path {file.path!r} appears twice")
        paths.add(file.path)
    for path in paths:
        parent = posixpath.dirname(path)
        while parent:
            if parent in paths:
                raise _invalid(f"file path {path!r} lies under the file {parent!r}")
            parent = posixpath.dirname(parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs_durably(path: Path) -> None:
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
        _fsync_dir(directory.parent)


def _write_file(path: Path, content: bytes) -> None:
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


class _Aborted(Exception):
    """The awaiting coroutine was cancelled; the writer thread stops before the commit."""


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
        self._stale_staging_after = stale_staging_after
        self._close_timeout = close_timeout
        self._lock = threading.Lock()
        self._publish_count = 0
        self._active_staging: set[str] = set()
        self._abandoned: set[asyncio.Task[bool]] = set()

    @property
    def root(self) -> Path:
        return self._root

    @property
    def publish_count(self) -> int:
        """Versions this target actually wrote (publishes of an existing version not counted)."""
        with self._lock:
            return self._publish_count

    def url_for(self, app_id: str) -> str:
        """The public URL of the app's current version."""
        return f"{self._public_url}/{APPS_DIR}/{quote(app_id, safe='')}/"

    def published_versions(self, app_id: str) -> list[str]:
        """The app's published version ids, sorted."""
        if id_problem(app_id) is not None:
            return []
        try:
            return sorted(os.listdir(self._root / APPS_DIR / app_id / "versions"))
        except FileNotFoundError:
            return []

    def current_version(self, app_id: str) -> str | None:
        """The version id the app's `current` link points at, or None before any publish."""
        if id_problem(app_id) is not None:
            return None
        try:
            target = os.readlink(self._root / APPS_DIR / app_id / "current")
        except OSError:
            return None
        return posixpath.basename(target)

    async def publish(
        self, *, app_id: str, app_version_id: str, files: Sequence[ArtifactFile]
    ) -> Publication:
        validate_publication(app_id, app_version_id, files)
        abort = threading.Event()
        job = asyncio.ensure_future(
            asyncio.to_thread(self._publish_blocking, app_id, app_version_id, tuple(files), abort)
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
        return await asyncio.to_thread(self._sweep_blocking, older_than_seconds)

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
        if exc is not None and not isinstance(exc, _Aborted):
            log.warning("deploy.local.abandoned_publish_failed", error=str(exc))

    # Everything below runs in a worker thread.

    def _publish_blocking(
        self,
        app_id: str,
        version_id: str,
        files: tuple[ArtifactFile, ...],
        abort: threading.Event,
    ) -> bool:
        self._sweep_blocking(self._stale_staging_after, links=False)
        app_dir = self._root / APPS_DIR / app_id
        written = False
        if not (app_dir / "versions" / version_id).is_dir():
            written = self._write_version(app_dir, version_id, files, abort)
        if abort.is_set():
            raise _Aborted
        _switch_current(app_dir, version_id)
        return written

    def _write_version(
        self,
        app_dir: Path,
        version_id: str,
        files: tuple[ArtifactFile, ...],
        abort: threading.Event,
    ) -> bool:
        staging_root = self._root / STAGING_DIR
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
                    raise _Aborted
                target = staging / file.path
                for parent in reversed(target.relative_to(staging).parents[:-1]):
                    if (staging / parent) not in dirs:
                        (staging / parent).mkdir(exist_ok=True)
                        dirs.add(staging / parent)
                _write_file(target, file.content)
            for directory in dirs:
                _fsync_dir(directory)
            if abort.is_set():
                raise _Aborted
            versions = app_dir / "versions"
            _makedirs_durably(versions)
            try:
                os.rename(staging, versions / version_id)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    return False  # another publish of this version committed first
                raise
            _fsync_dir(versions)
            with self._lock:
                self._publish_count += 1
            return True
        finally:
            with self._lock:
                self._active_staging.discard(name)
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _sweep_blocking(self, older_than_seconds: float, *, links: bool = True) -> int:
        cutoff = time.time() - older_than_seconds
        removed = 0
        entries = _scandir(self._root / STAGING_DIR)
        # Read after listing: a listed directory of this process was registered before mkdir.
        with self._lock:
            active = set(self._active_staging)
        for entry in entries:
            if entry.name not in active and _older(entry, cutoff):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
        # Temporary links are left only by a crash between symlink() and replace().
        for app in _scandir(self._root / APPS_DIR) if links else []:
            for entry in _scandir(Path(app.path)):
                if entry.name.startswith(_TMP_LINK_PREFIX) and _older(entry, cutoff):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        removed += 1
        if removed:
            log.info("deploy.local.staging_swept", removed=removed)
        return removed


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


def _switch_current(app_dir: Path, version_id: str) -> None:
    link = app_dir / "current"
    target = f"versions/{version_id}"
    try:
        if os.readlink(link) == target:
            return
    except OSError:  # missing, or not a link
        pass
    tmp = app_dir / f"{_TMP_LINK_PREFIX}{uuid.uuid4().hex}"
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(app_dir)


# Built-in table only, so answers never depend on the host's /etc/mime.types.
class DeployHttpServer:
    """Serves each app's current version from the deploy root: `GET /apps/<app_id>/<path>`.

    `/apps/<app_id>/` serves `index.html`; `/apps/<app_id>` redirects there. Paths with dot
    segments, backslashes or control characters, and anything that resolves outside the
    app's current version directory, answer 404. Every response says `Cache-Control:
    no-cache`: the same URL serves a new version after each deploy, and the ETag makes the
    revalidation cheap. `GET /healthz` answers "ok".
    """

    def __init__(
        self, root: Path, host: str = "127.0.0.1", port: int = 0, *, shutdown_timeout: float = 5.0
    ) -> None:
        self._root = root
        self._host = host
        self._requested_port = port
        self._shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        if self._port is None:
            raise RuntimeError("the deploy HTTP server is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL of the running server, e.g. `http://127.0.0.1:8080`."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self._host, self._host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/apps/{app_id}", self._add_slash)
        app.router.add_get("/apps/{app_id}/{tail:.*}", self._serve)
        runner = web.AppRunner(app, shutdown_timeout=self._shutdown_timeout)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._requested_port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info("deploy.http.started", url=self.url, root=str(self._root))

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
            log.info("deploy.http.stopped")

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def _add_slash(self, request: web.Request) -> web.StreamResponse:
        if id_problem(request.match_info["app_id"]) is not None:
            raise web.HTTPNotFound()
        location = request.rel_url.raw_path + "/"
        if request.rel_url.raw_query_string:
            location += "?" + request.rel_url.raw_query_string
        raise web.HTTPMovedPermanently(location)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        app_id = request.match_info["app_id"]
        tail = request.match_info["tail"]
        relative = tail + "index.html" if tail == "" or tail.endswith("/") else tail
        if id_problem(app_id) is not None or path_problem(relative) is not None:
            raise web.HTTPNotFound()
        found = await asyncio.to_thread(self._locate, app_id, relative)
        if found is None:
            raise web.HTTPNotFound()
        return web.FileResponse(
            found,
            headers={"Content-Type": content_type_for(relative), "Cache-Control": "no-cache"},
        )

    def _locate(self, app_id: str, relative: str) -> Path | None:
        """The real path of a regular file inside the app's current version, or None."""
        try:
            root = self._root.resolve(strict=True)
            versions = (self._root / APPS_DIR / app_id / "versions").resolve(strict=True)
            base = (self._root / APPS_DIR / app_id / "current").resolve(strict=True)
            found = (base / relative).resolve(strict=True)
        except (OSError, RuntimeError, ValueError):
            # Missing, a symlink loop (RuntimeError before 3.13) or a NUL byte (ValueError).
            return None
        if (
            not versions.is_relative_to(root)
            or base.parent != versions
            or not found.is_relative_to(base)
            or not found.is_file()
        ):
            return None
        return found
