"""The `s3` target against a real S3-compatible server on loopback (moto's server mode).

Failures are real too: a proxy that answers 503 or 403 in front of moto, a bucket that does
not exist, a port nobody listens on, and an endpoint that accepts and never answers.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from appforge.cli import installed
from appforge.services.common import db, migrate
from appforge.services.common.bus import InProcessBus
from appforge.services.common.clock import FrozenClock
from appforge.services.common.settings import Settings
from appforge.services.deployer.bootstrap import build_targets
from appforge.services.deployer.domain import Deployment, DeploymentStatus, WorkerConfig
from appforge.services.deployer.service import DeployerService, PolicyOverrides
from appforge.services.deployer.settings import DeploySettings
from appforge.services.deployer.store import DeployerStores
from appforge.services.deployer.targets.base import ArtifactFile, PublishError
from appforge.services.deployer.targets.s3 import S3Config, S3Target
from appforge.services.deployer.timing import WallTimer
from appforge.services.deployer.worker import DeploymentWorker
from tests.deploy_endpoints import FlakyS3Proxy, HangingEndpoint, MotoS3Server, marker_probe

BOUND = 5.0  # seconds any single publish in this module may take

INDEX = b"<!doctype html><title>calc</title><script src=assets/app.js></script>"
FILES = (
    ArtifactFile(path="index.html", content=INDEX, content_type=""),
    ArtifactFile(path="assets/app.js", content=b"console.log(1 + 1);\n", content_type=""),
    ArtifactFile(path="assets/style.css", content=b"body { margin: 0 }\n", content_type=""),
    ArtifactFile(
        path="assets/logo.svg",
        content=b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        content_type="",
    ),
    ArtifactFile(path="data/blob", content=bytes(range(256)) * 3, content_type=""),
    ArtifactFile(
        path="data/model.bin", content=b"\x00\xffraw", content_type="application/x-custom"
    ),
)
EXPECTED_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "assets/app.js": "text/javascript; charset=utf-8",
    "assets/style.css": "text/css; charset=utf-8",
    "assets/logo.svg": "image/svg+xml",
    "data/blob": "application/octet-stream",
    "data/model.bin": "application/x-custom",
}

MakeTarget = Callable[[S3Config], S3Target]


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[MotoS3Server]:
    with MotoS3Server() as server:
        yield server


@pytest.fixture
def bucket(moto_s3: MotoS3Server) -> str:
    """A fresh, publicly readable bucket: moto's state is per process, so tests never share one."""
    return moto_s3.create_bucket(f"appforge-{uuid.uuid4().hex[:12]}", public_read=True)


@pytest_asyncio.fixture
async def make_target() -> AsyncIterator[MakeTarget]:
    """A factory of S3 targets (frozen clock), each closed at the end of the test."""
    made: list[S3Target] = []

    def make(config: S3Config) -> S3Target:
        target = S3Target(config, clock=FrozenClock(1_700_000_000_123_456))
        made.append(target)
        return target

    yield make
    async with asyncio.timeout(BOUND):
        for target in made:
            await target.close()


def ids() -> tuple[str, str]:
    return f"app-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket closes


async def publish_error(target: S3Target, app_id: str, version: str) -> PublishError:
    with pytest.raises(PublishError) as caught:
        async with asyncio.timeout(BOUND):
            await target.publish(app_id=app_id, app_version_id=version, files=FILES)
    return caught.value


