"""Secrets never leave in what the system emits.

The three services run as processes at DEBUG, with marker values for OPENAI_API_KEY, the
AWS keys, the token signing secret and a DATABASE_URL password (a login role of its own,
made for this test, so the password is the one PostgreSQL checks wherever it checks
passwords, as in a container); the CLI calls with a token given in APPFORGE_TOKEN. The model
endpoint first refuses the key and echoes it in its error body, as real endpoints do with a
masked one; then a build succeeds and deploys. The refused build's error
reaches the message, GetExecution and `appforge build`'s output with the key redacted; no
marker appears in any service log, in the CLI's output, in `appforge inspect`, or in
what chat stores, and no token at all (the services' own included) in any log.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import grpc
import pytest
from sqlalchemy.engine import make_url

from appforge.api.builder.v1 import builder_pb2, builder_pb2_grpc
from appforge.services.common import auth
from appforge.services.common.secrets import REDACTED
from tests.conftest import Infra, _admin
from tests.e2e.conftest import Cli, Spawn, appforge
from tests.e2e.golden_stack import StackFactory
from tests.openai_endpoint import Failure, FakeEndpoint, calculator_replies, serving


def markers() -> dict[str, str]:
    token = uuid.uuid4().hex[:12]
    return {
        "OPENAI_API_KEY": f"sk-marker-openai-{token}",
        "AWS_ACCESS_KEY_ID": f"AKIAMARKER{token.upper()}",
        "AWS_SECRET_ACCESS_KEY": f"marker-aws-secret-{token}",
        auth.SECRET: f"marker-jwt-secret-{token}-{uuid.uuid4().hex}",
    }


@pytest.fixture
def marker_role(infra: Infra, pg_url: str) -> Iterator[tuple[str, str]]:
    """(DATABASE_URL, password) for a login role whose password is a marker; the role is
    dropped at the end, its sessions ended first."""
    token = uuid.uuid4().hex[:8]
    role, password = f"marker_{token}", f"marker-db-password-{token}"
    asyncio.run(_admin(infra, f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'"))
    url = make_url(pg_url).set(username=role, password=password)
    try:
        yield url.render_as_string(hide_password=False), password
    finally:
        ended = f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
        asyncio.run(_admin(infra, ended))
        asyncio.run(_admin(infra, f"DROP ROLE IF EXISTS {role}"))


def leaks(text: str, secrets: list[str]) -> list[str]:
    return [secret for secret in secrets if secret in text]


async def test_no_secret_reaches_a_log_a_status_or_a_message(
    marker_role: tuple[str, str], spawn: Spawn, stacks: StackFactory
) -> None:
    secret_env = markers()
    database_url, password = marker_role
    minter = auth.AuthSettings(secret=secret_env[auth.SECRET].encode()).minter("tests")
    assert minter is not None
    token = minter.token(teams=["default"], role=auth.Role.USER, ttl=600)
    secrets = [*secret_env.values(), password, token]
    echo = json.dumps(
        {"error": {"message": f"Incorrect API key provided: {secret_env['OPENAI_API_KEY']}"}}
    )
    replies = [Failure(status=401, body=echo), *calculator_replies()]
    env = {**secret_env, "DATABASE_URL": database_url, "APPFORGE_LOG_LEVEL": "DEBUG"}
    async with serving(FakeEndpoint(replies=replies)) as endpoint:
        chat = await spawn("chat", env=env)
        deployer = await stacks.deployer(chat, port=None, **env)
        builder = await spawn(
            "builder",
            env={
                **env,
                "APPFORGE_CHAT_ADDR": chat.address,
                "APPFORGE_DEPLOYER_ADDR": deployer.address,
                "APPFORGE_MODEL": "openai",
                "OPENAI_BASE_URL": endpoint.base_url,
                "APPFORGE_OPENAI_MODEL": "gpt-test",
            },
        )
        cli_env = {**env, auth.TOKEN: token}
        flags = ["--chat", chat.address, "--builder", builder.address]
        flags += ["--deployer", deployer.address, "--json"]
        outputs: list[Cli] = []
        for prompt in ("build a calculator", "build a calculator, again"):
            app = f"secrets-{uuid.uuid4().hex[:8]}"
            outputs.append(await appforge("build", prompt, "--app", app, *flags, env=cli_env))
        refused, built = outputs
        assert refused.code != 0 and built.code == 0, (refused.stderr, built.stderr)
        failed_execution = refused.event("started")["execution_id"]
        shown = await appforge(
            "inspect", failed_execution, "--chat", chat.address, "--json", env=cli_env
        )
        async with grpc.aio.insecure_channel(builder.address) as channel:
            execution = await builder_pb2_grpc.BuilderServiceStub(channel).GetExecution(
                builder_pb2.GetExecutionRequest(execution_id=failed_execution),
                metadata=auth.metadata_of(token),
            )
    # The endpoint really was sent the key (the redaction has something to hide) ...
    assert endpoint.requests[0].headers["Authorization"] == f"Bearer {secret_env['OPENAI_API_KEY']}"
    # ... and the refusal is told, with the key redacted, wherever it is shown.
    assert f"Incorrect API key provided: {REDACTED}" in execution.error
    assert f"Incorrect API key provided: {REDACTED}" in shown.stdout
    emitted = {
        "chat log": chat.log(),
        "builder log": builder.log(),
        "deployer log": deployer.log(),
        "GetExecution": str(execution),
        "appforge inspect": shown.stdout + shown.stderr,
        **{f"appforge build {n}": c.stdout + c.stderr for n, c in enumerate(outputs)},
    }
    assert "rpc" in emitted["builder log"] or "debug" in emitted["builder log"]  # DEBUG on
    found = {where: leaks(text, secrets) for where, text in emitted.items()}
    assert not any(found.values()), found
    # Every JWT starts with the base64 of '{"': none reaches a log, whoever minted it.
    for where in ("chat log", "builder log", "deployer log"):
        assert "eyJ" not in emitted[where], where
