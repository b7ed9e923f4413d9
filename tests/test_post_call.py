"""The post-call record: built from the call, written next to the recording, POSTed to a receiver on
loopback with retries and an idempotency key, never holding shutdown beyond its bound."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import AUTH_TOKEN, capture_logs, run, running_bridge, settle
from dialect_upstream import ModelServer
from scripted_upstream import ScriptedSession, ScriptedUpstream
from test_model_telemetry import ALL, CASES, ONE_QUESTION, expected_cost, spending_model
from test_no_dead_air import ANSWER as SLOW_ANSWER, _caller_turn, _open

from bridge.call.transcript import HeardTurn
from bridge.cost import Price, UsageTotals
from bridge.devtools.phone import place_call
from bridge.devtools.phone.caller import CallerPlan
from bridge.post_call import PostCallDelivery, build_record, idempotency_key, usage_fields
from bridge.realtime_events import TokenUsage


class Receiver:
    """An HTTP receiver that fails its first `failures` requests (503), or never answers (`hang`), and
    processes each idempotency key once."""

    def __init__(self, failures: int = 0, hang: bool = False, status: int = 503) -> None:
        self.failures, self.hang, self.status = failures, hang, status
        self.attempts: list[str] = []
        self.processed: dict[str, dict[str, Any]] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key", "")
        self.attempts.append(key)
        if self.hang:
            await self.release.wait()  # until the test is over
        if len(self.attempts) <= self.failures:
            return web.Response(status=self.status)
        self.processed.setdefault(key, await request.json())  # a repeated key is not processed again
        return web.Response(status=201)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/calls", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/calls"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        self.release.set()
        await self._runner.cleanup()


def _record(call_sid: str = "CA1", redact: bool = False) -> dict[str, Any]:
    return build_record(
        call_sid,
        started_at=1_900_000_000.0,
        duration_s=61.5,
        outcome="caller_hangup",
        profile="default",
        turns=[HeardTurn("assistant", "Hello"), HeardTurn("user", "My PIN is 1234"), HeardTurn("assistant", "Let", True)],
        counts={"turns": 3, "barge_ins": 1, "fillers": 1, "rollovers": 2, "forced_rollovers": 0, "replacements": 0},
        usage=usage_fields(UsageTotals(), None),
        redact_transcript=redact,
    )


def test_the_record_says_what_happened_and_redacts_the_transcript_when_asked() -> None:
    record = _record()
    assert record["idempotency_key"] == idempotency_key("CA1") and record["rollovers"] == 2 and record["fillers"] == 1
    assert record["transcript"][2] == {"role": "assistant", "text": "Let", "interrupted": True}
    redacted = _record(redact=True)
    assert {t["text"] for t in redacted["transcript"]} == {"[redacted]"}
    assert "1234" not in json.dumps(redacted)


def test_tokens_and_cost_come_from_the_calls_usage_and_are_null_when_unknown() -> None:
    nothing = usage_fields(UsageTotals(Price(text_input=1.0)), "m")  # no response reported usage
    assert nothing["input_tokens"] is None and nothing["output_tokens"] is None
    assert nothing["estimated_cost_usd"] is None and nothing["price"] is None
    spent = TokenUsage(input_text=1000, input_audio=3000, cached_audio=1000, output_text=100, output_audio=500)
    unpriced = UsageTotals()
    unpriced.add(spent)
    fields = usage_fields(unpriced, None)
    assert (fields["input_tokens"], fields["cached_input_tokens"], fields["output_tokens"]) == (4000, 1000, 600)
    assert fields["estimated_cost_usd"] is None and fields["responses_with_usage"] == 1
    priced = UsageTotals(Price(text_input=4.0, audio_input=32.0, cached_audio_input=0.4, text_output=16.0, audio_output=64.0))
    priced.add(spent)
    priced.add(spent)
    fields = usage_fields(priced, "gpt-realtime")
    dollars = 2 * (1000 * 4.0 + 2000 * 32.0 + 1000 * 0.4 + 100 * 16.0 + 500 * 64.0) / 1e6
    assert fields["estimated_cost_usd"] == pytest.approx(dollars) and fields["price"] == "gpt-realtime"
    assert _record()["input_tokens"] is None and "estimated_cost_usd" in _record()


@pytest.mark.parametrize("case", ["openai", "azure-openai-unpriced"])
def test_the_record_of_a_call_carries_its_tokens_and_estimated_cost(case: str) -> None:
    wire, settings_of, price = CASES[case]

    async def scenario() -> tuple[Receiver, list[dict[str, Any]]]:
        async with Receiver() as receiver, ModelServer(wire, [spending_model]) as server:
            with capture_logs() as logs:
                async with running_bridge(speed=8.0, post_call_url=receiver.url, **settings_of(server)) as (url, app):
                    await place_call(url, ONE_QUESTION, auth_token=AUTH_TOKEN, speed=8.0)
                    assert await settle(lambda: receiver.processed, timeout=10)
        return receiver, logs

    receiver, logs = run(scenario())
    (record,) = receiver.processed.values()
    (ended,) = [e for e in logs if e["event"] == "call.ended"]
    sums = [sum(u[i] for u in ALL) for i in range(6)]  # text in, audio in, cached text, cached audio, text out, audio out
    assert record["responses_with_usage"] == 4
    assert record["fillers"] == 0  # fillers off (the default): none played
    assert record["input_tokens"] == sums[0] + sums[1] == ended["tokens_input"]
    assert record["cached_input_tokens"] == sums[2] + sums[3]
    assert record["output_tokens"] == sums[4] + sums[5] == ended["tokens_output"]
    if price is None:
        assert record["estimated_cost_usd"] is None and record["price"] is None
    else:
        assert record["estimated_cost_usd"] == pytest.approx(expected_cost(price), abs=1e-6) == ended["cost_estimate_usd"]
        assert record["price"] == "gpt-realtime"


def test_a_receiver_failing_the_first_attempts_gets_exactly_one_record_per_call() -> None:
    async def scenario() -> tuple[Receiver, PostCallDelivery]:
        async with Receiver(failures=2) as receiver:
            delivery = PostCallDelivery(receiver.url, None, backoff_s=(0.05, 0.05, 0.05))
            delivery.submit(_record("CA1"))
            assert await settle(lambda: delivery.delivered == 1, timeout=5)
            await delivery.aclose()
        return receiver, delivery

    receiver, delivery = run(scenario())
    assert receiver.attempts == [idempotency_key("CA1")] * 3  # the same key on every attempt
    assert list(receiver.processed) == [idempotency_key("CA1")] and delivery.failed == 0


def test_a_refused_record_is_not_retried() -> None:
    async def scenario() -> tuple[Receiver, PostCallDelivery]:
        async with Receiver(failures=10, status=400) as receiver:
            delivery = PostCallDelivery(receiver.url, None, backoff_s=(0.05,) * 4)
            delivery.submit(_record())
            assert await settle(lambda: delivery.failed == 1, timeout=5)
            await delivery.aclose()
        return receiver, delivery

    receiver, delivery = run(scenario())
    assert len(receiver.attempts) == 1 and receiver.processed == {}


def test_a_receiver_that_never_answers_does_not_hold_shutdown_beyond_the_bound() -> None:
    async def scenario() -> float:
        async with Receiver(hang=True) as receiver:
            delivery = PostCallDelivery(receiver.url, None)
            delivery.submit(_record())
            assert await settle(lambda: receiver.attempts, timeout=5)
            started = time.monotonic()
            await delivery.aclose(wait_s=0.3)
            return time.monotonic() - started

    assert run(scenario()) < 1.0


def test_a_whole_call_leaves_one_record_posted_and_one_next_to_its_recording(tmp_path: Path) -> None:
    async def scenario() -> tuple[Receiver, str]:
        async with Receiver(failures=1) as receiver:
            async with running_bridge(speed=4.0, post_call_url=receiver.url, record_dir=str(tmp_path)) as (url, app):
                report = await place_call(url, auth_token=AUTH_TOKEN, speed=4.0)
                assert await settle(lambda: not app.state.bridge.active_calls, timeout=5)
                assert await settle(lambda: receiver.processed, timeout=10)
        return receiver, report.call_sid

    receiver, call_sid = run(scenario())
    (record,) = receiver.processed.values()
    assert record["call_sid"] == call_sid and record["outcome"] == "caller_hangup"
    assert record["duration_s"] > 0 and any(t["role"] == "assistant" for t in record["transcript"])
    path = tmp_path / call_sid / "post_call.json"
    assert json.loads(path.read_text()) == record
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_the_record_counts_the_filler_clips_played() -> None:
    """A model slow to answer (issue 16): the filler plays once, and the record says so."""

    async def script(session: ScriptedSession) -> None:
        await _open(session)
        await asyncio.sleep(1.5)  # the greeting is heard
        await _caller_turn(session)
        await asyncio.sleep(2.5)  # slow to start: the filler after 1 s
        await session.speak("resp_answer", "item_answer", SLOW_ANSWER)
        await session.drain()

    async def scenario() -> Receiver:
        async with Receiver() as receiver, ScriptedUpstream(script) as upstream:
            settings = {"upstream_url": upstream.url, "filler_after_ms": 1000, "turn_timeout_s": 8, "post_call_url": receiver.url}
            async with running_bridge(**settings) as (url, _):
                await place_call(url, CallerPlan(hangup_after_s=2.0, max_call_s=20), auth_token=AUTH_TOKEN)
                assert await settle(lambda: receiver.processed, timeout=10)
        return receiver

    (record,) = run(scenario()).processed.values()
    assert record["fillers"] == 1