async def test_a_deploy_naming_s3_is_published_to_the_bucket(
    moto_s3: MotoS3Server,
    bucket: str,
    backend: tuple[str, str, str | None],
    tmp_path: Path,
) -> None:
    """End to end in process: DeployerService.deploy(target="s3"), a worker, the real store."""
    deploy = DeploySettings(
        root=tmp_path / "deploys",
        s3_endpoint_url=moto_s3.endpoint_url,
        s3_bucket=bucket,
        s3_region=moto_s3.region,
        aws_access_key_id=moto_s3.access_key_id,
        aws_secret_access_key=moto_s3.secret_access_key,
    )
    targets = build_targets(deploy, tmp_path)
    engine = db.create_engine(backend[1])
    await migrate.upgrade(engine, installed.histories())
    stores = DeployerStores.over(engine)
    clock = WallTimer()  # a real publish takes real time; only the bound below is wall-clock
    service = DeployerService(
        stores.deployments,
        InProcessBus(),
        clock,
        Settings(),
        deploy,
        wake_workers=asyncio.Event(),
        available_targets=list(targets),
    )
    changed = asyncio.Event()

    async def on_change(_deployment_id: str) -> None:
        changed.set()

    worker = DeploymentWorker(
        worker_id="s3-test",
        store=stores.attempts,
        targets=targets,
        clock=clock,
        config=WorkerConfig(),
        wake=service.wake_workers,
        on_change=on_change,
    )
    app_id, version = ids()
    running = asyncio.create_task(worker.run())
    try:
        queued = await service.deploy(
            app_id=app_id,
            app_version_id=version,
            execution_id=str(uuid.uuid4()),
            target="s3",
            files=[(f.path, f.content, f.content_type) for f in FILES],
            policy=PolicyOverrides(),
        )
        done: Deployment = queued
        async with asyncio.timeout(BOUND * 4):
            while not done.status.terminal:
                changed.clear()
                done = await service.get(queued.id)
                if not done.status.terminal:
                    await changed.wait()
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        for target in targets.values():
            await target.close()
        await engine.dispose()

    prefix = f"apps/{app_id}/versions/{version}/"
    assert (done.target, done.status) == ("s3", DeploymentStatus.SUCCEEDED)
    assert done.url == f"{moto_s3.endpoint_url}/{bucket}/{prefix}index.html"
    assert f"{prefix}.published" in moto_s3.keys(bucket)
    data, _ = moto_s3.get_object(bucket, prefix + "index.html")
    assert data == INDEX
    assert not (tmp_path / "deploys" / "apps" / app_id).exists()


async def test_publish_uploads_every_file_then_pointer_and_marker(
    moto_s3: MotoS3Server, bucket: str, make_target: MakeTarget
) -> None:
    app_id, version = ids()
    target = make_target(moto_s3.s3_config(bucket))
    async with asyncio.timeout(BOUND):
        publication = await target.publish(app_id=app_id, app_version_id=version, files=FILES)

    prefix = f"apps/{app_id}/versions/{version}/"
    assert publication.url == f"{moto_s3.endpoint_url}/{bucket}/{prefix}index.html"
    assert target.publish_count == 1
    assert moto_s3.keys(bucket) == sorted(
        [f"apps/{app_id}/current.json", f"{prefix}.published"] + [prefix + f.path for f in FILES]
    )
    for file in FILES:
        data, headers = moto_s3.get_object(bucket, prefix + file.path)
        assert data == file.content
        assert headers["content-type"] == EXPECTED_TYPES[file.path]
        html = file.path.endswith(".html")
        assert (headers["cache-control"] == "no-cache") is html
    pointer, _ = moto_s3.get_object(bucket, f"apps/{app_id}/current.json")
    assert json.loads(pointer) == {
        "version": version,
        "published_at": "2023-11-14T22:13:20.123456Z",
    }
    marker, _ = moto_s3.get_object(bucket, f"{prefix}.published")
    assert json.loads(marker)["files"] == len(FILES)

    # The URL handed out serves the page over plain HTTP.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=BOUND)) as http:
        async with http.get(publication.url) as response:
            assert response.status == 200
            assert await response.read() == INDEX
            assert response.headers["Content-Type"] == "text/html; charset=utf-8"


async def test_public_url_is_the_base_of_the_url(
    moto_s3: MotoS3Server, bucket: str, make_target: MakeTarget
) -> None:
    app_id, version = ids()
    target = make_target(moto_s3.s3_config(bucket, public_url="https://apps.example.com/"))
    async with asyncio.timeout(BOUND):
        publication = await target.publish(app_id=app_id, app_version_id=version, files=FILES)
    assert publication.url == (
        f"https://apps.example.com/apps/{app_id}/versions/{version}/index.html"
    )


