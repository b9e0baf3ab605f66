"""Loopback servers that deploy targets publish to in tests, real over TCP.

- `MotoS3Server`: a real S3-compatible server (moto's server mode) in a thread;
- `HangingEndpoint`: accepts connections, reads, never answers (a real hang);
- `FlakyS3Proxy`: a reverse proxy in front of an S3 endpoint that answers some requests
  with an S3 error (503 by default) and forwards the rest; with `status=403`,
  `code="AccessDenied"` and `failures=None` it is an endpoint that refuses everything.

Each binds 127.0.0.1 on a port of the kernel's choosing, starts and stops within a bound, and
works as a context manager (`with` for moto, `async with` for the asyncio ones). Services under
test may run in other processes: they only need the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self
from xml.sax.saxutils import escape

import aiohttp
import boto3  # type: ignore[import-untyped, unused-ignore]
from aiohttp import web
from botocore.config import Config
from moto.server import ThreadedMotoServer

from appforge.services.deployer.targets.s3 import MARKER_NAME, S3Config

STOP_TIMEOUT = 5.0

# Headers that belong to one hop, not to the request or response being relayed.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
        "content-length",
    }
)


class MotoS3Server:
    """moto's S3 in server mode on a loopback port, in a daemon thread of this process.

    moto keeps its state per process, not per server: give every test its own bucket
    (`create_bucket(unique_name)`). Any credentials are accepted; `s3_config()` hands out
    the dummy ones explicitly so nothing depends on the environment.
    """

    access_key_id = "testing"
    secret_access_key = "testing"
    region = "us-east-1"

    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._endpoint_url: str | None = None
        self._client: Any = None

    def start(self) -> None:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self._endpoint_url = f"http://{host}:{port}"

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._endpoint_url is not None:
            self._server.stop()
            self._endpoint_url = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        if self._endpoint_url is None:
            raise RuntimeError("MotoS3Server is not started")
        return self._endpoint_url

    @property
    def client(self) -> Any:
        """A synchronous boto3 S3 client for setting up and inspecting (quick on loopback)."""
        if self._client is None:
            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                aws_access_key_id=self.access_key_id,
                aws_secret_access_key=self.secret_access_key,
                config=Config(
                    s3={"addressing_style": "path"},
                    retries={"total_max_attempts": 1},
                    connect_timeout=5,
                    read_timeout=10,
                ),
            )
        return self._client

    def create_bucket(self, name: str, *, public_read: bool = False) -> str:
        """Create a bucket; `public_read` lets anonymous GETs fetch its objects, as a bucket
        behind the URLs handed out to browsers must (a policy, as on S3, R2 and MinIO)."""
        self.client.create_bucket(Bucket=name)
        if public_read:
            statement = {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{name}/*",
            }
            self.client.put_bucket_policy(
                Bucket=name,
                Policy=json.dumps({"Version": "2012-10-17", "Statement": [statement]}),
            )
        return name

    def get_object(self, bucket: str, key: str) -> tuple[bytes, dict[str, str]]:
        """An object's bytes and its headers (lower-case names)."""
        response = self.client.get_object(Bucket=bucket, Key=key)
        with contextlib.closing(response["Body"]) as body:
            data: bytes = body.read()
        headers: dict[str, str] = response["ResponseMetadata"]["HTTPHeaders"]
        return data, headers

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key under `prefix`, sorted."""
        found: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            found.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(found)

    def s3_config(
        self, bucket: str, *, endpoint_url: str | None = None, **overrides: Any
    ) -> S3Config:
        """An `S3Config` for `bucket` on this server (or on `endpoint_url`, a proxy in front)."""
        options: dict[str, Any] = {
            "endpoint_url": endpoint_url or self.endpoint_url,
            "bucket": bucket,
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "connect_timeout": 2.0,
            "read_timeout": 10.0,
        }
        options.update(overrides)
        return S3Config(**options)


class HangingEndpoint:
    """A TCP server that accepts connections and reads everything, never answering.

    The hang is real: a client's request goes out and no byte ever comes back, so only the
    client's own read timeout or its caller's deadline ends it. `accepted` counts connections.
    """

    def __init__(self) -> None:
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Condition()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for task in list(self._handlers):
            task.cancel()
        async with asyncio.timeout(STOP_TIMEOUT):
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("HangingEndpoint is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_accepted(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until at least `count` connections were accepted, or fail after `timeout`."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.accepted >= count)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        async with self._changed:
            self.accepted += 1
            self._changed.notify_all()
        try:
            while await reader.read(65536):
                pass
        except (asyncio.CancelledError, ConnectionError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)


RequestFilter = Callable[[web.Request], bool]


def marker_probe(request: web.Request) -> bool:
    """The `HEAD …/.published` that starts every `S3Target.publish` attempt."""
    return request.method == "HEAD" and request.path.endswith("/" + MARKER_NAME)


class FlakyS3Proxy:
    """A reverse proxy in front of an S3 endpoint that fails some requests first.

    A request that `match` selects (every request by default) is answered with `status`
    and an S3 XML error `<Error><Code>{code}</Code>…` while `fail_remaining` is above zero
    (forever when it is None), and each such answer decrements it. Every other request is
    forwarded to `upstream` (method, raw path and query, headers including Host, so signatures
    still verify, and body) and its answer relayed.

    To fail the first N publish *attempts* rather than N requests, match `marker_probe`:
    `S3Target` starts each attempt with exactly one HEAD of the marker, and botocore does
    not retry it, so `FlakyS3Proxy(url, failures=2, match=marker_probe)` fails attempts 1 and
    2 and lets attempt 3 through. Set `fail_remaining` again at any time to start over.
    """

    def __init__(
        self,
        upstream: str,
        *,
        status: int = 503,
        code: str = "ServiceUnavailable",
        message: str = "Please reduce your request rate.",
        failures: int | None = 0,
        match: RequestFilter | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.status = status
        self.code = code
        self.message = message
        self.fail_remaining = failures
        self.match: RequestFilter = match or (lambda _request: True)
        self.requests = 0
        self.failed = 0
        self.proxied = 0
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=30)
        )
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        try:
            await self._runner.setup()
            self._site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await self._site.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        async with asyncio.timeout(STOP_TIMEOUT):
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()
        self._runner = self._site = self._session = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("FlakyS3Proxy is not started")
        return int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _should_fail(self, request: web.Request) -> bool:
        if not self.match(request):
            return False
        if self.fail_remaining is None:
            return True
        if self.fail_remaining > 0:
            self.fail_remaining -= 1
            return True
        return False

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.read()
        if self._should_fail(request):
            self.failed += 1
            return self._error(request)
        self.proxied += 1
        return await self._forward(request, body)

    def _error(self, request: web.Request) -> web.Response:
        request_id = f"flaky-{next(self._ids)}"
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(self.code)}</Code><Message>{escape(self.message)}</Message>"
            f"<Resource>{escape(request.path)}</Resource><RequestId>{request_id}</RequestId>"
            "</Error>"
        )
        return web.Response(
            status=self.status,
            text=xml,
            content_type="application/xml",
            headers={"x-amz-request-id": request_id},
        )

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._session.request(
            request.method,
            self.upstream + request.raw_path,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            relayed = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            response = web.Response(status=upstream.status, body=payload, headers=relayed)
            if request.method == "HEAD" and "Content-Length" in upstream.headers:
                # A HEAD's Content-Length is the object's size, not this (empty) body's.
                response.headers["Content-Length"] = upstream.headers["Content-Length"]
            return response
