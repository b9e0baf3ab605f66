"""The baseline: no builder, the bench writes each build's chat traffic itself, upsert for
upsert what the builder would send, in the same order and with equivalent payloads."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import grpc
from harness import CALL_TIMEOUT_S

from appforge.api.chat.v1 import chat_pb2
from appforge.api.flow.v1 import flow_pb2

from .latency import now_us
from .load import Phase
from .script import FINAL_TEXT, build_turns, tool_result, turn_calls, turn_text

TOOL_CALL_TIMEOUT_US = 60_000_000  # the builder's default APPFORGE_TOOL_TIMEOUT


def _call(
    call_id: str,
    name: str,
    status: int,
    *,
    arguments: str = "",
    result: str = "",
    deadline: int = 0,
) -> flow_pb2.ToolCall:
    call = flow_pb2.ToolCall(
        call_id=call_id,
        name=name,
        status=status,  # type: ignore[arg-type]
        arguments_json=arguments,
        result_json=result,
    )
    if deadline:
        call.deadline.FromMicroseconds(deadline)
    return call


def _tools(seq: int, stamp: int, calls: Sequence[flow_pb2.ToolCall]) -> flow_pb2.FlowItem:
    item = flow_pb2.FlowItem(seq=seq, tools=flow_pb2.ToolBatch(calls=list(calls)))
    item.timestamp.FromMicroseconds(stamp)
    return item


def _text(seq: int, stamp: int, text: str) -> flow_pb2.FlowItem:
    item = flow_pb2.FlowItem(seq=seq, message=flow_pb2.TextPart(text=text))
    item.timestamp.FromMicroseconds(stamp)
    return item


class Emulator:
    """One build's chat traffic, written directly: what the builder would send, in order."""

    def __init__(self, stub: Any, phase: Phase, token: str) -> None:
        self.stub = stub
        self.phase = phase
        self.token = token

    async def upsert(self, app_id: str, execution_id: str, **fields: Any) -> None:
        request = chat_pb2.UpsertAssistantMessageRequest(
            app_id=app_id, execution_id=execution_id, **fields
        )
        self.phase.tally.upserts += self.phase.tally.window.holds(now_us())
        await self.stub.UpsertAssistantMessage(request, timeout=CALL_TIMEOUT_S)

    async def build(self, n: int, app_id: str) -> None:
        execution_id = f"bench-{self.token}-{n:06d}"
        await self.stub.PostUserMessage(
            chat_pb2.PostUserMessageRequest(
                app_id=app_id, content=f"bench build {n}: a small static page"
            ),
            timeout=CALL_TIMEOUT_S,
        )
        await self.upsert(
            app_id,
            execution_id,
            status=chat_pb2.MESSAGE_STATUS_PROCESSING,
            metadata={"execution_status": "running", "model": "openai"},
        )
        batches: list[flow_pb2.FlowItem] = []
        config = self.phase.config
        turns = build_turns(n, config)
        for turn in range(turns):
            if turn == turns - 1 or (self.phase.stopping and turn > 0):
                await self.phase.pacer.wait(1)
                stamp = now_us()
                await self.upsert(
                    app_id, execution_id, items=[_text(2 * turn + 1, stamp, FINAL_TEXT)]
                )
                self.phase.tally.wrote_item(app_id, stamp)
                break
            await self.phase.pacer.wait(2)
            batches.append(await self.turn(app_id, execution_id, turn))
        version = f"version-{execution_id}"
        await self.upsert(
            app_id,
            execution_id,
            status=chat_pb2.MESSAGE_STATUS_COMPLETED,
            metadata={"app_version_id": version, "deployment_status": "deploying"},
        )
        await self.upsert(
            app_id,
            execution_id,
            items=batches,
            status=chat_pb2.MESSAGE_STATUS_COMPLETED,
            metadata={
                "execution_status": "succeeded",
                "app_version_id": version,
                "deployment_id": f"deployment-{execution_id}",
            },
        )
        await self.upsert(
            app_id,
            execution_id,
            metadata={
                "deployment_id": f"deployment-{execution_id}",
                "deployment_status": "deployed",
                "url": f"http://127.0.0.1/apps/{app_id}/",
            },
        )

    async def turn(self, app_id: str, execution_id: str, turn: int) -> flow_pb2.FlowItem:
        """A turn with tools: text + PENDING batch, then each call's STREAMING and end."""
        stamp = now_us()
        seq = 2 * turn + 1
        calls = turn_calls(turn, self.phase.config.calls_per_turn)
        deadline = stamp + TOOL_CALL_TIMEOUT_US
        pending = [
            _call(c, name, flow_pb2.TOOL_STATUS_PENDING, arguments=json.dumps(a), deadline=deadline)
            for c, name, a in calls
        ]
        items = [_text(seq, stamp, turn_text(turn)), _tools(seq + 1, stamp + 1, pending)]
        await self.upsert(app_id, execution_id, items=items)
        self.phase.tally.wrote_item(app_id, stamp)
        self.phase.tally.wrote_item(app_id, stamp + 1)

        async def run(call_id: str, name: str, arguments: dict[str, Any]) -> flow_pb2.ToolCall:
            streaming = _call(call_id, name, flow_pb2.TOOL_STATUS_STREAMING)
            await self.upsert(app_id, execution_id, items=[_tools(seq + 1, stamp + 1, [streaming])])
            done = _call(
                call_id,
                name,
                flow_pb2.TOOL_STATUS_SUCCEEDED,
                result=tool_result(turn, name, arguments),
            )
            await self.upsert(app_id, execution_id, items=[_tools(seq + 1, stamp + 1, [done])])
            done.arguments_json = json.dumps(arguments)
            done.deadline.FromMicroseconds(deadline)
            return done

        ended = await asyncio.gather(*(run(*c) for c in calls))
        return _tools(seq + 1, stamp + 1, ended)


async def emulate_worker(emulator: Emulator, phase: Phase, worker: int) -> None:
    """Emulated build after emulated build, one at a time, until the phase stops."""
    while not phase.stopping:
        n, app_id = phase.next_build()
        phase.tally.started += 1
        try:
            await emulator.build(n, app_id)
            phase.tally.statuses["EXECUTION_STATUS_SUCCEEDED"] += 1
        except grpc.aio.AioRpcError as exc:
            phase.tally.statuses["EXECUTION_STATUS_FAILED"] += 1
            phase.tally.error(f"{exc.code().name}: {exc.details()}")
            await asyncio.sleep(0.1)
