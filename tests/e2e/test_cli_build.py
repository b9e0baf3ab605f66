"""`appforge build` against real service processes: every wait ends with a reason, and a
refused prompt creates nothing."""

from __future__ import annotations

import time
import uuid

import grpc
import pytest

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.cli import _app_name
from tests.deploy_endpoints import HangingEndpoint
from tests.e2e.conftest import Spawn, appforge, free_port
from tests.e2e.golden_stack import StackFactory

# The default --connect-timeout is 10 s: "exit 3 within a few seconds", with room for a busy host.
UNREACHABLE_BOUND = 30.0


async def test_an_unreachable_deployer_ends_the_build_with_exit_3_naming_it(
    stacks: StackFactory,
) -> None:
    stack = await stacks.stack()
    wrong = f"127.0.0.1:{free_port()}"  # nothing listens: the builder has the right address
    flags = ["--chat", stack.chat.address, "--builder", stack.builder.address, "--deployer", wrong]
    started = time.monotonic()
    result = await appforge(
        "build", "build a calculator", "--app", f"wrong-{uuid.uuid4().hex[:8]}", *flags, "--json"
    )
    elapsed = time.monotonic() - started
    assert result.code == 3, (result.stdout, result.stderr)
    assert elapsed < UNREACHABLE_BOUND
    assert result.event("finished")["deployment_id"]  # the build itself succeeded
    last = result.events()[-1]
    assert last["event"] == "result" and last["status"] == "unreachable", last
    assert last["exit"] == 3 and f"deployer at {wrong}" in last["error"]
    assert f"deployer at {wrong}" in result.stderr and "Traceback" not in result.stderr

    piped = await appforge(
        "build", "build a calculator", "--app", f"wrong-{uuid.uuid4().hex[:8]}", *flags
    )
    assert piped.code == 3, (piped.stdout, piped.stderr)
    assert f"deployer at {wrong}: cannot be reached" in piped.stderr


async def test_a_deployer_that_accepts_but_never_answers_is_bounded_too(
    stacks: StackFactory,
) -> None:
    stack = await stacks.stack()
    async with HangingEndpoint() as hanging:  # TCP accepted, no HTTP/2 ever comes back
        deployer = hanging.url.removeprefix("http://").rstrip("/")
        result = await appforge(
            "build",
            "build a calculator",
            "--app",
            f"hang-{uuid.uuid4().hex[:8]}",
            "--chat",
            stack.chat.address,
            "--builder",
            stack.builder.address,
            "--deployer",
            deployer,
            "--connect-timeout",
            "2",
            "--json",
            timeout=UNREACHABLE_BOUND,
        )
    assert result.code == 3, (result.stdout, result.stderr)
    last = result.events()[-1]
    assert last["event"] == "result" and last["status"] == "unreachable"
    assert f"deployer at {deployer}: cannot be reached (no connection within 2 s)" in last["error"]


async def test_an_unreachable_chat_is_exit_3_with_a_result_line() -> None:
    chat = f"127.0.0.1:{free_port()}"
    result = await appforge(
        "build", "build a calculator", "--chat", chat, "--json", timeout=UNREACHABLE_BOUND
    )
    assert result.code == 3, (result.stdout, result.stderr)
    [only] = result.events()
    assert only["event"] == "result" and only["status"] == "unreachable"
    assert f"chat at {chat}" in only["error"] and f"chat at {chat}" in result.stderr


async def test_a_slow_but_reachable_deployer_is_followed_past_the_connect_timeout(
    stacks: StackFactory,
) -> None:
    async with HangingEndpoint() as hanging:  # S3 that never answers: the attempt times out
        stack = await stacks.stack(
            APPFORGE_DEPLOY_TARGET="s3",
            APPFORGE_S3_ENDPOINT_URL=hanging.url,
            APPFORGE_S3_BUCKET=f"b-{uuid.uuid4().hex[:12]}",
            AWS_ACCESS_KEY_ID="key",
            AWS_SECRET_ACCESS_KEY="secret",
            APPFORGE_DEPLOY_ATTEMPT_TIMEOUT="4",
            APPFORGE_DEPLOY_MAX_ATTEMPTS="1",
        )
        started = time.monotonic()
        result = await stack.build("build a calculator", "--connect-timeout", "1")
        elapsed = time.monotonic() - started
    assert result.code == 1, (result.stdout, result.stderr)
    last = result.events()[-1]
    assert last["event"] == "result" and last["status"] == "deploy_failed", last
    assert last["error"].startswith("timed_out") and last["exit"] == 1
    assert elapsed > 4  # followed through the whole attempt, far past --connect-timeout 1


async def _is_new(chat: str, team: str, name: str) -> bool:
    """Whether CreateApp makes a new app of this name (ALREADY_EXISTS when one is there)."""
    async with grpc.aio.insecure_channel(chat) as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        try:
            await stub.CreateApp(chat_pb2.CreateAppRequest(team_id=team, name=name), timeout=30)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
                return False
            raise
        return True


@pytest.mark.parametrize(
    ("prompt", "needle"),
    [
        ("", "prompt: must not be empty"),
        ("  \n\t", "prompt: must not be empty"),
        ("build a calculator " * 6000, "prompt: is 114000 bytes; the limit is 65536 bytes"),
    ],
    ids=["empty", "blank", "100-kb"],
)
async def test_a_refused_prompt_creates_no_app(spawn: Spawn, prompt: str, needle: str) -> None:
    chat = await spawn("chat")
    team = f"t-{uuid.uuid4().hex[:8]}"
    unused = f"127.0.0.1:{free_port()}"  # never contacted: the CLI refuses first
    result = await appforge(
        "build", prompt, "--team", team, "--chat", chat.address, "--builder", unused,
        "--deployer", unused, "--json",
    )  # fmt: skip
    assert result.code == 2, (result.stdout, result.stderr)
    [only] = result.events()
    assert only == {**only, "event": "result", "status": "refused", "exit": 2}
    assert needle in only["error"] and needle in result.stderr
    name = _app_name(prompt)  # what the build would have named the app
    assert await _is_new(chat.address, team, name)
    assert not await _is_new(chat.address, team, name)  # the probe does see an existing app
