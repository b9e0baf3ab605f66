"""`appforge inspect APP_ID|EXECUTION_ID`: every message with its flow, and what is wrong.

The three monitoring queries of the system appforge replaced, made one command: it flags an
execution with more than one assistant message (a message is tied to an execution by its
`execution_id`, or by `metadata.execution_id` as older writers did), flow items of one message
that share a timestamp or go backwards, and tool calls still open past their deadline. Exit
status 0 when nothing is flagged, 1 when something is, 2 for an unknown id, 3 when chat is down.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import grpc
from google.protobuf import json_format
from rich.console import Console
from rich.table import Table
from rich.text import Text

from appforge.api.chat.v1 import chat_pb2, chat_pb2_grpc
from appforge.api.flow.v1 import flow_pb2
from appforge.cli.channels import Unreachable, connect, console_for
from appforge.services.common.auth import Metadata
from appforge.services.common.tls import TlsSettings, open_channel

EXIT_CLEAN, EXIT_FLAGGED, EXIT_UNKNOWN, EXIT_UNREACHABLE = 0, 1, 2, 3
CONNECT_TIMEOUT = 10.0  # seconds to reach chat before exit 3
_RPC_TIMEOUT = 30.0  # seconds for one request once connected
_OPEN = (flow_pb2.TOOL_STATUS_PENDING, flow_pb2.TOOL_STATUS_STREAMING)


@dataclass(frozen=True, kw_only=True)
class Problem:
    """Something `inspect` flags: its kind, what it concerns, and one line saying why."""

    kind: str  # "split_execution", "repeated_timestamp", "stuck_tool_call"
    execution_id: str
    message_id: str
    detail: str


def execution_of(message: chat_pb2.ChatMessage) -> str:
    """The execution a message belongs to: its own field, or what its metadata says."""
    if message.execution_id:
        return message.execution_id
    value = message.metadata.fields.get("execution_id")
    return value.string_value if value is not None else ""


def plural(count: int, noun: str) -> str:
    """`1 message`, `2 messages`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def iso_us(stamp_us: int) -> str:
    """A microsecond timestamp as ISO 8601 UTC with all six digits."""
    moment = dt.datetime.fromtimestamp(stamp_us / 1_000_000, tz=dt.UTC)
    return moment.replace(microsecond=stamp_us % 1_000_000).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def analyse(messages: Sequence[chat_pb2.ChatMessage], now_us: int) -> list[Problem]:
    """Every problem in these messages (one app's, or one execution's)."""
    problems: list[Problem] = []
    by_execution: dict[str, list[chat_pb2.ChatMessage]] = defaultdict(list)
    for message in messages:
        if message.role == chat_pb2.ROLE_ASSISTANT and execution_of(message):
            by_execution[execution_of(message)].append(message)
    for execution_id, group in by_execution.items():
        if len(group) > 1:
            ids = ", ".join(m.id for m in group)
            problems.append(
                Problem(
                    kind="split_execution",
                    execution_id=execution_id,
                    message_id=group[0].id,
                    detail=f"{len(group)} assistant messages for one execution: {ids}",
                )
            )
    for message in messages:
        problems.extend(_flow_problems(message, now_us))
    return problems


def _flow_problems(message: chat_pb2.ChatMessage, now_us: int) -> list[Problem]:
    problems = []
    execution_id = execution_of(message)
    previous: tuple[int, int] | None = None
    for item in sorted(message.flow, key=lambda i: i.seq):
        stamp = item.timestamp.ToMicroseconds()
        if previous is not None and stamp <= previous[1]:
            same = "the same timestamp as" if stamp == previous[1] else "an earlier timestamp than"
            problems.append(
                Problem(
                    kind="repeated_timestamp",
                    execution_id=execution_id,
                    message_id=message.id,
                    detail=f"seq {item.seq} has {same} seq {previous[0]} ({iso_us(stamp)})",
                )
            )
        previous = (item.seq, stamp)
        for call in item.tools.calls if item.HasField("tools") else ():
            deadline = call.deadline.ToMicroseconds() if call.HasField("deadline") else None
            if call.status in _OPEN and deadline is not None and deadline < now_us:
                status = flow_pb2.ToolStatus.Name(call.status).removeprefix("TOOL_STATUS_")
                problems.append(
                    Problem(
                        kind="stuck_tool_call",
                        execution_id=execution_id,
                        message_id=message.id,
                        detail=f"tool call {call.call_id} ({call.name}) still {status.lower()} "
                        f"{(now_us - deadline) / 1_000_000:.1f} s past its deadline",
                    )
                )
    return problems


