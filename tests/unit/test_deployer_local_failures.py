"""What the `local` deploy target refuses and what a failed publish leaves behind: bad paths,
ids and file sets write nothing, a cancelled publish commits nothing, disk errors are
classified, and the staging sweep clears old leftovers (never outside the root)."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path

import pytest

from appforge.services.deployer.targets.base import ArtifactFile, PublishError
from appforge.services.deployer.targets.local import LocalTarget, layout, publishing
from tests.unit.deployer_local_helpers import (
    APP_FILES,
    PUBLIC_URL,
    WAIT,
    art,
    staging_entries,
    version_dir,
)

BAD_PATHS = [
    "",
    "/etc/passwd",
    "../escape.txt",
    "a/../../escape.txt",
    "a/../b.txt",
    "..",
    ".",
    "./a.txt",
    "a//b.txt",
    "a/",
    "a/./b.txt",
    "a\\..\\b.txt",
    "C:\\escape.txt",
    "nul\x00.txt",
    "line\nbreak.txt",
    "x" * 256,
]


@pytest.mark.parametrize("path", BAD_PATHS)
async def test_a_bad_path_is_refused_and_nothing_is_written(
    root: Path, target: LocalTarget, path: str
) -> None:
    with pytest.raises(PublishError) as raised:
        await target.publish(
            app_id="app-1", app_version_id="v1", files=[art("index.html"), art(path)]
        )
    assert raised.value.retryable is False
    assert not root.exists()
    assert target.publish_count == 0


BAD_IDS = ["", ".", "..", "a/b", "../a", "a\\b", "nul\x00", "tab\t", "x" * 256]


@pytest.mark.parametrize("field", ["app_id", "app_version_id"])
@pytest.mark.parametrize("bad", BAD_IDS)
async def test_a_bad_id_is_refused_and_nothing_is_written(
    root: Path, target: LocalTarget, field: str, bad: str
) -> None:
    ids = {"app_id": "app-1", "app_version_id": "v1", field: bad}
    with pytest.raises(PublishError, match=field) as raised:
        await target.publish(
            app_id=ids["app_id"], app_version_id=ids["app_version_id"], files=APP_FILES
        )
    assert raised.value.retryable is False
    assert not root.exists()


@pytest.mark.parametrize(
    "files",
    [
        pytest.param([], id="no-files"),
        pytest.param([art("a.txt"), art("a.txt")], id="duplicate"),
        pytest.param([art("a"), art("a/b.txt")], id="file-under-a-file"),
        pytest.param([art("a/b/c.txt"), art("a/b")], id="file-over-a-dir"),
    ],
)
async def test_an_inconsistent_file_set_is_refused(
    root: Path, target: LocalTarget, files: list[ArtifactFile]
) -> None:
    with pytest.raises(PublishError) as raised:
        await target.publish(app_id="app-1", app_version_id="v1", files=files)
    assert raised.value.retryable is False
    assert not root.exists()


class BlockingWriter:
    """Stands in for the file writer: the first call parks until released."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.started = asyncio.Event()
        self.release = threading.Event()
        self.calls = 0
        self._real = publishing.write_file

    def __call__(self, path: Path, content: bytes) -> None:
        self.calls += 1
        self._real(path, content)
        if self.calls == 1:  # one file written: half a version, not committed
            self.loop.call_soon_threadsafe(self.started.set)
            assert self.release.wait(WAIT), "the test never released the writer"


@pytest.fixture
async def blocking_writer(monkeypatch: pytest.MonkeyPatch) -> BlockingWriter:
    writer = BlockingWriter(asyncio.get_running_loop())
    monkeypatch.setattr(publishing, "write_file", writer)
    return writer


async def cancel_mid_write(target: LocalTarget, writer: BlockingWriter) -> None:
    task = asyncio.create_task(target.publish(app_id="app-1", app_version_id="v1", files=APP_FILES))
    await asyncio.wait_for(writer.started.wait(), WAIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT)


