"""What `appforge build` shows while it runs: the progress it has seen, rendered live."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from appforge.api.builder.v1 import builder_pb2
from appforge.api.chat.v1 import chat_pb2
from appforge.api.deployer.v1 import deployer_pb2
from appforge.api.flow.v1 import flow_pb2

_TOOL_STYLE = {
    flow_pb2.TOOL_STATUS_PENDING: ("·", "dim", "pending"),
    flow_pb2.TOOL_STATUS_STREAMING: ("…", "yellow", "running"),
    flow_pb2.TOOL_STATUS_SUCCEEDED: ("✔", "green", "succeeded"),
    flow_pb2.TOOL_STATUS_FAILED: ("✖", "red", "failed"),
    flow_pb2.TOOL_STATUS_TIMED_OUT: ("⏱", "red", "timed out"),
    flow_pb2.TOOL_STATUS_CANCELLED: ("⊘", "red", "cancelled"),
}


@dataclass(kw_only=True)
class Progress:
    """What the build has shown so far: the state the view renders and the summary uses."""

    app: chat_pb2.App | None = None
    execution_id: str = ""
    items: dict[int, flow_pb2.FlowItem] = field(default_factory=dict)
    finished: builder_pb2.BuildFinished | None = None
    deployment: deployer_pb2.Deployment | None = None
    calling: str = ""  # the service being talked to, for error messages
    started_at: float = field(default_factory=time.monotonic)

    def add(self, item: flow_pb2.FlowItem) -> None:
        """Merge an item: text replaces, tool calls merge by call_id."""
        known = self.items.get(item.seq)
        if known is None or not item.HasField("tools") or not known.HasField("tools"):
            self.items[item.seq] = item
            return
        calls = {c.call_id: c for c in known.tools.calls}
        for call in item.tools.calls:
            merged = flow_pb2.ToolCall()
            if call.call_id in calls:
                merged.CopyFrom(calls[call.call_id])
            merged.MergeFrom(call)
            calls[call.call_id] = merged
        known.tools.ClearField("calls")
        known.tools.calls.extend(calls.values())

    @property
    def calls(self) -> list[flow_pb2.ToolCall]:
        return [
            c for item in self.items.values() if item.HasField("tools") for c in item.tools.calls
        ]

    def summary(self) -> str:
        seconds = time.monotonic() - self.started_at
        attempts = len(self.deployment.attempts) if self.deployment else 0
        return (
            f"{len(self.items)} flow items, {len(self.calls)} tool calls, "
            f"{attempts} deployment attempt{'s' if attempts != 1 else ''}, {seconds:.1f} s"
        )


def _call_label(call: flow_pb2.ToolCall) -> str:
    try:
        arguments = json.loads(call.arguments_json) if call.arguments_json else {}
    except ValueError:
        arguments = {}
    path = arguments.get("path") if isinstance(arguments, dict) else None
    return f"{call.name} {path}" if isinstance(path, str) else call.name


def render(progress: Progress) -> RenderableType:
    """The live view: the flow in seq order, then the deployment."""
    header = Text("starting…", style="dim")
    if progress.app is not None:
        header = Text.assemble(
            ("appforge build ", "bold"),
            progress.app.name,
            (f"  execution {progress.execution_id}" if progress.execution_id else "", "dim"),
        )
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right", style="dim")
    table.add_column()
    for seq in sorted(progress.items):
        item = progress.items[seq]
        if item.HasField("message"):
            table.add_row(str(seq), Text(item.message.text, overflow="fold"))
            continue
        for n, call in enumerate(item.tools.calls):
            mark, style, word = _TOOL_STYLE.get(call.status, ("?", "dim", "unknown"))
            line = Text.assemble((f"{mark} ", style), _call_label(call), (f"  {word}", style))
            if call.error:
                line.append(f": {call.error}", style="red")
            table.add_row(str(seq) if n == 0 else "", line)
    parts: list[RenderableType] = [header, table]
    if progress.finished is not None and progress.finished.deployment_id:
        parts.append(_deployment_line(progress.deployment))
    return Group(*parts)


def _deployment_line(deployment: deployer_pb2.Deployment | None) -> Text:
    if deployment is None:
        return Text("deploy  queued", style="yellow")
    status = deployer_pb2.DeploymentStatus.Name(deployment.status).removeprefix(
        "DEPLOYMENT_STATUS_"
    )
    line = Text(f"deploy  {status.lower().replace('_', ' ')}", style="bold")
    for attempt in deployment.attempts:
        outcome = deployer_pb2.AttemptOutcome.Name(attempt.outcome).removeprefix("ATTEMPT_OUTCOME_")
        line.append(f"  #{attempt.number} {outcome.lower() or 'running'}")
        if attempt.error:
            line.append(f" ({attempt.error})", style="red")
    return line
