"""`appforge health ADDRESS`: one gRPC health check, usable as a container health check."""

from __future__ import annotations

import asyncio
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from appforge.services.common.tls import TlsSettings, open_channel


async def check(
    address: str, service: str, timeout: float, tls: TlsSettings | None = None
) -> tuple[int, str]:
    """(exit status, one line): 0 when SERVING, 1 otherwise."""
    try:
        async with open_channel(address, tls) as channel:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
    except grpc.aio.AioRpcError as exc:
        return 1, f"{address}: {exc.code().name}: {exc.details() or 'no answer'}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return (0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1), (
        f"{address}: {status}"
    )


def run(address: str, service: str, timeout: float, tls: TlsSettings | None = None) -> int:
    code, line = asyncio.run(check(address, service, timeout, tls))
    print(line, file=sys.stdout if code == 0 else sys.stderr)
    return code
