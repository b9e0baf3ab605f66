"""The `local` deploy target: atomic, idempotent publishes that never write outside the root."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path

import pytest

from appforge.services.deployer.bootstrap import build_targets
from appforge.services.deployer.content_types import content_type_for
from appforge.services.deployer.domain import (
    AttemptOutcome,
    AttemptRecorded,
    Claim,
    Deployment,
    DeploymentStatus,
    LeaseState,
    Policy,
    WorkerConfig,
)
from appforge.services.deployer.settings import DeploySettings
from appforge.services.deployer.targets.base import ArtifactFile, PublishError
from appforge.services.deployer.targets.local import LocalTarget, layout, publishing
from appforge.services.deployer.timing import ManualTimer
from appforge.services.deployer.worker import DeploymentWorker

PUBLIC_URL = "http://deploy.test:8080/"
WAIT = 5.0  # bound on every wait; the events come in milliseconds


def art(path: str, content: bytes = b"x", content_type: str = "text/plain") -> ArtifactFile:
    return ArtifactFile(path=path, content=content, content_type=content_type)


APP_FILES = (
    art("index.html", b"<!doctype html><title>calc</title>\n", "text/html"),
    art("assets/app.js", b"console.log('\xc3\xa9');\n", "text/javascript"),
    art("assets/img/logo.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
    art("empty.txt", b""),
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "deploy"


@pytest.fixture
def target(root: Path) -> LocalTarget:
    return LocalTarget(root, PUBLIC_URL)


def version_dir(root: Path, app_id: str, version_id: str) -> Path:
    return root / "apps" / app_id / "versions" / version_id


def staging_entries(root: Path) -> list[str]:
    staging = root / layout.STAGING_DIR
    return sorted(os.listdir(staging)) if staging.exists() else []


class OneDeployment:
    """The worker's store, for one claimed deployment: its files, a lease always held, and
    the attempt's end as the worker recorded it."""

    def __init__(self, files: tuple[ArtifactFile, ...]) -> None:
        self.files = list(files)
        self.finished: list[tuple[AttemptOutcome, str, str]] = []

    async def artifact(self, deployment_id: str) -> list[ArtifactFile]:
        return self.files

    async def heartbeat(self, *_: object) -> LeaseState:
        return LeaseState.HELD

    async def finish_attempt(
        self,
        claim: Claim,
        worker_id: str,
        *,
        outcome: AttemptOutcome,
        error: str,
        url: str,
        now_us: int,
    ) -> AttemptRecorded:
        self.finished.append((outcome, error, url))
        succeeded = outcome is AttemptOutcome.SUCCEEDED
        return AttemptRecorded(
            status=DeploymentStatus.SUCCEEDED if succeeded else DeploymentStatus.FAILED
        )


def claim_for(target: str, now_us: int) -> Claim:
    deployment = Deployment(
        id="d-1",
        app_id="app-1",
        app_version_id="v1",
        execution_id="e-1",
        target=target,
        status=DeploymentStatus.RUNNING,
        policy=Policy(),
        attempts_made=1,
        next_attempt_us=now_us,
        created_us=now_us,
        updated_us=now_us,
        lease_owner="w1",
    )
    return Claim(deployment=deployment, attempt=1, deadline_us=now_us + 300_000_000)


async def _ignore(_deployment_id: str) -> None:
    return None


@pytest.mark.parametrize(
    ("named", "outcome", "url"),
    [
        ("local", AttemptOutcome.SUCCEEDED, "http://deploy.test:8080/apps/app-1/"),
        ("s3", AttemptOutcome.FAILED_PERMANENT, ""),  # no bucket configured: no s3 target
    ],
    ids=["local", "unconfigured-s3"],
)
async def test_a_worker_publishes_through_the_target_a_deployment_names(
    root: Path, tmp_path: Path, named: str, outcome: AttemptOutcome, url: str
) -> None:
    targets = build_targets(DeploySettings(root=root, public_url=PUBLIC_URL), tmp_path)
    store = OneDeployment(APP_FILES)
    timer = ManualTimer()  # never moved: the deadline cannot interfere
    worker = DeploymentWorker(
        worker_id="w1",
        store=store,  # type: ignore[arg-type]
        targets=targets,
        clock=timer,
        config=WorkerConfig(),
        wake=asyncio.Event(),
        on_change=_ignore,
    )

    await asyncio.wait_for(worker.attempt(claim_for(named, timer.now_us())), WAIT)

    [(recorded, error, published_url)] = store.finished
    assert (recorded, published_url) == (outcome, url)
    if named == "local":
        assert error == ""
        for file in APP_FILES:
            assert (root / "apps" / "app-1" / "current" / file.path).read_bytes() == file.content
    else:
        assert error == "target 's3' is not configured"
        assert not root.exists()


