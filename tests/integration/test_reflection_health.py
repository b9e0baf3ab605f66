"""What grpcurl relies on: server reflection, and the standard health service."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from appforge.api.chat.v1 import chat_pb2
from tests.integration.conftest import ChatHandle, start_chat, stop_chat

CHAT = "appforge.chat.v1.ChatService"


def _grpcurl_like_upsert(address: str, app_id: str, execution_id: str) -> dict[str, Any]:
    """List services and call UpsertAssistantMessage knowing nothing but reflection."""
    with grpc.insecure_channel(address) as channel:
        reflection_db = ProtoReflectionDescriptorDatabase(channel)
        services = set(reflection_db.get_services())
        pool = descriptor_pool.DescriptorPool(reflection_db)
        method = pool.FindServiceByName(CHAT).FindMethodByName("UpsertAssistantMessage")
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        request = json_format.ParseDict(
            {
                "appId": app_id,
                "executionId": execution_id,
                "items": [
                    {
                        "seq": "1",
                        "tools": {
                            "calls": [
                                {
                                    "callId": "c1",
                                    "name": "write_file",
                                    "status": "TOOL_STATUS_SUCCEEDED",
                                }
                            ]
                        },
                    },
                    {"seq": "2", "message": {"text": "Wrote index.html"}},
                ],
                "status": "MESSAGE_STATUS_COMPLETED",
                "metadata": {"source": "grpcurl"},
                "view": "MESSAGE_VIEW_FULL",
            },
            request_cls(),
        )
        rpc = channel.unary_unary(
            f"/{CHAT}/UpsertAssistantMessage",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        response = rpc(request, timeout=10)
        return {"services": services, "response": json_format.MessageToDict(response)}


async def test_reflection_lists_services_and_drives_a_call(chat: ChatHandle) -> None:
    app = await chat.stub.CreateApp(
        chat_pb2.CreateAppRequest(team_id="t", name=f"refl-{uuid.uuid4().hex[:8]}")
    )
    execution_id = str(uuid.uuid4())
    result = await asyncio.to_thread(_grpcurl_like_upsert, chat.address, app.id, execution_id)
    assert {CHAT, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= result[
        "services"
    ]
    response = result["response"]
    assert response["executionId"] == execution_id
    assert response["status"] == "MESSAGE_STATUS_COMPLETED"
    assert response["content"] == "Wrote index.html"
    assert response["metadata"] == {"source": "grpcurl"}
    stored = await chat.stub.GetMessageByExecution(
        chat_pb2.GetMessageByExecutionRequest(execution_id=execution_id)
    )
    assert [i.seq for i in stored.flow] == [1, 2]


async def test_health_serving_then_not_serving_during_shutdown(
    backend: tuple[str, str, str | None],
) -> None:
    handle = await start_chat(*backend)
    health = health_pb2_grpc.HealthStub(handle.channel)
    for service in ("", CHAT):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    watch = health.Watch(health_pb2.HealthCheckRequest(service=CHAT))
    first = await asyncio.wait_for(watch.read(), 5)
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    stopping = asyncio.create_task(handle.runtime.server.stop())
    second = await asyncio.wait_for(watch.read(), 5)
    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await asyncio.wait_for(stopping, 10)
    watch.cancel()
    await stop_chat(handle)


def _reflect(channel: grpc.Channel, version: str, request: Any) -> Any:
    """One request to reflection `version` (v1 or v1alpha): the messages of the two are the
    same bytes, so the v1alpha classes speak both."""
    rpc = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    [response] = list(rpc(iter([request]), timeout=10))
    return response


def _both_versions(address: str) -> dict[str, Any]:
    listed: dict[str, Any] = {}
    with grpc.insecure_channel(address) as channel:
        for version in ("v1", "v1alpha"):
            listing = _reflect(
                channel, version, reflection_pb2.ServerReflectionRequest(list_services="")
            )
            described = _reflect(
                channel,
                version,
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="grpc.reflection.v1.ServerReflection"
                ),
            )
            files = [
                descriptor_pb2.FileDescriptorProto.FromString(raw)
                for raw in described.file_descriptor_response.file_descriptor_proto
            ]
            listed[version] = {
                "services": {s.name for s in listing.list_services_response.service},
                "v1 file": [(f.name, f.package, [s.name for s in f.service]) for f in files],
            }
    return listed


async def test_reflection_answers_on_v1_and_on_v1alpha(chat: ChatHandle) -> None:
    listed = await asyncio.to_thread(_both_versions, chat.address)
    expected = {
        CHAT,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    v1_file = [("grpc/reflection/v1/reflection.proto", "grpc.reflection.v1", ["ServerReflection"])]
    assert listed == {version: {"services": expected, "v1 file": v1_file} for version in listed}
    assert set(listed) == {"v1", "v1alpha"}
