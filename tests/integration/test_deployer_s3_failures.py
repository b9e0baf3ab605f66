"""The `s3` target's failures, against a real S3-compatible server on loopback (moto's server
mode), and how each is classified (retryable or not).

Failures are real too: a proxy that answers 503 or 403 in front of moto, a bucket that does
not exist, a port nobody listens on, and an endpoint that accepts and never answers.
"""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest

from appforge.services.deployer.targets.base import ArtifactFile, PublishError
from appforge.services.deployer.targets.s3 import S3Target
from tests.deploy_endpoints import FlakyS3Proxy, HangingEndpoint, MotoS3Server, marker_probe
from tests.integration.deployer_s3_fixtures import BOUND, FILES, MakeTarget, ids


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket closes


async def publish_error(target: S3Target, app_id: str, version: str) -> PublishError:
    with pytest.raises(PublishError) as caught:
        async with asyncio.timeout(BOUND):
            await target.publish(app_id=app_id, app_version_id=version, files=FILES)
    return caught.value


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
