"""What the golden-flow modules share: chat, builder and deployer started as separate
processes, and the reads that check a build afterwards (its message, `appforge inspect`).

`secure_stacks` runs them as an operator should: tokens checked (an HS256 secret), mutual
TLS between every process and for every client; the CLI and the reads go through both.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.services.common import auth
from appforge.services.common.tls import TlsSettings, open_channel
from tests.e2e.conftest import Cli, ServiceProcess, Spawn, appforge, free_port
from tests.tls_certs import Pki, make_pki


@dataclass(frozen=True, kw_only=True)
class Security:
    """A signing secret and a PKI: what a secure stack serves and calls with."""

    secret: str
    pki: Pki

    @classmethod
    def make(cls, directory: Path) -> Security:
        return cls(secret=uuid.uuid4().hex + uuid.uuid4().hex, pki=make_pki(directory))

    def service_env(self) -> dict[str, str]:
        """Every service: tokens checked, mutual TLS served and used to call the others."""
        return {
            **self.pki.env(mutual=True),
            auth.SECRET: self.secret,
            auth.INSECURE: "",
        }

    def client_env(self) -> dict[str, str]:
        """A client (the CLI): TLS with a client certificate, and the secret to mint with."""
        return {**self.pki.env(), auth.SECRET: self.secret}

    def minter(self) -> auth.Minter:
        minter = auth.AuthSettings(secret=self.secret.encode()).minter("tests")
        assert minter is not None
        return minter

    def token(self, *, teams: Sequence[str] = (), role: auth.Role = auth.Role.ADMIN) -> str:
        return self.minter().token(teams=teams, role=role, ttl=300)

    def channel(
        self, address: str, *, teams: Sequence[str] = (), role: auth.Role = auth.Role.ADMIN
    ) -> grpc.aio.Channel:
        """A channel over mutual TLS whose calls carry a token (an admin's by default)."""
        tls = TlsSettings.from_env(self.pki.env())
        token = self.token(teams=teams, role=role)
        return open_channel(address, tls, credentials=auth.metadata_of(token))


@dataclass(kw_only=True)
class Stack:
    """The three services, and the flags `appforge build` needs to find them."""

    chat: ServiceProcess
    builder: ServiceProcess
    deployer: ServiceProcess
    security: Security | None = None

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
            env=self.client_env(),
        )

    def client_env(self) -> dict[str, str]:
        return self.security.client_env() if self.security is not None else {}

    def channel(self, address: str) -> grpc.aio.Channel:
        if self.security is not None:
            return self.security.channel(address)
        return grpc.aio.insecure_channel(address)

    async def message_of(self, execution_id: str) -> chat_pb2.ChatMessage:
        async with self.channel(self.chat.address) as channel:
            return await chat_pb2_grpc.ChatServiceStub(channel).GetMessageByExecution(
                chat_pb2.GetMessageByExecutionRequest(execution_id=execution_id)
            )

    async def inspect(self, target: str) -> tuple[int, dict[str, Any]]:
        result = await appforge(
            "inspect", target, "--chat", self.chat.address, "--json", env=self.client_env()
        )
        assert result.code in (0, 1), result.stderr
        return result.code, json.loads(result.stdout)


class StackFactory:
    def __init__(self, spawn: Spawn, tmp_path: Path, security: Security | None = None) -> None:
        self.spawn = spawn
        self.tmp_path = tmp_path
        self.security = security

    def _env(self, env: dict[str, str] | None = None) -> dict[str, str]:
        secured = self.security.service_env() if self.security is not None else {}
        return {**secured, **(env or {})}

    async def chat(self) -> ServiceProcess:
        process: ServiceProcess = await self.spawn("chat", env=self._env())
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
            env=self._env(self.deployer_env(chat, http_port, **extra)),
            port=port,
        )
        return process

    async def stack(self, **deployer_env: str) -> Stack:
        chat = await self.chat()
        deployer = await self.deployer(chat, port=None, **deployer_env)
        builder: ServiceProcess = await self.spawn(
            "builder",
            env=self._env(
                {"APPFORGE_CHAT_ADDR": chat.address, "APPFORGE_DEPLOYER_ADDR": deployer.address}
            ),
        )
        return Stack(chat=chat, builder=builder, deployer=deployer, security=self.security)


@pytest.fixture
def stacks(spawn: Spawn, tmp_path: Path) -> StackFactory:
    """Stacks that check no tokens and speak plaintext (`serve --insecure`)."""
    return StackFactory(spawn, tmp_path)


@pytest.fixture
def secure_stacks(spawn: Spawn, tmp_path: Path) -> StackFactory:
    """Stacks with tokens checked and mutual TLS everywhere."""
    return StackFactory(spawn, tmp_path, Security.make(tmp_path / "pki"))


def assert_one_ordered_message(report: dict[str, Any], execution_id: str) -> dict[str, Any]:
    [message] = [m for m in report["messages"] if m.get("execution_id") == execution_id]
    flow = message["flow"]
    assert [int(item["seq"]) for item in flow] == list(range(1, len(flow) + 1))
    stamps = [item["timestamp_us"] for item in flow]
    assert all(a < b for a, b in itertools.pairwise(stamps))
    return dict(message)
