"""One OS process of the concurrency test: N concurrent upserts on one execution.

Usage: python upsert_worker.py WORKER CALLS APP_ID EXECUTION_ID ADDR_A ADDR_B
Prints one JSON line: the message ids seen and the number of failed calls.

Worker w owns seqs w*CALLS+1 … (w+1)*CALLS. Odd seqs are tools items whose one call the
owner marks SUCCEEDED; even seqs are text items. Every call also replays someone else's
item (a late STREAMING for tools), so replays and out-of-order writes are mixed in.
Calls alternate between the two chat servers.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys

import grpc

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.api.flow.v1 import flow_pb2

BASE_US = 1_800_000_000_000_000


def item(seq: int, *, final: bool) -> flow_pb2.FlowItem:
    out = flow_pb2.FlowItem(seq=seq)
    out.timestamp.FromMicroseconds(BASE_US + seq)
    if seq % 2:
        status = flow_pb2.TOOL_STATUS_SUCCEEDED if final else flow_pb2.TOOL_STATUS_STREAMING
        out.tools.calls.append(
            flow_pb2.ToolCall(
                call_id=f"call-{seq}",
                name="write_file",
                status=status,
                result_json=f'{{"seq":{seq}}}' if final else "",
            )
        )
    else:
        out.message.text = f"text {seq}"
    return out


async def main(
    worker: int, calls: int, app_id: str, execution_id: str, addresses: list[str]
) -> None:
    rng = random.Random(worker)
    total = 4 * calls
    channels = [grpc.aio.insecure_channel(a) for a in addresses]
    stubs = [chat_pb2_grpc.ChatServiceStub(c) for c in channels]

    async def one(k: int) -> str:
        seq = worker * calls + k + 1
        replay = rng.randint(1, total)
        request = chat_pb2.UpsertAssistantMessageRequest(
            app_id=app_id,
            execution_id=execution_id,
            items=[item(seq, final=True), item(replay, final=False)],
            status=chat_pb2.MESSAGE_STATUS_PROCESSING,
        )
        reply = await stubs[k % 2].UpsertAssistantMessage(request, timeout=60)
        if k % 5 == 0:  # a pure replay of this very call
            await stubs[(k + 1) % 2].UpsertAssistantMessage(request, timeout=60)
        return reply.id

    results = await asyncio.gather(*(one(k) for k in range(calls)), return_exceptions=True)
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    ids = sorted({r for r in results if isinstance(r, str)})
    for channel in channels:
        await channel.close(None)
    print(json.dumps({"message_ids": ids, "errors": errors}))


if __name__ == "__main__":
    w, n, app, execution, a, b = sys.argv[1:7]
    asyncio.run(main(int(w), int(n), app, execution, [a, b]))