async def test_republishing_a_version_publishes_once(
    moto_s3: MotoS3Server, bucket: str, make_target: MakeTarget
) -> None:
    app_id, version = ids()
    first = make_target(moto_s3.s3_config(bucket))
    async with asyncio.timeout(BOUND):
        url = (await first.publish(app_id=app_id, app_version_id=version, files=FILES)).url
        again = await first.publish(app_id=app_id, app_version_id=version, files=FILES)
    assert again.url == url
    assert first.publish_count == 1

    # Another worker (another target, another client) finds the marker and uploads nothing.
    async with FlakyS3Proxy(moto_s3.endpoint_url) as proxy:
        second = make_target(moto_s3.s3_config(bucket, endpoint_url=proxy.url))
        async with asyncio.timeout(BOUND):
            other = await second.publish(app_id=app_id, app_version_id=version, files=FILES)
        assert second.publish_count == 0
        assert proxy.requests == 1  # the HEAD of the marker, nothing else
        assert other.url == f"{proxy.url}/{bucket}/apps/{app_id}/versions/{version}/index.html"


async def test_503_is_retryable_and_botocore_does_not_retry(
    moto_s3: MotoS3Server, bucket: str, make_target: MakeTarget
) -> None:
    async with FlakyS3Proxy(moto_s3.endpoint_url, failures=None) as proxy:
        target = make_target(moto_s3.s3_config(bucket, endpoint_url=proxy.url))
        error = await publish_error(target, *ids())
        assert proxy.requests == 1
    assert error.retryable is True
    assert str(error) == "s3 503 ServiceUnavailable"  # a HEAD: the status is all there is
    assert target.publish_count == 0


async def test_a_failed_upload_leaves_no_marker_and_the_next_attempt_completes(
    moto_s3: MotoS3Server, bucket: str, make_target: MakeTarget
) -> None:
    app_id, version = ids()
    async with FlakyS3Proxy(
        moto_s3.endpoint_url,
        code="SlowDown",
        failures=1,
        match=lambda request: request.method == "PUT" and request.path.endswith("/app.js"),
    ) as proxy:
        target = make_target(moto_s3.s3_config(bucket, endpoint_url=proxy.url))
        error = await publish_error(target, app_id, version)
        assert error.retryable is True
        assert str(error) == "s3 503 SlowDown: Please reduce your request rate."
        assert not any(key.endswith(".published") for key in moto_s3.keys(bucket))

        async with asyncio.timeout(BOUND):
            await target.publish(app_id=app_id, app_version_id=version, files=FILES)
    assert target.publish_count == 1
    assert f"apps/{app_id}/versions/{version}/.published" in moto_s3.keys(bucket)


async def test_proxy_can_fail_the_first_n_attempts(
    moto_s3: MotoS3Server, bucket: str, make_target: MakeTarget
) -> None:
    app_id, version = ids()
    async with FlakyS3Proxy(moto_s3.endpoint_url, failures=2, match=marker_probe) as proxy:
        target = make_target(moto_s3.s3_config(bucket, endpoint_url=proxy.url))
        for _ in range(2):
            assert (await publish_error(target, app_id, version)).retryable is True
        async with asyncio.timeout(BOUND):
            await target.publish(app_id=app_id, app_version_id=version, files=FILES)
        assert proxy.failed == 2
        assert proxy.proxied == 1 + len(FILES) + 2  # HEAD, files, pointer, marker
    assert target.publish_count == 1


@pytest.mark.parametrize("method", ["HEAD", "PUT"])
async def test_403_access_denied_is_not_retryable(
    moto_s3: MotoS3Server, bucket: str, make_target: MakeTarget, method: str
) -> None:
    async with FlakyS3Proxy(
        moto_s3.endpoint_url,
        status=403,
        code="AccessDenied",
        message="Access Denied",
        failures=None,
        match=lambda request: request.method == method,
    ) as proxy:
        target = make_target(moto_s3.s3_config(bucket, endpoint_url=proxy.url))
        error = await publish_error(target, *ids())
    assert error.retryable is False
    expected = "s3 403 Forbidden" if method == "HEAD" else "s3 403 AccessDenied"
    assert str(error) == expected


