"""docker-compose.yml end to end: the images from the Dockerfile, the stack up with the documented
command (`python scripts/compose_up.py up`), and the golden flow (a calculator built, deployed and
served) driven from the host, with tokens and mutual TLS on as the compose file runs them: the
host calls with the CA, certificate and secret that `compose_up.py up` copied out of the `keys`
volume (`compose_up.py env`), and a call without them is refused.

Runs where the container engine of ../shared/ci/container-engine.sh is up (`.ci/run` sources its
env.sh: DOCKER_HOST, and the local PostgreSQL and Redis images) and skips elsewhere, even under
CI=true. The script's podman path is the one exercised (`--engine podman`, since the checks here
run the compose health checks with `podman healthcheck run`): it builds the three images and walks
the compose file's start order one step at a time (see scripts/compose_up.py for why).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn
from urllib.parse import urljoin

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.services.common import auth
from appforge.services.common.tls import TlsSettings, open_channel
from scripts import compose_up
from tests.app_checks import parse_html
from tests.e2e.conftest import appforge, free_port
from tests.helpers import watching

ROOT = Path(__file__).resolve().parents[2]
ENV_SH = Path(os.environ.get("TMPDIR") or "/tmp") / "appforge-containers" / "env.sh"
SERVICES = {"chat": 50051, "builder": 50052, "deployer": 50053}
# Host ports: the variables docker-compose.yml reads, each given a free port.
PORT_VARIABLES = (
    "APPFORGE_CHAT_PORT",
    "APPFORGE_BUILDER_PORT",
    "APPFORGE_DEPLOYER_PORT",
    "APPFORGE_HTTP_PORT",
    "APPFORGE_CHAT_METRICS_PORT",
    "APPFORGE_BUILDER_METRICS_PORT",
    "APPFORGE_DEPLOYER_METRICS_PORT",
)


def _no_engine() -> str | None:
    """Why the test cannot run here, or None."""
    if os.environ.get("APPFORGE_TEST_CONTAINERS") == "off":
        return "APPFORGE_TEST_CONTAINERS=off: no container engine"
    if not os.environ.get("DOCKER_HOST"):
        return (
            "no container engine: DOCKER_HOST is unset "
            f"(run ../shared/ci/container-engine.sh, then source {ENV_SH})"
        )
    if shutil.which("podman") is None:
        return "no container engine: `podman` is not on PATH"
    if importlib.util.find_spec("podman_compose") is None:
        return "podman-compose is not installed (pip install -e '.[dev]')"
    return None


@dataclass(kw_only=True)
class Stack:
    """One docker-compose.yml project brought up by scripts/compose_up.py, with its own images
    and host ports."""

    project: str
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    @functools.cached_property
    def plan(self) -> compose_up.Plan:
        """What the script works on for this stack: its image names, addresses and logs."""
        return compose_up.Plan(
            project=self.project, engine="podman", env=self.env, timeouts=compose_up.Timeouts()
        )

    def port(self, variable: str) -> int:
        return int(self.env[variable])

    def address(self, service: str) -> str:
        return self.plan.address(service)

    def client_env(self) -> dict[str, str]:
        """What `compose_up.py env` exports: the host CLI's TLS files and signing secret."""
        return compose_up.client_env(self.env)

    def channel(self, service: str, *, token: bool = True) -> grpc.aio.Channel:
        """Mutual TLS to `service`, each call with an admin token unless `token` is False."""
        env = self.client_env()
        minted = None
        if token:
            signing = auth.AuthSettings.from_env(env).minter("compose-test")
            assert signing is not None
            minted = auth.metadata_of(signing.token(teams=[], role=auth.Role.ADMIN, ttl=600))
        return open_channel(
            self.address(service),
            TlsSettings.from_env(env),
            compose_up.FAST_RECONNECT,
            credentials=minted,
        )

    def compose_up(self, command: str, *args: str, timeout: float) -> None:
        """`python scripts/compose_up.py COMMAND -p PROJECT --engine podman ARGS`, which must
        succeed: the README's command, so the test brings the stack up the way users do."""
        script = [sys.executable, str(ROOT / "scripts" / "compose_up.py"), command]
        argv = [*script, "-p", self.project, "--engine", "podman", *args]
        try:
            done = _run(argv, self.env, timeout)
        except subprocess.TimeoutExpired as exc:
            self.fail(f"compose_up.py {command}: no answer within {timeout:.0f} s\n{exc.output}")
        if done.returncode != 0:
            # On failure the script names the step and appends the containers' logs itself.
            pytest.fail(
                f"compose_up.py {command}: exit {done.returncode}\n{done.stdout[-20000:]}",
                pytrace=False,
            )

    def healthy(self, service: str) -> bool:
        """Runs the service's compose health check once, as the script does."""
        try:
            return compose_up.healthy(self.plan, service, f"{service} health check")
        except compose_up.StepFailed as exc:
            self.fail(str(exc))

    def services_in_image(self, service: str) -> list[str]:
        """The appforge services importable in `service`'s image."""
        probe = (
            "import importlib.util as u; print('services:', *(s for s in ('chat', 'builder', "
            "'deployer') if u.find_spec(f'appforge.services.{s}')))"
        )
        ran = _podman(
            "run", "--rm", "--no-healthcheck", "--entrypoint", "python", self.plan.image(service),
            "-c", probe,
        )  # fmt: skip
        # podman's own complaints (no systemd for health checks) share the output: find ours.
        answer = [line for line in ran.stdout.splitlines() if line.startswith("services:")]
        if ran.returncode != 0 or len(answer) != 1:
            self.fail(f"probing the {service} image: {ran.returncode}\n{ran.stdout}")
        return answer[0].split()[1:]

    def logs(self) -> str:
        """The tail of every container's log, for failure messages."""
        return compose_up.logs(self.plan)

    def fail(self, message: str) -> NoReturn:
        pytest.fail(f"{message}\n\ncontainer logs:\n{self.logs()}", pytrace=False)

    @contextlib.contextmanager
    def explained(self) -> Iterator[None]:
        """Failures inside carry the containers' logs."""
        try:
            yield
        except (
            AssertionError,
            TimeoutError,
            subprocess.TimeoutExpired,
            grpc.aio.AioRpcError,
            aiohttp.ClientError,
        ) as exc:
            raise AssertionError(f"{exc!r}\n\ncontainer logs:\n{self.logs()}") from exc


