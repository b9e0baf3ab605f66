"""The load: `count` Deploy calls, `concurrency` in flight, round-robin over the deployers."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from harness import CALL_TIMEOUT_S

from appforge.api.deployer.v1 import deployer_pb2

from .artifact import Artifact


@dataclass(frozen=True, kw_only=True)
class EnqueueResult:
    """What the client saw while sending the Deploy calls."""

    version_ids: list[str]
    errors: dict[str, int]
    first_error: str
    started_us: int
    elapsed_s: float


def deploy_request(
    app_id: str,
    artifact: Artifact,
    prefix: str,
    n: int,
    target: deployer_pb2.DeployTarget.ValueType = deployer_pb2.DEPLOY_TARGET_UNSPECIFIED,
) -> deployer_pb2.DeployRequest:
    """The `n`th Deploy of a load: version `<prefix>-v<n>` of `artifact`, its own execution."""
    version_id = f"{prefix}-v{n:06d}"
    return deployer_pb2.DeployRequest(
        app_id=app_id,
        app_version_id=version_id,
        execution_id=f"{prefix}-e{n:06d}",
        files=artifact.files(version_id),
        target=target,
    )


async def enqueue(
    stubs: Sequence[Any],
    app_id: str,
    artifact: Artifact,
    *,
    count: int,
    concurrency: int,
    prefix: str,
    target: deployer_pb2.DeployTarget.ValueType,
) -> EnqueueResult:
    """Send `count` Deploy calls, `concurrency` in flight, round-robin over `stubs`, each to
    `target` (`DEPLOY_TARGET_UNSPECIFIED`: the deployers' default, noop in `noop` mode)."""

    async def deploy(n: int) -> str:
        request = deploy_request(app_id, artifact, prefix, n, target)
        await stubs[n % len(stubs)].Deploy(request, timeout=CALL_TIMEOUT_S)
        return request.app_version_id

    def refusal(exc: Exception) -> tuple[str, str] | None:
        if isinstance(exc, grpc.aio.AioRpcError):
            return exc.code().name, f"{exc.code().name}: {exc.details()}"
        return None

    return await send_all(count, concurrency, deploy, refusal)


async def send_all(
    count: int,
    concurrency: int,
    send: Callable[[int], Awaitable[str]],
    refusal: Callable[[Exception], tuple[str, str] | None],
) -> EnqueueResult:
    """`send(n)` for every n below `count`, `concurrency` at a time; `send` answers the id
    of what it queued. An error `refusal` names (its kind, its text) is counted; any other
    is raised."""
    next_n = 0
    done: list[str] = []
    errors: Counter[str] = Counter()
    first_error = ""

    async def sender() -> None:
        nonlocal next_n, first_error
        while next_n < count:
            n = next_n
            next_n += 1
            try:
                done.append(await send(n))
            except Exception as exc:
                named = refusal(exc)
                if named is None:
                    raise
                errors[named[0]] += 1
                first_error = first_error or named[1]

    started_us = time.time_ns() // 1000
    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return EnqueueResult(
        version_ids=done,
        errors=dict(errors),
        first_error=first_error,
        started_us=started_us,
        elapsed_s=time.perf_counter() - started,
    )
