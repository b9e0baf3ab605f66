"""The BuilderService servicer: protobuf <-> use cases. Nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

from appforge.api.builder.v1 import builder_pb2, builder_pb2_grpc
from appforge.services.builder.convert import (
    build_event_to_proto,
    execution_to_proto,
    version_to_proto,
)
from appforge.services.builder.service import BuilderService, BuildInput
from appforge.services.common.server import Context

SERVICE_NAME = builder_pb2.DESCRIPTOR.services_by_name["BuilderService"].full_name


class BuilderServicer(builder_pb2_grpc.BuilderServiceServicer):
    """gRPC face of `BuilderService`; errors are mapped by the server's interceptor."""

    def __init__(self, service: BuilderService) -> None:
        self.service = service
        self.json_limit = service.limits.max_json_bytes

    async def Build(
        self, request: builder_pb2.BuildRequest, context: Context
    ) -> AsyncIterator[builder_pb2.BuildEvent]:
        build = BuildInput(
            app_id=request.app_id,
            prompt=request.prompt,
            user_message_id=request.user_message_id,
            model=request.model,
            request_id=request.request_id,
        )
        async for event in self.service.build(build):
            yield build_event_to_proto(event)

    async def GetExecution(
        self, request: builder_pb2.GetExecutionRequest, context: Context
    ) -> builder_pb2.Execution:
        execution, calls = await self.service.execution(request.execution_id)
        return execution_to_proto(execution, calls, self.json_limit)

    async def CancelExecution(
        self, request: builder_pb2.CancelExecutionRequest, context: Context
    ) -> builder_pb2.Execution:
        execution, calls = await self.service.cancel(request.execution_id, request.reason)
        return execution_to_proto(execution, calls, self.json_limit)

    async def GetAppVersion(
        self, request: builder_pb2.GetAppVersionRequest, context: Context
    ) -> builder_pb2.AppVersion:
        return version_to_proto(await self.service.version(request.app_version_id))
