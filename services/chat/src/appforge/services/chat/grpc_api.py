"""The ChatService servicer: protobuf in, domain calls, protobuf out. Nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc, deltas
from appforge.services.chat import convert
from appforge.services.chat.domain import Change, Message, MessageView
from appforge.services.chat.service import ChatService
from appforge.services.common.server import Context, MethodHandler

# How many messages a FULL watch keeps whole to apply deltas to.
WHOLE_MESSAGES_MAX = 256

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
        view = convert.view_from_proto(request.view)
        upsert = convert.upsert_from_proto(request)
        return convert.message_to_proto(await self.service.upsert_assistant(upsert, view))

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

    async def WatchApp(  # type: ignore[override]  # serialised events: see watch_handler
        self, request: chat_pb2.WatchAppRequest, context: Context
    ) -> AsyncIterator[bytes]:
        """Serialised events (see `watch_handler`): BASIC relays each published change's own
        payload; FULL applies the deltas to the messages this stream has shown."""
        view = convert.view_from_proto(request.view)
        changes = self.service.watch_app(request.app_id, request.after_cursor)
        if view is MessageView.BASIC:
            async for change in changes:
                yield convert.change_to_wire(change)
            return
        whole = WholeMessages(self.service.get_message)
        async for change in changes:
            yield (await whole.event(change)).SerializeToString()


class WholeMessages:
    """The FULL view of a watch: every event carries the whole message.

    Deltas are applied (`appforge.api.chat.v1.deltas.Messages`, the rules every client
    uses, which also bound the memory a long message leaves behind) to the messages the
    stream has shown, at most `size` of them; one it forgot, or cannot apply, is read again.
    """

    def __init__(
        self, read: Callable[[str], Awaitable[Message]], size: int = WHOLE_MESSAGES_MAX
    ) -> None:
        self.read = read
        self.messages = deltas.Messages(size=size)

    async def event(self, change: Change) -> chat_pb2.MessageEvent:
        event = convert.change_to_proto(change)
        try:
            message = self.messages.apply(event)
        except deltas.DeltaMismatch:  # forgotten, or a version skipped: the stored message
            read = convert.message_to_proto(await self.read(event.delta.message_id))
            message = self.messages.put(read)
        return chat_pb2.MessageEvent(cursor=event.cursor, message=message)


def watch_handler(handler: MethodHandler) -> MethodHandler:
    """WatchApp's handler with a serializer that passes serialised events through, so an
    event is serialised once per process, not once per watcher."""
    assert handler.unary_stream is not None, "WatchApp is a server stream"
    return grpc.unary_stream_rpc_method_handler(
        handler.unary_stream,
        request_deserializer=handler.request_deserializer,
        response_serializer=_event_bytes,
    )


def _event_bytes(event: bytes | chat_pb2.MessageEvent) -> bytes:
    return event if isinstance(event, bytes) else event.SerializeToString()
