"""Tracing's switch and its pieces: off (and not even imported) unless an OTEL_* exporter is
named; spans only inside another where asked; the W3C context in and out of metadata; the
trace and span ids of the current span for log lines."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from appforge.services.common import tracing
from appforge.services.common.errors import ConfigError


@pytest.mark.parametrize(
    ("env", "exporters"),
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ["otlp", "console"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, []),
    ],
)
def test_the_exporters_come_from_the_standard_variables(
    env: dict[str, str], exporters: list[str]
) -> None:
    assert tracing.exporters_of(env) == exporters


def test_an_unknown_exporter_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="zipkin is not one of otlp, console, none"):
        tracing.exporters_of({"OTEL_TRACES_EXPORTER": "zipkin"})


def test_off_is_free_nothing_of_opentelemetry_is_imported() -> None:
    probe = (
        "import sys\n"
        "from appforge.services.common import server, tracing\n"
        "assert tracing.configure({}, 'appforge-chat') is False\n"
        "with tracing.span('x') as s:\n"
        "    assert s is None\n"
        "assert tracing.inject() == [] and tracing.log_fields() == {}\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory (this test's provider, not the process-wide one)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing._state["tracer"] = provider.get_tracer("test")
    try:
        yield exporter
    finally:
        tracing._state.clear()


def test_a_span_within_is_made_only_inside_another(exported: InMemorySpanExporter) -> None:
    with tracing.span("idle poll", within=True) as alone:
        assert alone is None
    with tracing.span("rpc", kind="server", attributes={tracing.EXECUTION_ID: "e1", "x": ""}):
        with tracing.span("db query", kind="client", within=True):
            pass
    spans = {s.name: s for s in exported.get_finished_spans()}
    assert set(spans) == {"rpc", "db query"}
    assert spans["db query"].parent is not None
    assert spans["db query"].parent.span_id == spans["rpc"].context.span_id
    assert dict(spans["rpc"].attributes or {}) == {tracing.EXECUTION_ID: "e1"}  # "" dropped


def test_the_context_travels_in_metadata_and_names_the_log_line(
    exported: InMemorySpanExporter,
) -> None:
    with tracing.span("caller") as caller:
        metadata = tracing.inject()
        fields = tracing.log_fields()
    [(key, traceparent)] = metadata
    context = caller.get_span_context()
    assert key == "traceparent" and f"{context.trace_id:032x}" in traceparent
    assert fields == {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
    assert tracing.log_fields() == {}  # outside any span
    with tracing.span("callee", kind="server", parent=tracing.extract(metadata)):
        pass
    callee = next(s for s in exported.get_finished_spans() if s.name == "callee")
    assert callee.context.trace_id == context.trace_id
    assert callee.parent is not None and callee.parent.span_id == context.span_id
