"""OpenTelemetry traces of calls: a span per call, a child span per turn, tool calls as children of
their turn, upstream connects; off, and free, unless configured.

Configured with the standard `OTEL_*` variables: tracing is on when `OTEL_EXPORTER_OTLP_ENDPOINT`
(or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set — spans go over OTLP/HTTP (protobuf) through the
SDK's batch processor, which reads `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_*` itself — or when `APPLICATIONINSIGHTS_CONNECTION_STRING`
is set and the optional Azure Monitor distribution is installed (`pip install
'voice-bridge[azure-monitor]'`). `OTEL_SDK_DISABLED=true` turns both off. Otherwise no SDK is
imported, no provider or exporter is made, and every call gets `NoTrace`, whose methods do nothing.

The hooks are called at turn granularity (a few per turn), never per audio frame.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from .logs import get_logger

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = get_logger("bridge.tracing")

TRACER_NAME = "voice_bridge"
DEFAULT_SERVICE_NAME = "voice-bridge"
_NS = 1_000_000_000


def _on(env: Mapping[str, str], name: str) -> bool:
    return bool((env.get(name) or "").strip())


class Tracing:
    """The process's tracer, or none: made once at start (`from_env`), shut down (flushed) at exit."""

    def __init__(self, tracer: Tracer | None = None, provider: TracerProvider | None = None, exporter: str = "off") -> None:
        self.tracer = tracer
        self.provider = provider
        self.exporter = exporter  # "off", "otlp", "azure_monitor": for the start-up log line

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Tracing:
        if (env.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true":
            return cls()
        if _on(env, "APPLICATIONINSIGHTS_CONNECTION_STRING"):
            tracing = cls._azure_monitor(env)
            if tracing is not None:
                return tracing
        if _on(env, "OTEL_EXPORTER_OTLP_ENDPOINT") or _on(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            return cls._otlp(env)
        return cls()

    @classmethod
    def _otlp(cls, env: Mapping[str, str]) -> Tracing:
        # Imported only when on: with tracing off the SDK and the exporter are never loaded.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        # Resource.create reads OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES; the exporter reads the
        # OTEL_EXPORTER_OTLP_* endpoint, headers, timeout and compression from the environment.
        resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return cls(provider.get_tracer(TRACER_NAME), provider, "otlp")

    @classmethod
    def _azure_monitor(cls, env: Mapping[str, str]) -> Tracing | None:
        try:
            from azure.monitor.opentelemetry import configure_azure_monitor
        except ImportError:
            log.warning(
                "tracing.azure_monitor_missing",
                note="APPLICATIONINSIGHTS_CONNECTION_STRING is set but azure-monitor-opentelemetry is not installed "
                "(pip install 'voice-bridge[azure-monitor]'); Azure Monitor gets no traces",
            )
            return None
        from opentelemetry import trace

        # The distribution installs the global providers (traces, metrics, logs) and reads the
        # connection string and OTEL_* variables itself.
        configure_azure_monitor(connection_string=env["APPLICATIONINSIGHTS_CONNECTION_STRING"].strip())
        return cls(trace.get_tracer(TRACER_NAME), None, "azure_monitor")

    def call(self, attributes: Mapping[str, str | int | float | bool], start_ns: int | None = None) -> NoTrace:
        """The trace of one call: a `CallTrace` when on, else the shared do-nothing `NO_TRACE`."""
        if self.tracer is None:
            return NO_TRACE
        return CallTrace(self.tracer, attributes, start_ns)

    def shutdown(self) -> None:
        """Flush what is batched and stop the exporter (bounded by the SDK's export timeout)."""
        if self.provider is not None:
            self.provider.shutdown()


class NoTrace:
    """A call's trace hooks, doing nothing: what every call gets while tracing is off."""

    def log_ids(self) -> dict[str, str]:
        """`trace_id` and `span_id` of the call's span for its log events ({} when off)."""
        return {}

    def connected(self, started_ns: int, reconnect: bool, outcome: str) -> None:
        """An upstream (re)connect that began at `started_ns` and ended now."""

    @contextlib.asynccontextmanager
    async def connecting(self, reconnect: bool) -> AsyncIterator[None]:
        """Around an upstream (re)connect: a span with its outcome (the exception's name when it failed)."""
        started_ns = time.time_ns()
        try:
            yield
        except Exception as exc:
            self.connected(started_ns, reconnect, type(exc).__name__)
            raise
        self.connected(started_ns, reconnect, "ok")

    def turn_started(self, kind: str) -> None:
        """A turn begins: the caller stopped speaking (`caller`), or the model starts unasked (`model`)."""

    def response_started(self) -> None:
        """A model response began (opens a `model` turn when none is open)."""

    def turn_stages(self, stages: Mapping[str, float]) -> None:
        """The turn's answer was first heard: its stages, in seconds after the caller stopped speaking."""

    def turn_event(self, name: str, attributes: Mapping[str, str | int | float | bool] | None = None) -> None:
        """Something happened in the current turn (e.g. a filler, a reprompt)."""

    def response_finished(self, status: str, counts: Mapping[tuple[str, str], int] | None) -> None:
        """A response ended: its status, and its token counts added to the turn's."""

    def tool_started(self, call_id: str, name: str) -> None:
        """A tool call began, as a child of the current turn."""

    def tool_finished(self, call_id: str, outcome: str) -> None:
        """The tool call ended with `outcome`."""

    def barge_in(self, truncated_ms: int | None, cancelled: bool, deleted: int) -> None:
        """The caller spoke over the answer: the turn ends interrupted."""

    def playback_idle(self, response_active: bool) -> None:
        """Twilio has played everything sent: the turn ends once its answer was heard and nothing is pending."""

    def end(self, outcome: str, attributes: Mapping[str, str | int | float | bool | None]) -> None:
        """The call ended: open spans are closed and the call span gets its outcome and totals."""


NO_TRACE = NoTrace()


class CallTrace(NoTrace):
    """The spans of one call; one object per call, used from the call's event loop only."""

    def __init__(self, tracer: Tracer, attributes: Mapping[str, Any], start_ns: int | None = None) -> None:
        from opentelemetry import trace

        self._trace = trace
        self._tracer = tracer
        self._call = tracer.start_span("call", attributes=dict(attributes), start_time=start_ns, kind=trace.SpanKind.SERVER)
        self._call_context = trace.set_span_in_context(self._call)
        self._turn: Span | None = None
        self._turn_kind = ""
        self._turn_started_ns = 0
        self._turn_heard = False
        self._turn_tokens: dict[str, int] = {}
        self._turns = 0
        self._tools: dict[str, Span] = {}

    def log_ids(self) -> dict[str, str]:
        context = self._call.get_span_context()
        return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}

    def connected(self, started_ns: int, reconnect: bool, outcome: str) -> None:
        name = "upstream.reconnect" if reconnect else "upstream.connect"
        span = self._tracer.start_span(
            name, context=self._call_context, start_time=started_ns, attributes={"outcome": outcome}, kind=self._client
        )
        if outcome != "ok":
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, outcome))
        span.end()

    @property
    def _client(self) -> Any:
        return self._trace.SpanKind.CLIENT

    def turn_started(self, kind: str) -> None:
        self._end_turn("next_turn")
        self._turns += 1
        self._turn_kind = kind
        self._turn_started_ns = time.time_ns()
        self._turn_heard = False
        self._turn_tokens = {}
        self._turn = self._tracer.start_span(
            "turn",
            context=self._call_context,
            start_time=self._turn_started_ns,
            attributes={"turn.index": self._turns, "turn.kind": kind},
        )

    def response_started(self) -> None:
        if self._turn is None:
            self.turn_started("model")

    def turn_stages(self, stages: Mapping[str, float]) -> None:
        if self._turn is None:
            return
        for stage, seconds in stages.items():
            self._turn.add_event(stage, timestamp=self._turn_started_ns + int(seconds * _NS))
            self._turn.set_attribute(f"turn.{stage}_ms", round(seconds * 1000, 1))
        self._turn_heard = True

    def turn_event(self, name: str, attributes: Mapping[str, str | int | float | bool] | None = None) -> None:
        if self._turn is not None:
            self._turn.add_event(name, attributes=dict(attributes or {}))

    def response_finished(self, status: str, counts: Mapping[tuple[str, str], int] | None) -> None:
        if self._turn is None:
            return
        self._turn.add_event("response.done", attributes={"status": status})
        if status != "completed":
            self._turn.set_attribute("turn.response_status", status)
        if counts:
            tokens = self._turn_tokens
            for (direction, modality), n in counts.items():
                key = f"gen_ai.usage.{direction}_{modality}_tokens"
                tokens[key] = tokens.get(key, 0) + n
            inputs = sum(n for (d, _), n in counts.items() if d != "output")
            outputs = sum(n for (d, _), n in counts.items() if d == "output")
            tokens["gen_ai.usage.input_tokens"] = tokens.get("gen_ai.usage.input_tokens", 0) + inputs
            tokens["gen_ai.usage.output_tokens"] = tokens.get("gen_ai.usage.output_tokens", 0) + outputs
            self._turn.set_attributes(dict(tokens))

    def tool_started(self, call_id: str, name: str) -> None:
        context = self._trace.set_span_in_context(self._turn) if self._turn is not None else self._call_context
        self._tools[call_id] = self._tracer.start_span(
            f"tool {name}", context=context, attributes={"gen_ai.tool.name": name, "gen_ai.tool.call.id": call_id}
        )

    def tool_finished(self, call_id: str, outcome: str) -> None:
        span = self._tools.pop(call_id, None)
        if span is None:
            return
        span.set_attribute("tool.outcome", outcome)
        if outcome != "ok":
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, outcome))
        span.end()

    def barge_in(self, truncated_ms: int | None, cancelled: bool, deleted: int) -> None:
        if self._turn is None:
            return
        self._turn.add_event("barge_in", attributes={"cancelled": cancelled, "deleted_items": deleted})
        if truncated_ms is not None:
            self._turn.add_event("truncate", attributes={"audio_end_ms": truncated_ms})
        self._end_turn("barge_in")

    def playback_idle(self, response_active: bool) -> None:
        heard = self._turn_heard or self._turn_kind == "model"  # a model turn (greeting) has no caller stages
        if self._turn is not None and heard and not response_active and not self._tools:
            self._turn.add_event("playback_end")
            self._end_turn("answered")

    def _end_turn(self, how: str) -> None:
        if self._turn is None:
            return
        self._turn.set_attribute("turn.end", how)
        self._turn.end()
        self._turn = None

    def end(self, outcome: str, attributes: Mapping[str, str | int | float | bool | None]) -> None:
        for call_id in list(self._tools):
            self.tool_finished(call_id, "call_ended")
        self._end_turn("call_ended")
        self._call.set_attributes({k: v for k, v in attributes.items() if v is not None})
        self._call.set_attribute("call.outcome", outcome)
        self._call.set_attribute("call.turns", self._turns)
        self._call.end()
