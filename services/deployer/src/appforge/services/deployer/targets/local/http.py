"""`DeployHttpServer`: serves each app's current version from the deploy root over HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from appforge.services.common.logging import get_logger
from appforge.services.common.paths import component_problem, path_problem
from appforge.services.deployer.content_types import content_type_for
from appforge.services.deployer.targets.local.layout import (
    APPS_DIR,
    CURRENT_LINK,
    VERSIONS_DIR,
)

log = get_logger(__name__)


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
        if component_problem(request.match_info["app_id"]) is not None:
            raise web.HTTPNotFound()
        location = request.rel_url.raw_path + "/"
        if request.rel_url.raw_query_string:
            location += "?" + request.rel_url.raw_query_string
        raise web.HTTPMovedPermanently(location)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        app_id = request.match_info["app_id"]
        tail = request.match_info["tail"]
        relative = tail + "index.html" if tail == "" or tail.endswith("/") else tail
        if component_problem(app_id) is not None or path_problem(relative) is not None:
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
            versions = (self._root / APPS_DIR / app_id / VERSIONS_DIR).resolve(strict=True)
            base = (self._root / APPS_DIR / app_id / CURRENT_LINK).resolve(strict=True)
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
