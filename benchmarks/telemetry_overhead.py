"""What the issue-17 telemetry costs on a call's hot path, tracing off and on (a focused micro-benchmark).

    .venv/bin/python benchmarks/telemetry_overhead.py

Per call the bridge handles, per 20 ms of audio each way, a Twilio media frame, a model audio delta
(and the transcript deltas the model streams with it) and a mark echo. The telemetry adds, per
mark echo, one `trace.playback_idle` hook when nothing is left playing; per event the bridge does
not act on (transcript deltas...), a counter increment; per response, its usage parsed and counted;
per turn, a few span operations when tracing is on. This measures each of those in µs per
operation (best of 5 runs), tracing off (`NoTrace`) and on (the SDK's TracerProvider with a batch
processor and the OTLP/HTTP exporter pointed at a closed loopback port: spans are made, batched
and dropped, as when a collector is down), next to what the hot path already costs per frame
(parsing an audio delta).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.dialects import GADialect, parse_server_frame  # noqa: E402
from bridge.logs import get_logger  # noqa: E402
from bridge.model_usage import ModelUsage, UsagePolicy  # noqa: E402
from bridge.realtime_events import Ignored, ResponseFinished  # noqa: E402
from bridge.telemetry import Metrics  # noqa: E402
from bridge.tracing import NO_TRACE, NoTrace, Tracing  # noqa: E402

USAGE = {
    "input_tokens": 800,
    "output_tokens": 500,
    "input_token_details": {"text_tokens": 300, "audio_tokens": 500, "cached_tokens": 250,
                            "cached_tokens_details": {"text_tokens": 200, "audio_tokens": 50}},
    "output_token_details": {"text_tokens": 100, "audio_tokens": 400},
}


def best_us(fn: Callable[[], None], n: int) -> float:
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - started) / n * 1e6)
    return min(runs)


def turn(trace: NoTrace, usage_event: ResponseFinished, model_usage: ModelUsage) -> Callable[[], None]:
    stages = {"model_audio": 0.4, "media_sent": 0.41, "heard": 0.5}

    def one() -> None:
        trace.turn_started("caller")
        trace.response_started()
        trace.turn_stages(stages)
        model_usage.response_finished(usage_event)
        trace.playback_idle(response_active=False)

    return one


def main() -> None:
    dialect = GADialect()
    delta = json.dumps({"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": "item_1",
                        "output_index": 0, "content_index": 0, "delta": base64.b64encode(bytes(4800)).decode()})
    done_plain = json.dumps({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})
    done_usage = json.dumps({"type": "response.done", "response": {"id": "resp_1", "status": "completed", "usage": USAGE}})
    metrics = Metrics()
    log = get_logger("bench")
    usage_event = parse_server_frame(dialect, done_usage)
    assert isinstance(usage_event, ResponseFinished)

    rows: list[tuple[str, float, float | None]] = []
    for name, frame in (
        ("hot path today: parse one 100 ms audio delta", delta),
        ("parse response.done without usage", done_plain),
        ("parse response.done with usage", done_usage),
    ):
        rows.append((name, best_us(lambda frame=frame: parse_server_frame(dialect, frame), 20000), None))

    off_usage = ModelUsage(metrics, log, UsagePolicy(), NO_TRACE)
    ignored = Ignored("response.output_audio_transcript.delta")
    rows.append(("ignored event counted (per transcript delta)", best_us(lambda: off_usage.note(ignored), 100000), None))

    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens: exports fail, spans are dropped
    os.environ["OTEL_BSP_MAX_QUEUE_SIZE"] = "2048"
    on = Tracing.from_env(os.environ)
    assert on.enabled
    attributes = {"call.sid": "CA1", "stream.sid": "MZ1", "profile": "default", "upstream": "openai", "audio.mode": "pcm24k"}
    on_trace = on.call(attributes)
    on_usage = ModelUsage(metrics, log, UsagePolicy(), on_trace)

    idle_off = best_us(lambda: NO_TRACE.playback_idle(response_active=True), 200000)
    idle_on = best_us(lambda: on_trace.playback_idle(response_active=True), 200000)
    rows.append(("playback_idle hook (per last mark echo)", idle_off, idle_on))
    rows.append(("one turn: 3 stages, response usage, spans", best_us(turn(NO_TRACE, usage_event, off_usage), 5000),
                 best_us(turn(on_trace, usage_event, on_usage), 5000)))
    calls_on = best_us(lambda: on.call({"call.sid": "CA1"}).end("caller_hangup", {}), 5000)
    calls_off = best_us(lambda: Tracing().call({"call.sid": "CA1"}).end("x", {}), 5000)
    rows.append(("one call span (start + end)", calls_off, calls_on))
    on.provider.shutdown() if on.provider is not None else None

    print(f"{'operation':52s} {'tracing off µs':>15s} {'tracing on µs':>14s}")
    for name, off, on_us in rows:
        print(f"{name:52s} {off:15.2f} {'' if on_us is None else f'{on_us:14.2f}'}")


if __name__ == "__main__":
    main()
