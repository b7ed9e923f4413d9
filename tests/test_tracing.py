"""OpenTelemetry traces of a call (issue 17): exported over OTLP/HTTP to a receiver on loopback that
decodes the protobuf with `opentelemetry-proto`; call → turn → tool, with their attributes, and the
trace id in the call's log events. Without an endpoint: no SDK, no provider, no exporter.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import AUTH_TOKEN, capture_logs, run, running_bridge, settle
from dialect_upstream import GA_WIRE, ModelServer, ModelSession
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from test_model_telemetry import ANSWER_USAGE, GREETING_USAGE, KEY, _send, speak_with_usage, usage
from test_upstream_calls import ANSWER, ANSWER_TEXT, GREETING, GREETING_TEXT, ONE_QUESTION, QUESTION_TEXT

from bridge.devtools.phone import place_call
from bridge.tracing import NO_TRACE, Tracing

SPEED = 4.0
TOOL_USAGE = (150, 80, 100, 0, 12, 0)


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on loopback: every span it is sent, decoded from protobuf."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.resources: list[dict[str, Any]] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                receiver.paths.append(self.path)
                for resource_spans in request.resource_spans:
                    receiver.resources.append(attributes(resource_spans.resource.attributes))
                    for scope_spans in resource_spans.scope_spans:
                        receiver.spans.extend(scope_spans.spans)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def attributes(items: Any) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in items}


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as found:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", found.endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "voice-bridge-test")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        monkeypatch.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)
        monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
        yield found


async def model_with_a_tool(session: ModelSession) -> None:
    """Greeting; the caller asks; the model looks the order up, then answers."""
    await session.configure()
    await speak_with_usage(session, GREETING, GREETING_TEXT, GREETING_USAGE)
    await session.listen(QUESTION_TEXT)
    response_id, item_id, call_id = session.new_id("resp"), session.new_id("item"), "call_lookup_1"
    await _send(session, "response.created", response={"id": response_id, "object": "realtime.response", "status": "in_progress"})
    item = {"id": item_id, "type": "function_call", "call_id": call_id, "name": "lookup_order", "arguments": "", "status": "in_progress"}
    await _send(session, "response.output_item.added", response_id=response_id, output_index=0, item=item)
    await _send(
        session,
        "response.function_call_arguments.done",
        response_id=response_id,
        item_id=item_id,
        output_index=0,
        call_id=call_id,
        name="lookup_order",
        arguments=json.dumps({"order_number": "CO-12345"}),
    )
    await _send(
        session,
        "response.done",
        response={"id": response_id, "object": "realtime.response", "status": "completed", "usage": usage(*TOOL_USAGE)},
    )
    await session.expect("conversation.item.create")
    await session.expect("response.create")
    await speak_with_usage(session, ANSWER, ANSWER_TEXT, ANSWER_USAGE)


def test_a_call_is_traced_call_turn_tool_over_otlp_http(receiver: OtlpReceiver) -> None:
    async def scenario() -> tuple[Any, list[dict[str, Any]], Any]:
        async with ModelServer(GA_WIRE, [model_with_a_tool]) as server:
            with capture_logs() as logs:
                settings = {
                    "upstream": "openai",
                    "openai_api_key": KEY,
                    "upstream_url": server.url("/v1/realtime?model=gpt-realtime"),
                    "tools": ("lookup_order",),
                }
                async with running_bridge(speed=SPEED, **settings) as (url, app):
                    report = await place_call(url, ONE_QUESTION, auth_token=AUTH_TOKEN, speed=SPEED)
                    assert await settle(lambda: not app.state.bridge.active_calls)
                    assert app.state.bridge.tracing.exporter == "otlp"
            # leaving the app flushed the batch: every span is at the receiver now
        assert server.errors == []
        return report, logs, server

    report, logs, _ = run(scenario())
    assert report.ended_by == "caller"
    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    assert receiver.resources[0]["service.name"] == "voice-bridge-test"
    spans = {span.span_id: span for span in receiver.spans}
    by_name: dict[str, list[Any]] = {}
    for span in receiver.spans:
        by_name.setdefault(span.name, []).append(span)

    # The call: the root, with its SIDs, profile, upstream, audio mode and outcome.
    (call,) = by_name["call"]
    assert call.parent_span_id == b""
    call_attrs = attributes(call.attributes)
    assert call_attrs["call.sid"] == report.call_sid
    assert call_attrs["stream.sid"].startswith("MZ")
    assert (call_attrs["profile"], call_attrs["upstream"], call_attrs["audio.mode"]) == ("default", "openai", "pcm24k")
    assert call_attrs["call.outcome"] == "caller_hangup"
    assert call_attrs["responses"] == 3 and call_attrs["cost_estimate_usd"] > 0

    # The upstream connect, a child of the call.
    (connect,) = by_name["upstream.connect"]
    assert connect.parent_span_id == call.span_id and attributes(connect.attributes)["outcome"] == "ok"

    # Turns: the greeting (the model's), then the caller's question with its stages and tokens.
    turns = sorted(by_name["turn"], key=lambda s: s.start_time_unix_nano)
    assert [attributes(t.attributes)["turn.kind"] for t in turns] == ["model", "caller"]
    assert all(t.parent_span_id == call.span_id and t.trace_id == call.trace_id for t in turns)
    greeting, question = turns
    assert attributes(greeting.attributes)["gen_ai.usage.output_audio_tokens"] == GREETING_USAGE[5]
    asked = attributes(question.attributes)
    assert [e.name for e in question.events if e.name in ("model_audio", "media_sent", "heard")] == ["model_audio", "media_sent", "heard"]
    assert asked["turn.heard_ms"] >= asked["turn.media_sent_ms"] >= asked["turn.model_audio_ms"] > 0
    assert asked["gen_ai.usage.output_audio_tokens"] == ANSWER_USAGE[5]  # the tool's response had no audio
    assert asked["gen_ai.usage.input_tokens"] == sum(TOOL_USAGE[:2]) + sum(ANSWER_USAGE[:2])
    assert asked["turn.end"] == "answered" and "playback_end" in [e.name for e in question.events]
    assert all(question.start_time_unix_nano <= e.time_unix_nano for e in question.events)

    # The tool: a child of the caller's turn, named, with its outcome.
    (tool,) = by_name["tool lookup_order"]
    assert spans[tool.parent_span_id] is question
    tool_attrs = attributes(tool.attributes)
    assert tool_attrs == {"gen_ai.tool.name": "lookup_order", "gen_ai.tool.call.id": "call_lookup_1", "tool.outcome": "ok"}
    assert question.start_time_unix_nano <= tool.start_time_unix_nano <= tool.end_time_unix_nano <= question.end_time_unix_nano

    # Trace and span ids in the call's log events.
    call_events = [e for e in logs if e.get("call_sid") == report.call_sid and e["event"] in ("call.started", "call.ended", "tool.called")]
    assert len(call_events) == 3
    assert {(e["trace_id"], e["span_id"]) for e in call_events} == {(call.trace_id.hex(), call.span_id.hex())}


def test_without_an_endpoint_there_is_no_exporter_and_no_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "APPLICATIONINSIGHTS_CONNECTION_STRING"):
        monkeypatch.delenv(name, raising=False)
    off = Tracing.from_env(os.environ)
    assert (off.enabled, off.provider, off.exporter) == (False, None, "off")
    assert off.call({"call.sid": "CA1"}) is NO_TRACE and NO_TRACE.log_ids() == {}
    assert Tracing.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "true"}).enabled is False
    # In a fresh process: the app and a call's setup never import the SDK or an exporter.
    code = (
        "import os, sys\n"
        "import bridge.app, bridge.cli\n"
        "from bridge.tracing import Tracing\n"
        "tracing = Tracing.from_env(os.environ)\n"
        "assert not tracing.enabled\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "print(loaded)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "APPLICATIONINSIGHTS_CONNECTION_STRING"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_a_call_without_tracing_has_no_trace_ids_in_its_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)

    async def scenario() -> list[dict[str, Any]]:
        with capture_logs() as logs:
            async with running_bridge(speed=SPEED) as (url, app):
                await place_call(url, ONE_QUESTION, auth_token=AUTH_TOKEN, speed=SPEED)
                assert await settle(lambda: not app.state.bridge.active_calls)
                assert app.state.bridge.tracing.provider is None
        return logs

    logs = run(scenario())
    (ended,) = [e for e in logs if e["event"] == "call.ended"]
    assert "trace_id" not in ended and ended["cost_estimate_usd"] is None  # the embedded agent has no price


async def model_slow_to_answer(session: ModelSession) -> None:
    """Greeting; the caller asks; the model takes 1.6 s to start its answer (past the 1 s filler budget)."""
    await session.configure()
    await speak_with_usage(session, GREETING, GREETING_TEXT, GREETING_USAGE)
    await session.listen(QUESTION_TEXT)
    await asyncio.sleep(1.6 / SPEED)
    await speak_with_usage(session, ANSWER, ANSWER_TEXT, ANSWER_USAGE)


def test_a_filler_is_an_event_of_the_caller_s_turn(receiver: OtlpReceiver) -> None:
    async def scenario() -> Any:
        async with ModelServer(GA_WIRE, [model_slow_to_answer]) as server:
            settings = {
                "upstream": "openai",
                "openai_api_key": KEY,
                "upstream_url": server.url("/v1/realtime?model=gpt-realtime"),
                "filler_after_ms": 1000,
                "turn_timeout_s": 8,
            }
            async with running_bridge(speed=SPEED, **settings) as (url, app):
                report = await place_call(url, ONE_QUESTION, auth_token=AUTH_TOKEN, speed=SPEED)
                assert await settle(lambda: not app.state.bridge.active_calls)
        return report

    report = run(scenario())
    assert report.ended_by == "caller"
    turns = sorted((s for s in receiver.spans if s.name == "turn"), key=lambda s: s.start_time_unix_nano)
    assert [attributes(t.attributes)["turn.kind"] for t in turns] == ["model", "caller"]
    greeting, question = turns
    fillers = [e for e in question.events if e.name == "filler"]
    assert len(fillers) == 1 and attributes(fillers[0].attributes) == {"reason": "slow_model"}
    assert not [e for e in greeting.events if e.name == "filler"]
    # The filler came before the model's first audio of that turn.
    (first_audio,) = [e for e in question.events if e.name == "model_audio"]
    assert fillers[0].time_unix_nano < first_audio.time_unix_nano