def _run(
    command: Sequence[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def _podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return _run(["podman", *args], dict(os.environ), timeout)


@pytest.fixture
def stack() -> Iterator[Stack]:
    """The stack of docker-compose.yml on fresh images; everything removed afterwards."""
    reason = _no_engine()
    if reason is not None:
        pytest.skip(reason)
    suffix = uuid.uuid4().hex[:10]
    env = dict(os.environ)
    ports: set[int] = set()
    while len(ports) < len(PORT_VARIABLES):
        ports.add(free_port())
    env.update(zip(PORT_VARIABLES, map(str, sorted(ports)), strict=True))
    env["APPFORGE_IMAGE_REPO"] = "localhost/appforge-compose-test"
    env["APPFORGE_IMAGE_TAG"] = suffix
    for variable, test_variable in (
        ("APPFORGE_POSTGRES_IMAGE", "APPFORGE_TEST_POSTGRES_IMAGE"),
        ("APPFORGE_REDIS_IMAGE", "APPFORGE_TEST_REDIS_IMAGE"),
    ):
        if os.environ.get(test_variable):  # the engine's local images; else the compose default
            env[variable] = os.environ[test_variable]
    keys = tempfile.mkdtemp(prefix="appforge-compose-keys-")
    env["APPFORGE_COMPOSE_KEYS"] = keys
    built = Stack(project=f"appforge-compose-{suffix}", env=env)
    try:
        started = time.monotonic()
        built.compose_up("up", timeout=840)  # builds the images, then the start order
        built.timings["up"] = time.monotonic() - started
        yield built
    finally:
        started = time.monotonic()
        built.compose_up("down", "--volumes", "--rmi", timeout=180)
        built.timings["down"] = time.monotonic() - started
        shutil.rmtree(keys, ignore_errors=True)
        print(f"compose stack {built.project}: {built.timings}")


async def _until_serving(stack: Stack, service: str, timeout: float) -> None:
    """Until the server's health Watch stream says SERVING."""
    async with asyncio.timeout(timeout), stack.channel(service, token=False) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:  # a stream broken while the container starts is opened again
            with contextlib.suppress(grpc.aio.AioRpcError):
                async for reply in stub.Watch(health_pb2.HealthCheckRequest(), wait_for_ready=True):
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return


def _deployed(execution_id: str, event: chat_pb2.MessageEvent) -> bool:
    message = event.message
    return (
        message.execution_id == execution_id
        and "deployment_status" in message.metadata.fields
        and message.metadata["deployment_status"] == "deployed"
    )


async def _build_a_calculator(stack: Stack) -> str:
    """The golden flow from the host with `appforge build`; the URL it printed last.

    Afterwards the execution's one message must say deployed, at that URL.
    """
    result = await appforge(
        "build",
        "build a calculator",
        "--app",
        f"calc-{uuid.uuid4().hex[:8]}",
        "--chat",
        stack.address("chat"),
        "--builder",
        stack.address("builder"),
        "--deployer",
        stack.address("deployer"),
        "--json",
        env=stack.client_env(),
        timeout=180,
    )
    assert result.code == 0, result.stdout + result.stderr
    events = result.events()
    outcome = events[-1]
    assert outcome["event"] == "result" and outcome["status"] == "deployed", outcome
    execution_id = next(e["execution_id"] for e in events if e["event"] == "started")
    async with stack.channel("chat") as channel:
        message = await chat_pb2_grpc.ChatServiceStub(channel).GetMessageByExecution(
            chat_pb2.GetMessageByExecutionRequest(execution_id=execution_id)
        )
    assert message.status == chat_pb2.MESSAGE_STATUS_COMPLETED
    # The deployer's notice may land just after the CLI saw the deployment succeed.
    if message.metadata.fields.get("deployment_status") is None or (
        message.metadata["deployment_status"] != "deployed"
    ):
        async with (
            stack.channel("chat") as channel,
            watching(chat_pb2_grpc.ChatServiceStub(channel), message.app_id) as watcher,
        ):
            event = await watcher.until(lambda e: _deployed(execution_id, e), timeout=60)
            message = event.message
    assert message.metadata["url"] == outcome["url"]
    return str(outcome["url"])


async def _refused_without_keys(stack: Stack) -> None:
    """Plaintext finds no server; TLS without a token is UNAUTHENTICATED."""
    request = chat_pb2.GetAppRequest(app_id="any")
    async with grpc.aio.insecure_channel(stack.address("chat")) as plain:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await chat_pb2_grpc.ChatServiceStub(plain).GetApp(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    async with stack.channel("chat", token=False) as tls:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await chat_pb2_grpc.ChatServiceStub(tls).GetApp(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.timeout(900)
async def test_compose_stack_builds_and_serves_a_calculator(stack: Stack) -> None:
    with stack.explained():
        for service in SERVICES:
            await _until_serving(stack, service, timeout=60)
        await _refused_without_keys(stack)
        # The compose file's own health checks (`appforge health` inside each container).
        assert {s: stack.healthy(s) for s in SERVICES} == dict.fromkeys(SERVICES, True)
        # Each image carries its own service and none of the others.
        assert {s: stack.services_in_image(s) for s in SERVICES} == {s: [s] for s in SERVICES}

        url = await _build_a_calculator(stack)

        http_port = stack.port("APPFORGE_HTTP_PORT")
        assert url.startswith(f"http://127.0.0.1:{http_port}/"), url
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            async with http.get(url) as response:
                assert response.status == 200, url
                assert response.content_type == "text/html"
                page = parse_html(await response.text())
            assert "".join(page.text_by_tag["title"]) == "Calculator"
            scripts = [attrs.get("src") for attrs in page.tags("script")]
            assert scripts == ["app.js"]
            async with http.get(urljoin(url, "app.js")) as response:
                assert response.status == 200
                assert "createCalculator" in await response.text()
            # Each service's Prometheus metrics on its published port.
            for service in SERVICES:
                port = stack.port(f"APPFORGE_{service.upper()}_METRICS_PORT")
                async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                    assert response.status == 200, service
                    assert "appforge_rpcs_total" in await response.text(), service
