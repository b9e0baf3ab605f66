"""What the `s3` target modules share: moto's server mode on loopback, a fresh public bucket
per test, a factory of targets closed at the end of it, and the app's files."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import pytest_asyncio

from appforge.services.common.clock import FrozenClock
from appforge.services.deployer.targets.base import ArtifactFile
from appforge.services.deployer.targets.s3 import S3Config, S3Target
from tests.deploy_endpoints import MotoS3Server

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