async def load(
    chat_address: str,
    target: str,
    connect_timeout: float = CONNECT_TIMEOUT,
    tls: TlsSettings | None = None,
    credentials: Metadata | None = None,
) -> tuple[str, list[chat_pb2.ChatMessage]]:
    """(app id, messages) for an execution id (its app's messages of that execution) or
    an app id (all of them). NOT_FOUND when it is neither; `Unreachable` when chat cannot
    be connected to within `connect_timeout` seconds."""
    async with open_channel(chat_address, tls, credentials=credentials) as channel:
        await connect(channel, f"chat at {chat_address}", connect_timeout, fail_fast=True)
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        execution_id = ""
        try:
            message = await stub.GetMessageByExecution(
                chat_pb2.GetMessageByExecutionRequest(execution_id=target), timeout=_RPC_TIMEOUT
            )
            app_id, execution_id = message.app_id, target
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise
            app_id = (
                await stub.GetApp(chat_pb2.GetAppRequest(app_id=target), timeout=_RPC_TIMEOUT)
            ).id
        messages: list[chat_pb2.ChatMessage] = []
        token = ""
        while True:
            page = await stub.ListMessages(
                chat_pb2.ListMessagesRequest(app_id=app_id, page_size=500, page_token=token),
                timeout=_RPC_TIMEOUT,
            )
            messages.extend(page.messages)
            token = page.next_page_token
            if not token:
                break
    if execution_id:
        messages = [m for m in messages if execution_of(m) == execution_id]
    return app_id, messages


def report(
    app_id: str, messages: Sequence[chat_pb2.ChatMessage], problems: Sequence[Problem]
) -> dict[str, Any]:
    """The JSON form: messages as the API gives them, stamps in microseconds too."""
    rendered = []
    for message in messages:
        data = json_format.MessageToDict(message, preserving_proto_field_name=True)
        for item, source in zip(data.get("flow", []), message.flow, strict=True):
            item["timestamp_us"] = source.timestamp.ToMicroseconds()
        rendered.append(data)
    return {"app_id": app_id, "messages": rendered, "problems": [asdict(p) for p in problems]}


def render(
    console: Console,
    app_id: str,
    messages: Sequence[chat_pb2.ChatMessage],
    problems: Sequence[Problem],
) -> None:
    console.print(Text.assemble(("app ", "bold"), app_id, f"  {plural(len(messages), 'message')}"))
    for message in messages:
        role = chat_pb2.Role.Name(message.role).removeprefix("ROLE_").lower()
        status = chat_pb2.MessageStatus.Name(message.status).removeprefix("MESSAGE_STATUS_")
        head = Text.assemble(
            (f"\n{role} ", "bold"),
            message.id,
            (f"  {status.lower()}", "green" if status == "COMPLETED" else "yellow"),
        )
        if execution_of(message):
            head.append(f"  execution {execution_of(message)}", style="dim")
        console.print(head)
        if message.metadata.fields:
            metadata = json_format.MessageToDict(message.metadata)
            console.print(Text(json.dumps(metadata, sort_keys=True), style="dim"))
        if not message.flow:
            if message.role == chat_pb2.ROLE_USER:
                console.print(Text(message.content, overflow="fold"))
            continue
        table = Table(show_edge=False, pad_edge=False, box=None)
        for column in ("seq", "timestamp (UTC)", "type", "content"):
            table.add_column(column, style="dim" if column == "seq" else None)
        for item in sorted(message.flow, key=lambda i: i.seq):
            stamp = iso_us(item.timestamp.ToMicroseconds())
            if item.HasField("message"):
                table.add_row(
                    str(item.seq), stamp, "message", Text(item.message.text, overflow="fold")
                )
                continue
            calls = Text()
            for call in item.tools.calls:
                state = flow_pb2.ToolStatus.Name(call.status).removeprefix("TOOL_STATUS_")
                calls.append(f"{call.call_id} {call.name} {state.lower()}")
                if call.error:
                    calls.append(f" ({call.error})", style="red")
                calls.append("\n")
            calls.rstrip()
            table.add_row(str(item.seq), stamp, "tools", calls)
        console.print(table)
    if problems:
        console.print(f"\n[bold red]{plural(len(problems), 'problem')}[/]")
        for problem in problems:
            console.print(f"[red]✖ {problem.kind}[/] {problem.execution_id}: {problem.detail}")
    else:
        console.print(
            "\n[green]✔ no problems[/]: one message per execution, stamps strictly "
            "increasing, no tool call open past its deadline"
        )


def run(
    chat_address: str,
    target: str,
    as_json: bool,
    out: TextIO,
    err: TextIO,
    tls: TlsSettings | None = None,
    credentials: Metadata | None = None,
) -> int:
    """`appforge inspect`: print the report; the exit status."""
    try:
        app_id, messages = asyncio.run(load(chat_address, target, tls=tls, credentials=credentials))
    except Unreachable as exc:
        err.write(f"appforge inspect: {exc}\n")
        return EXIT_UNREACHABLE
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
            err.write(f"appforge inspect: no app or execution {target!r}\n")
            return EXIT_UNKNOWN
        err.write(f"appforge inspect: chat at {chat_address}: {exc.code().name}: {exc.details()}\n")
        return EXIT_UNREACHABLE
    problems = analyse(messages, time.time_ns() // 1_000)
    if as_json:
        out.write(json.dumps(report(app_id, messages, problems), indent=2) + "\n")
    else:
        render(console_for(out), app_id, messages, problems)
    return EXIT_FLAGGED if problems else EXIT_CLEAN
