"""The `s3` target: publishes a version to an S3-compatible bucket (AWS S3, Cloudflare R2, MinIO).

Layout, under the bucket:

    apps/<app_id>/versions/<app_version_id>/<path>       the version's files
    apps/<app_id>/current.json                           {"version": ..., "published_at": ...}
    apps/<app_id>/versions/<app_version_id>/.published   the marker: this version is complete

The marker is written last, after every file and the pointer, so its presence means the
version is fully published: a publish that finds it uploads nothing (one version publishes
once, whichever worker retries it), and one that is cancelled or crashes half-way leaves no
marker and is simply redone by the next attempt (the keys and bytes are the same).

botocore never retries by itself here: retries, backoff and deadlines are the deployer's job,
and every failure is turned into a `PublishError` by `classify_s3_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import botocore.exceptions  # type: ignore[import-untyped, unused-ignore]
from aiobotocore.config import AioConfig  # type: ignore[import-untyped, unused-ignore]
from aiobotocore.session import get_session  # type: ignore[import-untyped, unused-ignore]

from appforge.services.common.clock import Clock, SystemClock
from appforge.services.common.logging import get_logger
from appforge.services.common.paths import path_problem
from appforge.services.deployer.content_types import content_type_for
from appforge.services.deployer.targets.base import ArtifactFile, Publication, PublishError
from appforge.services.deployer.targets.s3_errors import (
    classify_s3_error,
    http_status,
    most_telling,
)

log = get_logger(__name__)

UPLOAD_CONCURRENCY = 8
MARKER_NAME = ".published"
POINTER_NAME = "current.json"
HTML_CACHE_CONTROL = "no-cache"
# Keys carry the version id and a version's bytes never change, so assets may be cached hard.
ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"
MAX_KEY_BYTES = 1024  # S3's limit on an object key

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True, kw_only=True)
class S3Config:
    """Where and how the `s3` target connects.

    `endpoint_url` None means AWS S3 (virtual-hosted addressing); any other endpoint (R2,
    MinIO, a test server) is addressed path-style. Credentials None fall back to botocore's
    usual chain (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, profiles, instance roles).
    `public_url`, when set, is the base of the URLs handed out (a CDN or an R2 public bucket
    domain); otherwise they point at the endpoint itself.
    """

    endpoint_url: str | None = None
    bucket: str
    region: str = "us-east-1"
    public_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_pool_connections: int = 10

    def __post_init__(self) -> None:
        if not self.bucket:
            raise ValueError("bucket must not be empty")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("connect_timeout and read_timeout must be positive")
        if self.max_pool_connections < 1:
            raise ValueError("max_pool_connections must be at least 1")

    def client_config(self) -> Any:
        """The botocore client configuration: no botocore retries, bounded connect and read."""
        options: dict[str, Any] = {
            # `max_attempts` would count retries (1 = two requests); `total_max_attempts`
            # counts requests, so 1 means botocore never retries.
            "retries": {"total_max_attempts": 1, "mode": "standard"},
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "max_pool_connections": self.max_pool_connections,
        }
        if self.endpoint_url:
            options["s3"] = {"addressing_style": "path"}
            # Third-party S3 implementations lag behind AWS's default CRC checksums.
            options["request_checksum_calculation"] = "when_required"
            options["response_checksum_validation"] = "when_required"
        return AioConfig(**options)


@dataclass(frozen=True, kw_only=True)
class ObjectUpload:
    """One object to put: its key, bytes and the headers it is served with."""

    key: str
    body: bytes
    content_type: str
    cache_control: str


class S3Target:
    """Publishes app versions to an S3-compatible bucket; see the module docstring.

    One aiobotocore client per target, created inside the running loop on the first publish
    and closed by `close()`. `publish_count` counts the versions actually uploaded (not the
    calls that found a version already published).
    """

    name = "s3"

    def __init__(
        self,
        config: S3Config,
        *,
        clock: Clock | None = None,
        upload_concurrency: int = UPLOAD_CONCURRENCY,
    ) -> None:
        if upload_concurrency < 1:
            raise ValueError("upload_concurrency must be at least 1")
        self.config = config
        self.publish_count = 0
        self._clock: Clock = clock or SystemClock()
        self._concurrency = upload_concurrency
        self._client_task: asyncio.Task[Any] | None = None
        self._exit_stack: contextlib.AsyncExitStack | None = None
        self._closed = False

    def url_for(self, app_id: str, app_version_id: str) -> str:
        """The public URL of a version's `index.html`."""
        key = f"{version_prefix(app_id, app_version_id)}index.html"
        if self.config.public_url:
            return f"{self.config.public_url.rstrip('/')}/{key}"
        if self.config.endpoint_url:
            return f"{self.config.endpoint_url.rstrip('/')}/{self.config.bucket}/{key}"
        return f"https://{self.config.bucket}.s3.{self.config.region}.amazonaws.com/{key}"

    async def publish(
        self, *, app_id: str, app_version_id: str, files: Sequence[ArtifactFile]
    ) -> Publication:
        uploads = plan_uploads(app_id, app_version_id, files)
        prefix = version_prefix(app_id, app_version_id)
        url = self.url_for(app_id, app_version_id)
        try:
            client = await self._client()
            if await self._is_published(client, prefix + MARKER_NAME):
                log.info("s3_publish_skipped", app_id=app_id, app_version_id=app_version_id)
                return Publication(url=url)
            await self._upload_all(client, uploads)
            await self._put(client, self._pointer(app_id, app_version_id))
            await self._put(client, self._marker(prefix, app_version_id, len(uploads)))
        except PublishError:
            raise
        except Exception as exc:
            raise classify_s3_error(exc) from exc
        self.publish_count += 1
        log.info(
            "s3_published",
            app_id=app_id,
            app_version_id=app_version_id,
            files=len(uploads),
            url=url,
        )
        return Publication(url=url)

    async def close(self) -> None:
        self._closed = True
        task, self._client_task = self._client_task, None
        if task is None:
            return
        with contextlib.suppress(Exception):
            # Client creation is local and quick; waiting for it (even when the publish that
            # started it was cancelled) is what lets its HTTP session be closed, not leaked.
            await task
        stack, self._exit_stack = self._exit_stack, None
        if stack is not None:
            await stack.aclose()

    async def _client(self) -> Any:
        if self._closed:
            raise PublishError("s3 target is closed", retryable=False)
        if self._client_task is None:
            self._client_task = asyncio.get_running_loop().create_task(self._open_client())
        task = self._client_task
        try:
            # Shielded: a deadline that cancels this publish must not cancel the creation
            # half-way and leak a session that `close()` knows nothing about.
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            raise
        except Exception:
            if self._client_task is task:
                self._client_task = None  # the next attempt tries afresh
            raise

    async def _open_client(self) -> Any:
        stack = contextlib.AsyncExitStack()
        client = await stack.enter_async_context(
            get_session().create_client(
                "s3",
                region_name=self.config.region,
                endpoint_url=self.config.endpoint_url,
                aws_access_key_id=self.config.access_key_id,
                aws_secret_access_key=self.config.secret_access_key,
                config=self.config.client_config(),
            )
        )
        self._exit_stack = stack
        return client

    async def _is_published(self, client: Any, marker_key: str) -> bool:
        try:
            await client.head_object(Bucket=self.config.bucket, Key=marker_key)
        except botocore.exceptions.ClientError as exc:
            if http_status(exc) == 404:
                return False
            raise
        return True

    async def _put(self, client: Any, upload: ObjectUpload) -> None:
        await client.put_object(
            Bucket=self.config.bucket,
            Key=upload.key,
            Body=upload.body,
            ContentType=upload.content_type,
            CacheControl=upload.cache_control,
        )

    async def _upload_all(self, client: Any, uploads: Sequence[ObjectUpload]) -> None:
        limit = asyncio.Semaphore(self._concurrency)

        async def upload(item: ObjectUpload) -> None:
            async with limit:
                await self._put(client, item)

        try:
            async with asyncio.TaskGroup() as group:
                for item in uploads:
                    group.create_task(upload(item))
        except ExceptionGroup as errors:
            raise most_telling(errors) from errors

    def _pointer(self, app_id: str, app_version_id: str) -> ObjectUpload:
        body = {"version": app_version_id, "published_at": self._now_iso()}
        return _json_upload(f"apps/{app_id}/{POINTER_NAME}", body)

    def _marker(self, prefix: str, app_version_id: str, file_count: int) -> ObjectUpload:
        body = {"version": app_version_id, "files": file_count, "published_at": self._now_iso()}
        return _json_upload(prefix + MARKER_NAME, body)

    def _now_iso(self) -> str:
        stamp = dt.datetime.fromtimestamp(self._clock.now_us() / 1_000_000, tz=dt.UTC)
        return stamp.isoformat().replace("+00:00", "Z")


