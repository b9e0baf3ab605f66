"""What `appforge build` shows while it runs: the progress it has seen, rendered live.

A text item streams in as pieces, each at its character offset of the item's text
(flow.v1 TextPart.offset); `Progress.add` appends them, so the live view shows the text
growing. On a pipe or in a file nothing is redrawn: `PipedView` prints each item once,
whole, as soon as it is complete (a text item when a later item arrives, a tools item when
every call has ended), and the rest when the build ends, so no text is printed twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from rich.console import Console, Group, RenderableType
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
        """Merge an item: text grows by the piece at its offset, tool calls merge by call_id."""
        known = self.items.get(item.seq)
        if known is not None and item.HasField("message") and known.HasField("message"):
            known.message.text = grown(known.message.text, item.message.offset, item.message.text)
            return
        if known is None or not item.HasField("tools") or not known.HasField("tools"):
            self.items[item.seq] = copy = flow_pb2.FlowItem()
            copy.CopyFrom(item)
            if item.HasField("message"):
                copy.message.text = grown("", item.message.offset, item.message.text)
                copy.message.offset = 0
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


def grown(text: str, offset: int, piece: str) -> str:
    """`text` with `piece` written at character `offset`: a piece that ends within the text
    is a replay and changes nothing; one past the end (a piece missed) is appended."""
    if offset + len(piece) <= len(text):
        return text
    return text[: min(offset, len(text))] + piece


def _call_label(call: flow_pb2.ToolCall) -> str:
    try:
        arguments = json.loads(call.arguments_json) if call.arguments_json else {}
    except ValueError:
        arguments = {}
    path = arguments.get("path") if isinstance(arguments, dict) else None
    return f"{call.name} {path}" if isinstance(path, str) else call.name


def render(progress: Progress) -> RenderableType:
    """The live view: the flow in seq order, then the deployment."""
    parts: list[RenderableType] = [_header(progress), _flow(progress, sorted(progress.items))]
    if progress.finished is not None and progress.finished.deployment_id:
        parts.append(_deployment_line(progress.deployment))
    return Group(*parts)


def _header(progress: Progress) -> Text:
    if progress.app is None:
        return Text("starting…", style="dim")
    return Text.assemble(
        ("appforge build ", "bold"),
        progress.app.name,
        (f"  execution {progress.execution_id}" if progress.execution_id else "", "dim"),
    )


def _flow(progress: Progress, seqs: list[int]) -> Table:
    """The items of these seqs, one row per text and per tool call."""
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right", style="dim")
    table.add_column()
    for seq in seqs:
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
    return table


_ENDED = frozenset(
    {
        flow_pb2.TOOL_STATUS_SUCCEEDED,
        flow_pb2.TOOL_STATUS_FAILED,
        flow_pb2.TOOL_STATUS_TIMED_OUT,
        flow_pb2.TOOL_STATUS_CANCELLED,
    }
)


class PipedView:
    """The view on a pipe or in a file: printed as it goes, never redrawn.

    The header once the execution is known; then each item once, whole, in seq order, as
    soon as it is complete: a text item when an item after it arrives (the builder writes
    all of a text before the next item), a tools item when every call has ended. `close`
    prints whatever is left and the deployment's end.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self._header = False
        self._printed = 0  # the highest seq printed

    def update(self, progress: Progress) -> None:
        if not self._header and progress.execution_id:
            self._print_header(progress)
        if not self._header:
            return
        ready: list[int] = []
        last = max(progress.items, default=0)
        for seq in sorted(s for s in progress.items if s > self._printed):
            if not _complete(progress.items[seq], later=seq < last):
                break
            ready.append(seq)
        self._print(progress, ready)

    def close(self, progress: Progress) -> None:
        if not self._header and progress.app is not None:
            self._print_header(progress)
        self._print(progress, sorted(s for s in progress.items if s > self._printed))
        if progress.finished is not None and progress.finished.deployment_id:
            self.console.print(_deployment_line(progress.deployment))

    def _print_header(self, progress: Progress) -> None:
        self.console.print(_header(progress))
        self._header = True

    def _print(self, progress: Progress, seqs: list[int]) -> None:
        if seqs:
            self.console.print(_flow(progress, seqs))
            self._printed = seqs[-1]


def _complete(item: flow_pb2.FlowItem, *, later: bool) -> bool:
    if item.HasField("message"):
        return later
    return bool(item.tools.calls) and all(c.status in _ENDED for c in item.tools.calls)


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