async def test_a_cancelled_publish_commits_nothing(
    root: Path, target: LocalTarget, blocking_writer: BlockingWriter
) -> None:
    await cancel_mid_write(target, blocking_writer)
    assert not version_dir(root, "app-1", "v1").exists()
    assert len(staging_entries(root)) == 1  # the writer thread is still parked

    blocking_writer.release.set()
    await asyncio.wait_for(target.close(), WAIT)  # waits for the abandoned writer to stop

    assert not version_dir(root, "app-1", "v1").exists()
    assert not (root / "apps" / "app-1" / "current").exists()
    assert staging_entries(root) == []
    assert target.publish_count == 0


async def test_a_publish_after_a_cancelled_one_succeeds(
    root: Path, target: LocalTarget, blocking_writer: BlockingWriter
) -> None:
    await cancel_mid_write(target, blocking_writer)

    # The abandoned writer is still parked mid-version; the next attempt does not wait for it.
    publication = await asyncio.wait_for(
        target.publish(app_id="app-1", app_version_id="v1", files=APP_FILES), WAIT
    )
    blocking_writer.release.set()
    await asyncio.wait_for(target.close(), WAIT)

    assert publication.url == "http://deploy.test:8080/apps/app-1/"
    for file in APP_FILES:
        assert (root / "apps" / "app-1" / "current" / file.path).read_bytes() == file.content
    assert target.publish_count == 1
    assert staging_entries(root) == []


@pytest.mark.parametrize(
    ("code", "retryable"),
    [(errno.ENOSPC, True), (errno.EIO, True), (errno.EACCES, False), (errno.EROFS, False)],
)
async def test_disk_errors_are_classified(
    root: Path,
    target: LocalTarget,
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    retryable: bool,
) -> None:
    def failing(path: Path, content: bytes) -> None:
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(publishing, "write_file", failing)
    with pytest.raises(PublishError) as raised:
        await target.publish(app_id="app-1", app_version_id="v1", files=APP_FILES)

    assert raised.value.retryable is retryable
    assert isinstance(raised.value.__cause__, OSError)
    assert not version_dir(root, "app-1", "v1").exists()
    assert staging_entries(root) == []
    assert target.publish_count == 0


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        (errno.ENOSPC, True),
        (errno.EDQUOT, True),
        (errno.EIO, True),
        (errno.EMFILE, True),
        (errno.EACCES, False),
        (errno.EPERM, False),
        (errno.EROFS, False),
        (errno.ENAMETOOLONG, False),
    ],
)
def test_os_error_classification(code: int, retryable: bool) -> None:
    assert publishing.is_retryable_os_error(OSError(code, os.strerror(code))) is retryable


def backdate(path: Path, seconds: float) -> None:
    then = path.lstat().st_mtime - seconds
    os.utime(path, (then, then), follow_symlinks=False)


async def test_sweep_removes_only_old_leftovers(root: Path, target: LocalTarget) -> None:
    await target.publish(app_id="app-1", app_version_id="v1", files=APP_FILES)
    staging = root / layout.STAGING_DIR
    old, young = staging / "old", staging / "young"
    for leftover in (old, young):
        (leftover / "sub").mkdir(parents=True)
        (leftover / "sub" / "f.txt").write_bytes(b"half")
    backdate(old, 7200)
    old_link = root / "apps" / "app-1" / "current.tmp-old"
    old_link.symlink_to("versions/v1")
    backdate(old_link, 7200)

    removed = await target.sweep_staging(older_than_seconds=3600)

    assert removed == 2
    assert staging_entries(root) == ["young"]
    assert not old_link.is_symlink()
    assert target.current_version("app-1") == "v1"


async def test_a_publish_sweeps_stale_staging(root: Path) -> None:
    target = LocalTarget(root, PUBLIC_URL, stale_staging_after=60)
    stale = root / layout.STAGING_DIR / "stale"
    stale.mkdir(parents=True)
    backdate(stale, 120)

    await target.publish(app_id="app-1", app_version_id="v1", files=APP_FILES)

    assert staging_entries(root) == []


async def test_sweeping_a_root_that_does_not_exist_removes_nothing(target: LocalTarget) -> None:
    assert await target.sweep_staging(older_than_seconds=0) == 0
