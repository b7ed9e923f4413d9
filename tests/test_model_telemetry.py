"""Whole calls against a scripted model per dialect that sends usage, failed and incomplete
responses, warnings, rate limits and events the bridge does not act on: the metrics and log events
appear with the right values, and the per-call cost is the price table's arithmetic (issue 17).

The server events are built as the SDKs type them: GA events are validated with the `openai`
package's types; the Voice Live ones follow azure-ai-voicelive 1.3 (`ServerEventResponseDone` with
`TokenUsage` / `ResponseFailedDetails` / `ResponseIncompleteDetails`, `ServerEventWarning`).
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from conftest import AUTH_TOKEN, capture_logs, metrics_text, run, running_bridge, settle
from dialect_upstream import GA_WIRE, VOICELIVE_WIRE, ModelServer, ModelSession, Wire
from prometheus_client.parser import text_string_to_metric_families
from test_upstream_calls import ANSWER, ANSWER_TEXT, GA_SERVER_EVENT, GREETING, GREETING_TEXT, ONE_QUESTION, QUESTION_TEXT

from bridge.cost import PriceTable
from bridge.devtools.phone import place_call

KEY = "sk-test-key-4a7d1c9e2b8f6a3d5c0e"
SPEED = 8.0


def usage(text_in: int, audio_in: int, cached_text: int, cached_audio: int, text_out: int, audio_out: int) -> dict[str, Any]:
    return {
        "total_tokens": text_in + audio_in + text_out + audio_out,
        "input_tokens": text_in + audio_in,
        "output_tokens": text_out + audio_out,
        "input_token_details": {
            "text_tokens": text_in,
            "audio_tokens": audio_in,
            "image_tokens": 0,
            "cached_tokens": cached_text + cached_audio,
            "cached_tokens_details": {"text_tokens": cached_text, "audio_tokens": cached_audio, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }


# (text in, audio in, cached text, cached audio, text out, audio out) of each response.done
GREETING_USAGE = (120, 0, 0, 0, 30, 250)
FAILED_USAGE = (160, 90, 120, 0, 0, 0)
INCOMPLETE_USAGE = (170, 95, 128, 64, 5, 20)
ANSWER_USAGE = (180, 100, 128, 64, 40, 300)
ALL = (GREETING_USAGE, FAILED_USAGE, INCOMPLETE_USAGE, ANSWER_USAGE)
RATE_LIMITS = [
    {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
    {"name": "tokens", "limit": 40000, "remaining": 2500, "reset_seconds": 3.5},  # 6.25 % left: under 10 %
]


async def _send(session: ModelSession, kind: str, **fields: Any) -> None:
    event = {"type": kind, "event_id": session.new_id("event"), **fields}
    if session.wire.dialect == "ga" and not kind.startswith("x."):
        GA_SERVER_EVENT.validate_python(event)  # the openai SDK's own server event types
    await session.send(kind, **fields)


async def speak_with_usage(session: ModelSession, pcm: bytes, transcript: str, counts: tuple[int, ...]) -> None:
    """`ModelSession.speak`, with the response's usage in its response.done."""
    wire = session.wire
    response_id, item_id = session.new_id("resp"), session.new_id("item")
    where = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
    await _send(session, "response.created", response={"id": response_id, "object": "realtime.response", "status": "in_progress"})
    item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    await _send(session, "response.output_item.added", response_id=response_id, output_index=0, item=item)
    step = 24000 * 2 // 10
    for offset in range(0, len(pcm), step):
        await session.send(wire.audio_delta, **where, delta=base64.b64encode(pcm[offset : offset + step]).decode())
    await session.send(wire.audio_done, **where)
    await session.send(wire.transcript_done, **where, transcript=transcript)
    await _send(session, "response.output_item.done", response_id=response_id, output_index=0, item={**item, "status": "completed"})
    await _send(
        session,
        "response.done",
        response={"id": response_id, "object": "realtime.response", "status": "completed", "usage": usage(*counts)},
    )


async def unfinished(session: ModelSession, status: str, details: dict[str, Any], counts: tuple[int, ...]) -> None:
    response_id = session.new_id("resp")
    await _send(session, "response.created", response={"id": response_id, "object": "realtime.response", "status": "in_progress"})
    await _send(
        session,
        "response.done",
        response={
            "id": response_id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "usage": usage(*counts),
        },
    )


