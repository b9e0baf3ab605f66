"""What the golden-flow modules share: chat, builder and deployer started as separate
processes, and the reads that check a build afterwards (its message, `appforge inspect`)."""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from tests.e2e.conftest import Cli, ServiceProcess, Spawn, appforge, free_port


@dataclass(kw_only=True)
class Stack:
    """The three services, and the flags `appforge build` needs to find them."""

    chat: ServiceProcess
    builder: ServiceProcess
    deployer: ServiceProcess

    def flags(self) -> list[str]:
        return [
            "--chat",
            self.chat.address,
            "--builder",
            self.builder.address,
            "--deployer",
            self.deployer.address,
        ]

    async def build(self, prompt: str, *extra: str) -> Cli:
        return await appforge(
            "build",
            prompt,
            "--app",
            f"golden-{uuid.uuid4().hex[:8]}",
            *self.flags(),
            "--json",
            *extra,
        )


class StackFactory:
    def __init__(self, spawn: Spawn, tmp_path: Path) -> None:
        self.spawn = spawn
        self.tmp_path = tmp_path

    async def chat(self) -> ServiceProcess:
        process: ServiceProcess = await self.spawn("chat")
        return process

    def deployer_env(self, chat: ServiceProcess, http_port: int, **extra: str) -> dict[str, str]:
        return {
            "APPFORGE_CHAT_ADDR": chat.address,
            "APPFORGE_DEPLOY_ROOT": str(self.tmp_path / "deploys"),
            "APPFORGE_DEPLOY_PUBLIC_URL": f"http://127.0.0.1:{http_port}",
            "APPFORGE_DEPLOY_POLL_INTERVAL": "0.05",
            "APPFORGE_DEPLOY_LEASE": "1",
            **extra,
        }

    async def deployer(
        self, chat: ServiceProcess, *, port: int | None = None, **extra: str
    ) -> ServiceProcess:
        http_port = free_port()
        process: ServiceProcess = await self.spawn(
            "deployer",
            "--http-port",
            str(http_port),
            env=self.deployer_env(chat, http_port, **extra),
            port=port,
        )
        return process

    async def stack(self, **deployer_env: str) -> Stack:
        chat = await self.chat()
        deployer = await self.deployer(chat, port=None, **deployer_env)
        builder: ServiceProcess = await self.spawn(
            "builder",
            env={"APPFORGE_CHAT_ADDR": chat.address, "APPFORGE_DEPLOYER_ADDR": deployer.address},
        )
        return Stack(chat=chat, builder=builder, deployer=deployer)


@pytest.fixture
def stacks(spawn: Spawn, tmp_path: Path) -> StackFactory:
    return StackFactory(spawn, tmp_path)


async def message_of(chat: ServiceProcess, execution_id: str) -> chat_pb2.ChatMessage:
    async with grpc.aio.insecure_channel(chat.address) as channel:
        return await chat_pb2_grpc.ChatServiceStub(channel).GetMessageByExecution(
            chat_pb2.GetMessageByExecutionRequest(execution_id=execution_id)
        )


async def inspect(chat: ServiceProcess, target: str) -> tuple[int, dict[str, Any]]:
    result = await appforge("inspect", target, "--chat", chat.address, "--json")
    assert result.code in (0, 1), result.stderr
    return result.code, json.loads(result.stdout)


def assert_one_ordered_message(report: dict[str, Any], execution_id: str) -> dict[str, Any]:
    [message] = [m for m in report["messages"] if m.get("execution_id") == execution_id]
    flow = message["flow"]
    assert [int(item["seq"]) for item in flow] == list(range(1, len(flow) + 1))
    stamps = [item["timestamp_us"] for item in flow]
    assert all(a < b for a, b in itertools.pairwise(stamps))
    return dict(message)