async def test_files_land_with_their_exact_bytes(root: Path, target: LocalTarget) -> None:
    publication = await target.publish(app_id="app-1", app_version_id="v1", files=APP_FILES)

    assert publication.url == "http://deploy.test:8080/apps/app-1/"
    for file in APP_FILES:
        assert (version_dir(root, "app-1", "v1") / file.path).read_bytes() == file.content
        assert (root / "apps" / "app-1" / "current" / file.path).read_bytes() == file.content
    assert os.readlink(root / "apps" / "app-1" / "current") == "versions/v1"  # relative link
    assert target.published_versions("app-1") == ["v1"]
    assert target.current_version("app-1") == "v1"
    assert target.publish_count == 1
    assert staging_entries(root) == []


async def test_publishing_a_version_again_writes_nothing(root: Path, target: LocalTarget) -> None:
    first = await target.publish(app_id="app-1", app_version_id="v1", files=APP_FILES)
    index = version_dir(root, "app-1", "v1") / "index.html"
    before = (index.stat().st_mtime_ns, index.stat().st_ino)

    # Even with different bytes: a version is immutable once published.
    again = await target.publish(
        app_id="app-1", app_version_id="v1", files=[art("index.html", b"changed")]
    )

    assert again == first
    assert target.publish_count == 1
    assert (index.stat().st_mtime_ns, index.stat().st_ino) == before
    assert index.read_bytes() == APP_FILES[0].content
    assert staging_entries(root) == []


async def test_concurrent_publishes_of_one_version_write_it_once(
    root: Path, target: LocalTarget
) -> None:
    publications = await asyncio.wait_for(
        asyncio.gather(
            *(
                target.publish(app_id="app-1", app_version_id="v1", files=APP_FILES)
                for _ in range(8)
            )
        ),
        WAIT,
    )

    assert {p.url for p in publications} == {"http://deploy.test:8080/apps/app-1/"}
    assert target.publish_count == 1
    assert target.published_versions("app-1") == ["v1"]
    assert staging_entries(root) == []


async def test_a_new_version_switches_current(root: Path, target: LocalTarget) -> None:
    await target.publish(app_id="app-1", app_version_id="v1", files=APP_FILES)
    await target.publish(
        app_id="app-1", app_version_id="v2", files=[art("index.html", b"version two")]
    )

    current = root / "apps" / "app-1" / "current"
    assert os.readlink(current) == "versions/v2"
    assert (current / "index.html").read_bytes() == b"version two"
    assert not (current / "assets").exists()
    assert target.published_versions("app-1") == ["v1", "v2"]
    assert target.publish_count == 2
    # No temporary link is left next to `current`.
    assert sorted(os.listdir(root / "apps" / "app-1")) == ["current", "versions"]


async def test_a_retry_after_a_crash_before_the_switch_only_switches(
    root: Path, target: LocalTarget
) -> None:
    await target.publish(app_id="app-1", app_version_id="v1", files=APP_FILES)
    (root / "apps" / "app-1" / "current").unlink()  # the crash: committed, never switched

    await target.publish(app_id="app-1", app_version_id="v1", files=APP_FILES)

    assert target.current_version("app-1") == "v1"
    assert target.publish_count == 1


async def test_apps_are_independent(root: Path, target: LocalTarget) -> None:
    one = await target.publish(app_id="app-1", app_version_id="v1", files=APP_FILES)
    two = await target.publish(app_id="app-2", app_version_id="v1", files=APP_FILES)

    assert (one.url, two.url) == (
        "http://deploy.test:8080/apps/app-1/",
        "http://deploy.test:8080/apps/app-2/",
    )
    assert target.publish_count == 2


async def test_the_url_quotes_the_app_id(target: LocalTarget) -> None:
    publication = await target.publish(app_id="my app?", app_version_id="v1", files=APP_FILES)
    assert publication.url == "http://deploy.test:8080/apps/my%20app%3F/"


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


def test_helpers_answer_for_unknown_or_bad_apps(target: LocalTarget) -> None:
    assert target.published_versions("nope") == []
    assert target.published_versions("../etc") == []
    assert target.current_version("nope") is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("index.html", "text/html; charset=utf-8"),
        ("INDEX.HTM", "text/html; charset=utf-8"),
        ("assets/app.js", "text/javascript; charset=utf-8"),
        ("assets/mod.mjs", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("logo.svg", "image/svg+xml"),
        ("data.json", "application/json"),
        ("img.png", "image/png"),
        ("font.woff2", "font/woff2"),
        ("prog.wasm", "application/wasm"),
        ("doc.pdf", "application/pdf"),
        ("blob", "application/octet-stream"),
        ("weird.zzz", "application/octet-stream"),
    ],
)
def test_content_type_from_the_extension(path: str, expected: str) -> None:
    assert content_type_for(path) == expected
