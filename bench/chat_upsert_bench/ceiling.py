"""The ceiling: a bare grpc.aio server (the bench script with `--ceiling-server`, its own OS
process) whose UpsertAssistantMessage is one raw asyncpg upsert and a small ChatMessage."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from appforge.api.chat.v1 import chat_pb2

from .script import Request

SERVICE_NAME = chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name
# What the service's engine may open (services/common/db.py: pool_size=10, max_overflow=10).
CEILING_POOL_SIZE = 20

CEILING_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS bench_ceiling (
    execution_id text NOT NULL,
    seq bigint NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (execution_id, seq)
)
"""
CEILING_UPSERT = """
INSERT INTO bench_ceiling (execution_id, seq, body) VALUES ($1, $2, $3)
ON CONFLICT (execution_id, seq) DO UPDATE SET body = EXCLUDED.body
"""


async def create_ceiling_table(dsn: str) -> None:
    """The table the ceiling writes to, in the bench database."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(CEILING_TABLE_DDL)
    finally:
        await conn.close()


async def serve_ceiling(port: int, dsn: str, pool_size: int) -> None:
    """A bare grpc.aio server: one raw asyncpg upsert per UpsertAssistantMessage."""
    pool = await asyncpg.create_pool(
        dsn, min_size=pool_size, max_size=pool_size, reset=_keep_session_state
    )

    async def upsert(request: Request, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        seq = request.items[0].seq if request.items else 0
        await pool.execute(CEILING_UPSERT, request.execution_id, seq, request.SerializeToString())
        return chat_pb2.ChatMessage(
            id=request.execution_id,
            app_id=request.app_id,
            role=chat_pb2.ROLE_ASSISTANT,
            execution_id=request.execution_id,
            status=request.status,
            version=seq,
        )

    handler = grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "UpsertAssistantMessage": grpc.unary_unary_rpc_method_handler(
                upsert,
                request_deserializer=chat_pb2.UpsertAssistantMessageRequest.FromString,
                response_serializer=chat_pb2.ChatMessage.SerializeToString,
            )
        },
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise OSError(f"cannot bind 127.0.0.1:{port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    try:
        await stop.wait()
        await server.stop(1.0)
    finally:
        await pool.close()


async def _keep_session_state(connection: asyncpg.Connection) -> None:
    """Skip the pool's reset query: one upsert leaves no session state to clear, and the
    reset would add a second round trip to every call of a server meant as a ceiling."""
