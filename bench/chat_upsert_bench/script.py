"""What an executor sends for one execution, upsert by upsert: a pending tool call, a text
item, the call SUCCEEDED, a growing second text item, the completion; and replays."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import TypeAlias

from appforge.api.chat.v1 import chat_pb2
from appforge.api.flow.v1 import flow_pb2

TEXT_CHUNK = "The form now validates the e-mail field before it posts to /api/signup. "

Request: TypeAlias = chat_pb2.UpsertAssistantMessageRequest
Script: TypeAlias = "list[Request]"


def _tools_item(seq: int, call_id: str, status: int, result_json: str = "") -> flow_pb2.FlowItem:
    call = flow_pb2.ToolCall(
        call_id=call_id,
        name="read_file",
        status=status,  # type: ignore[arg-type]
        arguments_json='{"path": "src/pages/signup.tsx"}',
        result_json=result_json,
    )
    return flow_pb2.FlowItem(seq=seq, tools=flow_pb2.ToolBatch(calls=[call]))


def _text_item(seq: int, text: str) -> flow_pb2.FlowItem:
    return flow_pb2.FlowItem(seq=seq, message=flow_pb2.TextPart(text=text))


def step_request(app_id: str, execution_id: str, step: int, *, final: bool) -> Request:
    """The `step`-th upsert an executor sends for one execution.

    0 creates the message with a pending tool call, 1 adds a text item, 2 moves the call
    to SUCCEEDED, 3 and later grow a second text item; `final` completes the message.
    """
    request = chat_pb2.UpsertAssistantMessageRequest(app_id=app_id, execution_id=execution_id)
    if step == 0:
        request.items.append(_tools_item(1, "call-1", flow_pb2.TOOL_STATUS_PENDING))
        request.status = chat_pb2.MESSAGE_STATUS_PROCESSING
        request.metadata.update({"model": "bench", "attempt": 1})
    elif step == 1:
        request.items.append(_text_item(2, "Let me look at the signup page first."))
    elif step == 2:
        result = json.dumps({"content": "export function Signup() { ... }", "bytes": 1834})
        request.items.append(
            _tools_item(1, "call-1", flow_pb2.TOOL_STATUS_SUCCEEDED, result_json=result)
        )
    else:
        request.items.append(_text_item(3, TEXT_CHUNK * (step - 2)))
    if final:
        request.status = chat_pb2.MESSAGE_STATUS_COMPLETED
    return request


def execution_script(
    app_id: str, execution_id: str, calls: int, rng: random.Random, replay_ratio: float
) -> Script:
    """The `calls` requests of one execution, in the order they are sent."""
    script: Script = []
    step = 0
    while len(script) < calls:
        if script and rng.random() < replay_ratio:
            script.append(script[-1])  # a replay: the executor resends its last call
            continue
        final = len(script) == calls - 1
        script.append(step_request(app_id, execution_id, step, final=final))
        step += 1
    return script


def build_scripts(
    app_ids: Sequence[str],
    *,
    prefix: str,
    calls: int,
    executions: int,
    replay_ratio: float,
    seed: int,
) -> list[Script]:
    """`calls` requests spread as evenly as possible over `executions` executions."""
    rng = random.Random(seed)
    executions = max(1, min(executions, calls))
    per, extra = divmod(calls, executions)
    return [
        execution_script(
            app_ids[n % len(app_ids)],
            f"{prefix}-{n:06d}",
            per + (1 if n < extra else 0),
            rng,
            replay_ratio,
        )
        for n in range(executions)
    ]
