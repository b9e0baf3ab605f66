"""The `s3` target's publishes against a real S3-compatible server on loopback (moto's server
mode): a deploy naming s3 end to end, every file then the pointer and the marker, the public
URL, and a version published once however often it is asked."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import aiohttp

from appforge.cli import installed
from appforge.services.common import db, migrate
from appforge.services.common.bus import InProcessBus
from appforge.services.common.settings import Settings
from appforge.services.deployer.bootstrap import build_targets
from appforge.services.deployer.domain import Deployment, DeploymentStatus, WorkerConfig
from appforge.services.deployer.service import DeployerService, PolicyOverrides
from appforge.services.deployer.settings import DeploySettings
from appforge.services.deployer.store import DeployerStores
from appforge.services.deployer.timing import WallTimer
from appforge.services.deployer.worker import DeploymentWorker
from tests.deploy_endpoints import FlakyS3Proxy, MotoS3Server
from tests.integration.deployer_s3_fixtures import BOUND, FILES, INDEX, MakeTarget, ids

EXPECTED_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "assets/app.js": "text/javascript; charset=utf-8",
    "assets/style.css": "text/css; charset=utf-8",
    "assets/logo.svg": "image/svg+xml",
    "data/blob": "application/octet-stream",
    "data/model.bin": "application/x-custom",
}


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
        await stores.close()
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
