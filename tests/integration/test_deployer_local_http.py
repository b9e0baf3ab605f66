"""The deploy HTTP server, for real on loopback: what `local` publishes opens in a browser."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from appforge.services.deployer.targets.base import ArtifactFile
from appforge.services.deployer.targets.local import DeployHttpServer, LocalTarget

WAIT = 5.0
SECRET = b"root:x:0:0:secret"
INDEX = b"<!doctype html><title>calc</title><script src='assets/app.js'></script>\n"
APP_JS = b"document.title = 'calc \xc3\xa9';\n"


def art(path: str, content: bytes) -> ArtifactFile:
    return ArtifactFile(path=path, content=content, content_type="application/octet-stream")


FILES = (
    art("index.html", INDEX),
    art("assets/app.js", APP_JS),
    art("assets/style.css", b"body { margin: 0 }\n"),
    art("assets/logo.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
    art("data.json", b'{"ok": true}'),
    art("sub/index.html", b"<p>sub</p>"),
)


@dataclass(kw_only=True)
class Deployed:
    root: Path
    target: LocalTarget
    server: DeployHttpServer
    http: aiohttp.ClientSession

    def url(self, raw_path: str) -> URL:
        """A URL sent exactly as written: no normalisation of dot segments or escapes."""
        return URL(self.server.url + raw_path, encoded=True)


@pytest.fixture
async def deployed(tmp_path: Path) -> AsyncIterator[Deployed]:
    root = tmp_path / "deploy"
    (tmp_path / "secret.txt").write_bytes(SECRET)  # beside the root
    target = LocalTarget(root, "http://127.0.0.1:0")
    await target.publish(app_id="calc", app_version_id="v1", files=FILES)
    (root / "secret.txt").write_bytes(SECRET)  # in the root, outside every app
    server = DeployHttpServer(root, "127.0.0.1", 0)
    await server.start()
    timeout = aiohttp.ClientTimeout(total=WAIT)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            yield Deployed(root=root, target=target, server=server, http=http)
    finally:
        await server.stop()
        await target.close()


async def fetch(deployed: Deployed, raw_path: str) -> tuple[int, str, bytes]:
    async with deployed.http.get(deployed.url(raw_path), allow_redirects=False) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


async def test_the_server_binds_a_real_port(deployed: Deployed) -> None:
    assert deployed.server.port > 0
    assert deployed.server.url == f"http://127.0.0.1:{deployed.server.port}"


async def test_healthz(deployed: Deployed) -> None:
    assert await fetch(deployed, "/healthz") == (200, "text/plain; charset=utf-8", b"ok")


async def test_the_app_root_serves_index_html(deployed: Deployed) -> None:
    async with deployed.http.get(deployed.url("/apps/calc/")) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
        assert resp.headers["Cache-Control"] == "no-cache"
        assert await resp.read() == INDEX
    assert await fetch(deployed, "/apps/calc/index.html") == (
        200,
        "text/html; charset=utf-8",
        INDEX,
    )


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("assets/app.js", "text/javascript; charset=utf-8"),
        ("assets/style.css", "text/css; charset=utf-8"),
        ("assets/logo.svg", "image/svg+xml"),
        ("data.json", "application/json"),
        ("sub/", "text/html; charset=utf-8"),
    ],
)
async def test_assets_carry_their_content_type(
    deployed: Deployed, path: str, content_type: str
) -> None:
    status, served_type, body = await fetch(deployed, f"/apps/calc/{path}")
    expected = path + "index.html" if path.endswith("/") else path
    assert (status, served_type) == (200, content_type)
    assert body == (deployed.root / "apps/calc/current" / expected).read_bytes()


async def test_head_answers_headers_without_a_body(deployed: Deployed) -> None:
    async with deployed.http.head(deployed.url("/apps/calc/assets/app.js")) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert int(resp.headers["Content-Length"]) == len(APP_JS)
        assert await resp.read() == b""


async def test_without_a_trailing_slash_redirects(deployed: Deployed) -> None:
    async with deployed.http.get(deployed.url("/apps/calc?x=1"), allow_redirects=False) as resp:
        assert resp.status == 301
        assert resp.headers["Location"] == "/apps/calc/?x=1"
    async with deployed.http.get(deployed.url("/apps/calc")) as resp:
        assert (resp.status, await resp.read()) == (200, INDEX)


@pytest.mark.parametrize(
    "path", ["/apps/calc/missing.js", "/apps/calc/assets", "/apps/nope/", "/apps/", "/nope"]
)
async def test_missing_is_404(deployed: Deployed, path: str) -> None:
    status, _, _ = await fetch(deployed, path)
    assert status == 404


TRAVERSALS = [
    "/apps/calc/../../secret.txt",
    "/apps/calc/../../../secret.txt",
    "/apps/calc/%2e%2e/%2e%2e/secret.txt",
    "/apps/calc/%2E%2E/%2E%2E/%2E%2E/secret.txt",
    "/apps/calc/..%2f..%2fsecret.txt",
    "/apps/calc/..%2F..%2F..%2Fsecret.txt",
    "/apps/calc/%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret.txt",
    "/apps/calc/..%5c..%5csecret.txt",
    "/apps/calc/..\\..\\secret.txt",
    "/apps/%2e%2e/secret.txt",
    "/apps/%2e%2e/%2e%2e/secret.txt",
    "/apps/calc//etc/passwd",
    "/apps/calc/%2fetc%2fpasswd",
    "/apps/calc/%2e/index.html",
    "/apps/calc/sub/%00/../../../secret.txt",
]


@pytest.mark.parametrize("path", TRAVERSALS)
async def test_traversal_never_escapes(deployed: Deployed, path: str) -> None:
    status, _, body = await fetch(deployed, path)
    assert status in (400, 404)
    assert SECRET not in body
    assert b"root:" not in body


@pytest.mark.parametrize("path", ["/apps/calc/../../secret.txt", "/apps/calc/%2e%2e/secret.txt"])
async def test_raw_traversal_on_the_wire_never_escapes(deployed: Deployed, path: str) -> None:
    """The same, written byte for byte on the socket, so no client can tidy the path first."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", deployed.server.port), WAIT
    )
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()
        await writer.wait_closed()
    status_line = response.split(b"\r\n", 1)[0]
    assert status_line.split(b" ")[1] in (b"400", b"404"), status_line
    assert SECRET not in response