async def spending_model(session: ModelSession) -> None:
    await session.configure()
    await _send(session, "rate_limits.updated", rate_limits=RATE_LIMITS)
    await speak_with_usage(session, GREETING, GREETING_TEXT, GREETING_USAGE)
    if session.wire.dialect == "voicelive":
        await session.send("warning", warning={"message": "The voice fell back to the default", "code": "voice_fallback"})
    await session.send("x.brand_new_event", detail="a type nobody has heard of")
    await session.listen(QUESTION_TEXT)
    failed = {"type": "failed", "error": {"type": "server_error", "code": "server_error", "message": "The server had an error."}}
    await unfinished(session, "failed", failed, FAILED_USAGE)
    await unfinished(session, "incomplete", {"type": "incomplete", "reason": "max_output_tokens"}, INCOMPLETE_USAGE)
    await speak_with_usage(session, ANSWER, ANSWER_TEXT, ANSWER_USAGE)


CASES: dict[str, tuple[Wire, Any, float | None]] = {
    # name: wire, settings(server), price per 1M tokens: (text in, cached text, text out, audio in, cached audio, audio out)
    "openai": (
        GA_WIRE,
        lambda s: {"upstream": "openai", "openai_api_key": KEY, "upstream_url": s.url("/v1/realtime?model=gpt-realtime")},
        (4.0, 0.4, 16.0, 32.0, 0.4, 64.0),
    ),
    "voicelive": (
        VOICELIVE_WIRE,
        lambda s: {
            "upstream": "voicelive",
            "azure_voicelive_endpoint": s.origin,
            "azure_voicelive_model": "gpt-realtime",
            "azure_voicelive_api_key": KEY,
        },
        (5.5, 2.75, 22.0, 44.0, 2.75, 88.0),
    ),
    # A deployment name: priced through an override of the table (what VOICE_BRIDGE_PRICES does).
    "azure-openai-priced": (
        GA_WIRE,
        lambda s: {
            "upstream": "azure-openai",
            "azure_openai_endpoint": s.origin,
            "azure_openai_deployment": "rt-prod",
            "azure_openai_api_key": KEY,
            "prices": PriceTable.default().with_overrides(
                {"rt-prod": {"text_input": 1, "cached_text_input": 0.5, "text_output": 2, "audio_input": 10, "cached_audio_input": 1, "audio_output": 20}}
            ),
        },
        (1.0, 0.5, 2.0, 10.0, 1.0, 20.0),
    ),
    "azure-openai-unpriced": (
        GA_WIRE,
        lambda s: {
            "upstream": "azure-openai",
            "azure_openai_endpoint": s.origin,
            "azure_openai_deployment": "rt-prod",
            "azure_openai_api_key": KEY,
        },
        None,
    ),
}


def expected_cost(price: tuple[float, ...]) -> float:
    p_text, p_cached_text, p_text_out, p_audio, p_cached_audio, p_audio_out = price
    dollars = 0.0
    for text_in, audio_in, cached_text, cached_audio, text_out, audio_out in ALL:
        dollars += (text_in - cached_text) * p_text + cached_text * p_cached_text + text_out * p_text_out
        dollars += (audio_in - cached_audio) * p_audio + cached_audio * p_cached_audio + audio_out * p_audio_out
    return dollars / 1_000_000


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str, /, **labels: str) -> float | None:
    return found.get((metric, tuple(sorted(labels.items()))))


