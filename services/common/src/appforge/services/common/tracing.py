"""Traces with OpenTelemetry: one trace across chat, builder and deployer.

Configured by the standard variables: `OTEL_TRACES_EXPORTER` (`otlp`, `console`, `none`, or
a comma list), `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (and the
other `OTEL_EXPORTER_OTLP_*` the exporter reads), `OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SDK_DISABLED`. With none of the exporter variables set
tracing is off, and free: the SDK is not imported, `span()` is a no-op, no interceptor is
added.

When on, every RPC a server takes is a SERVER span whose parent is the caller's (W3C trace
context from the `traceparent` metadata), every call a channel of ours makes carries the
current context (and a unary call is a CLIENT span), database work is a span per store
operation (`db.translate_errors`), Redis publishes and subscriptions are spans, and the
execution id is the attribute `appforge.execution_id` wherever one is known. Every log line
written inside a span carries `trace_id` and `span_id`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

_state: dict[str, Any] = {}  # "tracer", "provider": set by `configure` when tracing is on

EXECUTION_ID = "appforge.execution_id"
_EXPORTERS = ("otlp", "console", "none")


def exporters_of(env: Mapping[str, str]) -> list[str]:
    """The exporters `env` asks for ([] when tracing is off)."""
    if (env.get("OTEL_SDK_DISABLED") or "").lower() == "true":
        return []
    named = [e.strip().lower() for e in (env.get("OTEL_TRACES_EXPORTER") or "").split(",")]
    named = [e for e in named if e]
    if not named and (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        named = ["otlp"]
    unknown = [e for e in named if e not in _EXPORTERS]
    if unknown:
        from appforge.services.common.errors import ConfigError

        raise ConfigError(
            f"OTEL_TRACES_EXPORTER: {', '.join(unknown)} is not one of {', '.join(_EXPORTERS)}"
        )
    return [e for e in named if e != "none"]


def configure(env: Mapping[str, str], service_name: str) -> bool:
    """Turn tracing on when `env` asks for it; whether it is on. `service_name` is the
    default of `OTEL_SERVICE_NAME`."""
    exporters = exporters_of(env)
    if not exporters:
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    attributes = {} if env.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in exporters:
        if name == "console":  # one JSON object per line, on stdout
            console = ConsoleSpanExporter(formatter=lambda span: span.to_json(indent=None) + "\n")
            provider.add_span_processor(SimpleSpanProcessor(console))
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _state["provider"] = provider
    _state["tracer"] = trace.get_tracer("appforge")
    return True


def enabled() -> bool:
    return "tracer" in _state


def shutdown() -> None:
    """Export what is pending (at exit)."""
    provider = _state.get("provider")
    if provider is not None:
        provider.shutdown()


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: str = "internal",
    parent: Any = None,
    within: bool = False,
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> Iterator[Any]:
    """A span around the block (None when tracing is off); `kind` is `internal`,
    `server`, `client` or `producer`; `parent` a context from `extract`. `within`: only
    inside another span (a query of an RPC, not each idle poll of a worker)."""
    tracer = _state.get("tracer")
    if tracer is None:
        yield None
        return
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    if within and not trace.get_current_span().get_span_context().is_valid:
        yield None
        return

    with tracer.start_as_current_span(
        name,
        context=parent,
        kind=SpanKind[kind.upper()],
        attributes={k: v for k, v in (attributes or {}).items() if v not in ("", None)},
    ) as current:
        yield current


def set_attribute(key: str, value: str | int | float | bool) -> None:
    """On the current span, if any."""
    if "tracer" not in _state or value in ("", None):
        return
    from opentelemetry import trace

    trace.get_current_span().set_attribute(key, value)


def extract(metadata: Iterable[tuple[str, str | bytes]] | None) -> Any:
    """The caller's trace context from a call's metadata (`traceparent`, `tracestate`)."""
    from opentelemetry.propagate import extract as from_carrier

    carrier = {
        key: value.decode(errors="replace") if isinstance(value, bytes) else value
        for key, value in metadata or ()
        if key in ("traceparent", "tracestate")
    }
    return from_carrier(carrier)


def inject() -> list[tuple[str, str]]:
    """The current trace context as metadata entries ([] when tracing is off)."""
    if "tracer" not in _state:
        return []
    from opentelemetry.propagate import inject as into_carrier

    carrier: dict[str, str] = {}
    into_carrier(carrier)
    return list(carrier.items())


def log_fields() -> dict[str, str]:
    """`trace_id` and `span_id` of the current span, for a log line ({} outside one)."""
    if "tracer" not in _state:
        return {}
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