async def test_missing_bucket_is_not_retryable(
    moto_s3: MotoS3Server, make_target: MakeTarget
) -> None:
    target = make_target(moto_s3.s3_config(f"missing-{uuid.uuid4().hex[:8]}"))
    error = await publish_error(target, *ids())
    assert error.retryable is False
    assert str(error).startswith("s3 404 NoSuchBucket")


async def test_nobody_listening_is_retryable(
    moto_s3: MotoS3Server, make_target: MakeTarget
) -> None:
    config = moto_s3.s3_config("b", endpoint_url=f"http://127.0.0.1:{closed_port()}")
    error = await publish_error(make_target(config), *ids())
    assert error.retryable is True
    assert str(error).startswith("s3 connection failed")


async def test_hang_ends_at_the_read_timeout_as_retryable(
    moto_s3: MotoS3Server, make_target: MakeTarget
) -> None:
    async with HangingEndpoint() as endpoint:
        config = moto_s3.s3_config("b", endpoint_url=endpoint.url, read_timeout=0.3)
        target = make_target(config)
        loop = asyncio.get_running_loop()
        started = loop.time()
        error = await publish_error(target, *ids())
        elapsed = loop.time() - started
        assert endpoint.accepted == 1  # botocore made one request and did not retry
    assert error.retryable is True
    assert str(error).startswith("s3 timed out")
    assert 0.3 <= elapsed < 3.0  # the read timeout, plus creating the client


async def test_hang_is_cancelled_promptly_by_the_attempt_deadline(
    moto_s3: MotoS3Server, make_target: MakeTarget
) -> None:
    async with HangingEndpoint() as endpoint:
        target = make_target(moto_s3.s3_config("b", endpoint_url=endpoint.url, read_timeout=60))
        app_id, version = ids()
        loop = asyncio.get_running_loop()

        # The request is on the wire and nothing will ever answer it: cancelling the attempt
        # (what its deadline does) ends it at once.
        attempt = asyncio.create_task(
            target.publish(app_id=app_id, app_version_id=version, files=FILES)
        )
        await endpoint.wait_accepted(1)
        started = loop.time()
        attempt.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(BOUND):
                await attempt
        assert loop.time() - started < 0.5

        # The same through asyncio.timeout, and the target stays usable after a cancellation.
        started = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await target.publish(app_id=app_id, app_version_id=version, files=FILES)
        assert loop.time() - started < 1.5
        async with asyncio.timeout(1.0):
            await target.close()
    assert target.publish_count == 0


@pytest.mark.parametrize(
    ("app_id", "version", "path"),
    [
        ("../etc", "v1", "index.html"),
        ("app", "v1/../../x", "index.html"),
        ("app", "", "index.html"),
        ("app", "v1", "/etc/passwd"),
        ("app", "v1", "a/../../b"),
        ("app", "v1", "a//b"),
        ("app", "v1", "./a"),
        ("app", "v1", "a\\b"),
        ("app", "v1", ".published"),
    ],
)
async def test_unsafe_ids_and_paths_fail_before_any_request(
    moto_s3: MotoS3Server, make_target: MakeTarget, app_id: str, version: str, path: str
) -> None:
    async with HangingEndpoint() as endpoint:
        target = make_target(moto_s3.s3_config("b", endpoint_url=endpoint.url))
        with pytest.raises(PublishError) as caught:
            async with asyncio.timeout(BOUND):
                await target.publish(
                    app_id=app_id,
                    app_version_id=version,
                    files=[ArtifactFile(path=path, content=b"x", content_type="")],
                )
        assert endpoint.accepted == 0
    assert caught.value.retryable is False