@pytest.mark.parametrize("case", list(CASES))
def test_usage_failures_warnings_and_rate_limits_of_a_call(case: str) -> None:
    wire, settings_of, price = CASES[case]

    async def scenario() -> tuple[Any, ModelServer, list[dict[str, Any]], str]:
        async with ModelServer(wire, [spending_model]) as server:
            with capture_logs() as logs:
                async with running_bridge(speed=SPEED, **settings_of(server)) as (url, app):
                    report = await place_call(url, ONE_QUESTION, auth_token=AUTH_TOKEN, speed=SPEED)
                    assert await settle(lambda: not app.state.bridge.active_calls)
                    text = await metrics_text(url)
        return report, server, logs, text

    report, server, logs, text = run(scenario())
    assert server.errors == []
    assert report.ended_by == "caller"
    found = samples(text)

    # Tokens by direction and modality, summed over the call's four responses.
    sums = [sum(u[i] for u in ALL) for i in range(6)]
    text_in, audio_in, cached_text, cached_audio, text_out, audio_out = sums
    for direction, modality, n in [
        ("input", "text", text_in - cached_text),
        ("input", "audio", audio_in - cached_audio),
        ("cached_input", "text", cached_text),
        ("cached_input", "audio", cached_audio),
        ("output", "text", text_out),
        ("output", "audio", audio_out),
    ]:
        labels = {"profile": "default", "direction": direction, "modality": modality}
        assert value(found, "voice_bridge_tokens_total", **labels) == n, (direction, modality)

    # Responses by status; failed and incomplete ones counted by reason, logged with the error.
    assert value(found, "voice_bridge_responses_total", status="completed") == 2
    assert value(found, "voice_bridge_responses_total", status="failed") == 1
    assert value(found, "voice_bridge_responses_total", status="incomplete") == 1
    assert value(found, "voice_bridge_response_failures_total", status="failed", reason="server_error") == 1
    assert value(found, "voice_bridge_response_failures_total", status="incomplete", reason="max_output_tokens") == 1
    failures = [e for e in logs if e["event"] == "model.response_failed"]
    assert [(e["log_level"], e["status"], e["code"], e["error_type"], e["reason"]) for e in failures] == [
        ("warning", "failed", "server_error", "server_error", None),
        ("warning", "incomplete", None, None, "max_output_tokens"),
    ]
    assert failures[0]["message"] == "The server had an error." and failures[0]["call_sid"] == report.call_sid

    # Voice Live's warning: logged and counted (its code is not a known one: `other`).
    warnings = [e for e in logs if e["event"] == "upstream.warning"]
    if wire.dialect == "voicelive":
        assert [(w["code"], w["message"]) for w in warnings] == [("voice_fallback", "The voice fell back to the default")]
        assert value(found, "voice_bridge_upstream_warnings_total", code="other") == 1
    else:
        assert warnings == []

    # Events not acted on: counted by type, an unknown type as `other`.
    assert value(found, "voice_bridge_upstream_ignored_events_total", event_type="response.output_item.done") == 2
    assert value(found, "voice_bridge_upstream_ignored_events_total", event_type="other") == 1
    assert value(found, "voice_bridge_upstream_ignored_events_total", event_type="input_audio_buffer.committed") == 1

    # Rate limits: gauges per name, and a warning for the one under 10 %.
    assert value(found, "voice_bridge_upstream_rate_limit_remaining", name="tokens") == 2500
    assert value(found, "voice_bridge_upstream_rate_limit_limit", name="tokens") == 40000
    assert value(found, "voice_bridge_upstream_rate_limit_reset_seconds", name="tokens") == 3.5
    assert value(found, "voice_bridge_upstream_rate_limit_remaining", name="requests") == 4999
    assert value(found, "voice_bridge_upstream_rate_limit_low_total", name="tokens") == 1
    assert value(found, "voice_bridge_upstream_rate_limit_low_total", name="requests") is None
    (low,) = [e for e in logs if e["event"] == "upstream.rate_limit_low"]
    assert (low["name"], low["remaining"], low["limit"], low["warn_percent"]) == ("tokens", 2500, 40000, 10)

    # call.ended: the call's tokens and its estimated cost, by the price table's arithmetic.
    (ended,) = [e for e in logs if e["event"] == "call.ended"]
    assert ended["responses"] == 4
    assert ended["tokens_input"] == text_in + audio_in and ended["tokens_output"] == text_out + audio_out
    assert ended["tokens_cached_input"] == cached_text + cached_audio
    assert ended["response_failures"] == 2
    if price is None:
        assert ended["cost_estimate_usd"] is None and ended["price"] is None
        assert value(found, "voice_bridge_call_cost_estimate_dollars_count", profile="default") is None
    else:
        cost = expected_cost(price)
        assert ended["cost_estimate_usd"] == pytest.approx(cost, abs=1e-6)
        assert value(found, "voice_bridge_call_cost_estimate_dollars_count", profile="default") == 1
        assert value(found, "voice_bridge_call_cost_estimate_dollars_sum", profile="default") == pytest.approx(cost)
