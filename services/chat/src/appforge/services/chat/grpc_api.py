"""The ChatService servicer: protobuf in, domain calls, protobuf out. Nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.services.chat import convert
from appforge.services.chat.service import ChatService
from appforge.services.common.server import Context

SERVICE_NAME = chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    """gRPC face of `ChatService`; errors are mapped by the server's interceptor."""

    def __init__(self, service: ChatService) -> None:
        self.service = service

    async def CreateApp(self, request: chat_pb2.CreateAppRequest, context: Context) -> chat_pb2.App:
        app = await self.service.create_app(
            request.team_id, request.name, return_existing=request.return_existing
        )
        return convert.app_to_proto(app)

    async def GetApp(self, request: chat_pb2.GetAppRequest, context: Context) -> chat_pb2.App:
        return convert.app_to_proto(await self.service.get_app(request.app_id))

    async def PostUserMessage(
        self, request: chat_pb2.PostUserMessageRequest, context: Context
    ) -> chat_pb2.ChatMessage:
        message = await self.service.post_user_message(
            request.app_id, request.content, request.request_id
        )
        return convert.message_to_proto(message)

    async def UpsertAssistantMessage(
        self, request: chat_pb2.UpsertAssistantMessageRequest, context: Context
    ) -> chat_pb2.ChatMessage:
        message = await self.service.upsert_assistant(convert.upsert_from_proto(request))
        return convert.message_to_proto(message)

    async def GetMessage(
        self, request: chat_pb2.GetMessageRequest, context: Context
    ) -> chat_pb2.ChatMessage:
        return convert.message_to_proto(await self.service.get_message(request.message_id))

    async def GetMessageByExecution(
        self, request: chat_pb2.GetMessageByExecutionRequest, context: Context
    ) -> chat_pb2.ChatMessage:
        message = await self.service.get_message_by_execution(request.execution_id)
        return convert.message_to_proto(message)

    async def ListMessages(
        self, request: chat_pb2.ListMessagesRequest, context: Context
    ) -> chat_pb2.ListMessagesResponse:
        page, token = await self.service.list_messages(
            request.app_id, request.page_size, request.page_token
        )
        return chat_pb2.ListMessagesResponse(
            messages=[convert.message_to_proto(m) for m in page], next_page_token=token
        )

    async def WatchApp(
        self, request: chat_pb2.WatchAppRequest, context: Context
    ) -> AsyncIterator[chat_pb2.MessageEvent]:
        async for change in self.service.watch_app(request.app_id, request.after_cursor):
            yield convert.change_to_proto(change)