def version_prefix(app_id: str, app_version_id: str) -> str:
    """The key prefix (ending in `/`) under which a version's files live."""
    return f"apps/{app_id}/versions/{app_version_id}/"


def plan_uploads(
    app_id: str, app_version_id: str, files: Sequence[ArtifactFile]
) -> list[ObjectUpload]:
    """Validate ids and paths and say what goes where; PublishError(retryable=False) if bad.

    The deployer validates requests already; this is the target's own line of defence,
    because a key is a path on somebody's CDN.
    """
    _check_id("app_id", app_id)
    _check_id("app_version_id", app_version_id)
    if not files:
        raise PublishError("nothing to publish: no files", retryable=False)
    prefix = version_prefix(app_id, app_version_id)
    seen: set[str] = set()
    uploads: list[ObjectUpload] = []
    for file in files:
        _check_path(file.path)
        if file.path in seen:
            raise PublishError(f"duplicate file path {file.path!r}", retryable=False)
        seen.add(file.path)
        key = prefix + file.path
        if len(key.encode()) > MAX_KEY_BYTES:
            raise PublishError(f"file path too long: {file.path[:80]!r}…", retryable=False)
        content_type = file.content_type or content_type_for(file.path)
        html = content_type.split(";", 1)[0].strip().lower() == "text/html"
        uploads.append(
            ObjectUpload(
                key=key,
                body=file.content,
                content_type=content_type,
                cache_control=HTML_CACHE_CONTROL if html else ASSET_CACHE_CONTROL,
            )
        )
    return uploads


def _check_id(name: str, value: str) -> None:
    if not _ID.fullmatch(value):
        raise PublishError(
            f"{name} {value[:80]!r} is not a safe path component "
            "(letters, digits, '.', '_', '-'; at most 128; starting with a letter or digit)",
            retryable=False,
        )


def _check_path(path: str) -> None:
    problem = path_problem(path)
    if problem is None and path == MARKER_NAME:
        problem = "is reserved for the publication marker"
    if problem is not None:
        raise PublishError(f"file path {path[:80]!r} {problem}", retryable=False)


def _json_upload(key: str, body: dict[str, Any]) -> ObjectUpload:
    return ObjectUpload(
        key=key,
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type="application/json",
        cache_control=HTML_CACHE_CONTROL,
    )
