"""One trace across the three processes, with the console exporter (OTEL_TRACES_EXPORTER=console,
one JSON span per line on each process's stdout): a calculator build's trace holds spans of
chat, the builder and the deployer, their database work among them, and the same trace id is in
each service's log lines."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from typing import Any

from tests.e2e.conftest import ServiceProcess, Spawn, appforge
from tests.e2e.golden_stack import StackFactory

TRACED = {"OTEL_TRACES_EXPORTER": "console", "APPFORGE_LOG_LEVEL": "INFO"}


def spans_of(process: ServiceProcess) -> list[dict[str, Any]]:
    """The spans a process exported (its log holds stdout and stderr)."""
    return [
        json.loads(line)
        for line in process.log().splitlines()
        if line.startswith('{"name"') and '"trace_id"' in line
    ]


async def test_a_build_is_one_trace_across_chat_builder_and_deployer(
    spawn: Spawn, stacks: StackFactory
) -> None:
    chat = await spawn("chat", env=TRACED)
    deployer = await stacks.deployer(chat, port=None, **TRACED)
    builder = await spawn(
        "builder",
        env={
            **TRACED,
            "APPFORGE_CHAT_ADDR": chat.address,
            "APPFORGE_DEPLOYER_ADDR": deployer.address,
        },
    )
    built = await appforge(
        "build",
        "build a calculator",
        "--app",
        f"traced-{uuid.uuid4().hex[:8]}",
        *("--chat", chat.address, "--builder", builder.address, "--deployer", deployer.address),
        "--json",
    )
    assert built.code == 0, built.stderr
    execution_id = built.event("started")["execution_id"]
    processes = {"chat": chat, "builder": builder, "deployer": deployer}
    spans = {name: spans_of(process) for name, process in processes.items()}
    assert {
        name: {s["resource"]["attributes"]["service.name"] for s in found}
        for name, found in spans.items()
    } == {name: {f"appforge-{name}"} for name in processes}
    [execution] = [
        s
        for s in spans["builder"]
        if s["name"] == "builder execution"
        and s["attributes"].get("appforge.execution_id") == execution_id
    ]
    trace_id = execution["context"]["trace_id"]
    in_trace: dict[str, set[str]] = defaultdict(set)
    for name, found in spans.items():
        for span in found:
            if span["context"]["trace_id"] == trace_id:
                in_trace[name].add(f"{span['kind']} {span['name']}")
    assert "SpanKind.SERVER appforge.builder.v1.BuilderService/Build" in in_trace["builder"]
    assert "SpanKind.SERVER appforge.chat.v1.ChatService/UpsertAssistantMessage" in in_trace["chat"]
    assert "SpanKind.SERVER appforge.deployer.v1.DeployerService/Deploy" in in_trace["deployer"]
    for name in processes:  # each one's database work, inside the trace
        assert any(kind.startswith("SpanKind.CLIENT db ") for kind in in_trace[name]), (
            name,
            sorted(in_trace[name]),
        )
    # The execution id is on the spans that know it, in every service.
    for name in processes:
        assert any(
            s["attributes"].get("appforge.execution_id") == execution_id
            for s in spans[name]
            if s["context"]["trace_id"] == trace_id
        ), name
    # And the logs written inside those spans carry the trace id.
    bare = trace_id.removeprefix("0x")
    for name, process in processes.items():
        lines = [line for line in process.log().splitlines() if line.startswith("ts=")]
        assert any(f"trace_id={bare}" in line for line in lines), name