async def test_a_symlink_out_of_the_version_is_not_followed(deployed: Deployed) -> None:
    current = deployed.root / "apps/calc/current"
    (current / "leak.txt").symlink_to(deployed.root.parent / "secret.txt")
    (current / "leakdir").symlink_to(deployed.root.parent, target_is_directory=True)

    for path in ("/apps/calc/leak.txt", "/apps/calc/leakdir/secret.txt"):
        status, _, body = await fetch(deployed, path)
        assert status == 404
        assert SECRET not in body


async def test_a_new_version_is_served_once_published(deployed: Deployed) -> None:
    await deployed.target.publish(
        app_id="calc", app_version_id="v2", files=[art("index.html", b"<p>v2</p>")]
    )
    assert await fetch(deployed, "/apps/calc/") == (200, "text/html; charset=utf-8", b"<p>v2</p>")
    assert (await fetch(deployed, "/apps/calc/assets/app.js"))[0] == 404


async def test_the_published_url_serves_the_app(tmp_path: Path) -> None:
    """End to end: the URL `publish` hands out is the one the server answers on."""
    root = tmp_path / "deploy"
    server = DeployHttpServer(root, "127.0.0.1", 0)
    await server.start()
    target = LocalTarget(root, server.url)
    try:
        publication = await target.publish(app_id="calc", app_version_id="v1", files=FILES)
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as http,
            http.get(publication.url) as resp,
        ):
            assert (resp.status, await resp.read()) == (200, INDEX)
    finally:
        await server.stop()
        await target.close()
