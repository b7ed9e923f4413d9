"""Pre-warm: how much opening the upstream at `POST /voice` takes off the time to the first greeting audio.

    .venv/bin/python benchmarks/prewarm.py

Two bridges run side by side in one process (uvicorn on loopback, signatures on), one with
pre-warm (the default) and one with `Settings(prewarm=False)`, both pointed at one scripted GA
Realtime model on loopback that

- holds every WebSocket upgrade for `handshake_ms` before accepting it (websockets'
  `process_request` sleeps: what TLS, the service's front door and its session setup cost), and
- starts the greeting's audio `model_first_audio_ms` after it gets `response.create` (the model
  thinking), then streams 1 s of the real greeting (fixtures/audio, 24 kHz PCM16).

A Twilio stand-in places each call as Twilio does: the signed webhook, then `twilio_gap_ms` later
(Twilio reading the TwiML and connecting to us) the signed WebSocket, `connected`, `start`, and
20 ms frames of silence in real time until the first `media` comes back, then `stop`. Times are
taken on the phone's side with `time.monotonic()`:

- open→audio: from opening the stream to the first agent audio arriving at the phone (Twilio
  plays it at once: nothing is queued before it);
- webhook→audio: from sending `POST /voice` to the same moment: the silence the caller hears
  after the call is answered.

Calls run one at a time, alternating pre-warm on and off, `--calls` of each per setting; the
table gives mean / p50 / p95 in ms (p95 of 10 samples is close to the maximum) and the saving
(off minus on, of the means). Then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import secrets
import statistics
import sys
import time
import urllib.parse
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from machine import cpu_model
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection

from bridge import media_streams as ms
from bridge.devtools.fake_realtime import FakeRealtime, FakeSession
from bridge.devtools.local_bridge import served_bridge
from bridge.devtools.phone.simulator import parse_stream_twiml
from bridge.logs import configure_logging
from bridge.settings import Settings
from twiml.signatures import SIGNATURE_HEADER, TwilioSigner

AUDIO = Path(__file__).resolve().parent.parent / "fixtures" / "audio"
AUTH_TOKEN = "benchmark-auth-token-0123456789abcdef"
SILENCE = b"\xff" * 160  # 20 ms of μ-law silence
GREETING_S = 1.0  # of the greeting streamed per call: only its first audio is measured


def greeting_pcm() -> bytes:
    with wave.open(str(AUDIO / "agent_greeting.wav"), "rb") as wav:
        assert wav.getframerate() == 24000 and wav.getsampwidth() == 2
        return wav.readframes(int(24000 * GREETING_S))


class ScriptedModel:
    """A GA Realtime model with a slow handshake and a thinking delay before the greeting (a script on
    the shared fake Realtime server, bridge/devtools/fake_realtime.py)."""

    def __init__(self, first_audio_ms: float) -> None:
        self.first_audio_s = first_audio_ms / 1000
        self.audio = greeting_pcm()
        self.url = ""
        self.sessions = 0
        self._fake = FakeRealtime(self._session)

    @property
    def handshake_ms(self) -> float:
        """How long every WebSocket upgrade is held before it is accepted."""
        return self._fake.handshake_delay_s * 1000

    @handshake_ms.setter
    def handshake_ms(self, ms: float) -> None:
        self._fake.handshake_delay_s = ms / 1000

    async def __aenter__(self) -> ScriptedModel:
        await self._fake.start()
        self.url = f"ws://127.0.0.1:{self._fake.port}/v1/realtime?model=gpt-realtime"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._fake.aclose()

    async def _send(self, ws: ServerConnection, kind: str, **fields: Any) -> None:
        await ws.send(json.dumps({"type": kind, "event_id": "event_" + secrets.token_hex(4), **fields}))

    async def _session(self, session: FakeSession) -> None:
        ws = session.ws
        self.sessions += 1
        with contextlib.suppress(Exception):
            await self._send(ws, "session.created", session={"type": "realtime", "id": "sess_1"})
            async for raw in ws:
                event = json.loads(raw)
                if event["type"] == "session.update":
                    await self._send(ws, "session.updated", session={"type": "realtime", "id": "sess_1"})
                elif event["type"] == "response.create":
                    await self._greet(ws)

    async def _greet(self, ws: ServerConnection) -> None:
        where = {"response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0}
        await self._send(ws, "response.created", response={"id": "resp_1", "status": "in_progress"})
        await asyncio.sleep(self.first_audio_s)
        step = 24000 * 2 // 10  # 100 ms deltas
        for offset in range(0, len(self.audio), step):
            delta = base64.b64encode(self.audio[offset : offset + step]).decode()
            await self._send(ws, "response.output_audio.delta", **where, delta=delta)
        await self._send(ws, "response.output_audio.done", **where)
        await self._send(ws, "response.done", response={"id": "resp_1", "status": "completed"})


@dataclass
class Timing:
    open_to_audio_ms: float
    webhook_to_audio_ms: float


async def place_call(http: httpx.AsyncClient, url: str, gap_s: float, signer: TwilioSigner) -> Timing:
    """One call as Twilio places it, until the first agent audio arrives; then hang up."""
    call_sid, account_sid = "CA" + secrets.token_hex(16), "AC" + secrets.token_hex(16)
    stream_sid = "MZ" + secrets.token_hex(16)
    form = {"CallSid": call_sid, "AccountSid": account_sid, "From": "+15550199999", "To": "+15550100000",
            "Direction": "inbound", "CallStatus": "ringing"}  # fmt: skip
    headers = {"Content-Type": "application/x-www-form-urlencoded", SIGNATURE_HEADER: signer.sign(f"{url}/voice", form)}
    webhook_at = time.monotonic()
    answer = await http.post(f"{url}/voice", content=urllib.parse.urlencode(form), headers=headers)
    answer.raise_for_status()
    stream_url, parameters = parse_stream_twiml(answer.text)
    await asyncio.sleep(gap_s)
    opened_at = time.monotonic()
    async with connect(
        stream_url, additional_headers={SIGNATURE_HEADER: signer.sign(stream_url, {})}, proxy=None
    ) as ws:
        await ws.send(ms.connected_message())
        await ws.send(ms.start_message(stream_sid, call_sid, account_sid, parameters, 1))

        async def talk() -> None:
            for tick in range(10_000):
                message = ms.inbound_media_message(stream_sid, SILENCE, tick + 1, tick * 20, tick + 2)
                await ws.send(message)
                await asyncio.sleep(max(0.0, opened_at + (tick + 1) * 0.02 - time.monotonic()))

        talking = asyncio.create_task(talk())
        try:
            async for raw in ws:
                if json.loads(raw).get("event") == "media":
                    heard_at = time.monotonic()
                    break
            else:
                raise RuntimeError("the bridge closed the stream before any audio")
        finally:
            talking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await talking
        await ws.send(ms.stop_message(stream_sid, call_sid, account_sid, 99_999))
        async for _ in ws:  # read to the bridge's close, so the closing handshake can finish
            pass
    return Timing((heard_at - opened_at) * 1000, (heard_at - webhook_at) * 1000)


def stats(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(values), 1),
        "p50": round(float(np.percentile(values, 50)), 1),
        "p95": round(float(np.percentile(values, 95)), 1),
    }


@dataclass
class Row:
    handshake_ms: float
    gap_ms: float
    timings: dict[bool, list[Timing]] = field(default_factory=lambda: {True: [], False: []})

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"handshake_ms": self.handshake_ms, "twilio_gap_ms": self.gap_ms}
        for prewarm, timings in self.timings.items():
            key = "prewarm_on" if prewarm else "prewarm_off"
            out[key] = {
                "open_to_audio_ms": stats([t.open_to_audio_ms for t in timings]),
                "webhook_to_audio_ms": stats([t.webhook_to_audio_ms for t in timings]),
            }
        for measure in ("open_to_audio_ms", "webhook_to_audio_ms"):
            out[f"saved_{measure}"] = round(out["prewarm_off"][measure]["mean"] - out["prewarm_on"][measure]["mean"], 1)
        return out


async def benchmark(handshakes: list[float], gaps: list[float], first_audio_ms: float, calls: int) -> list[Row]:
    signer = TwilioSigner(AUTH_TOKEN)
    rows: list[Row] = []
    async with ScriptedModel(first_audio_ms) as model:
        base = {"upstream": "openai", "openai_api_key": "sk-benchmark", "upstream_url": model.url,
                "twilio_auth_token": AUTH_TOKEN, "max_calls": 1000}  # fmt: skip
        async with (
            served_bridge(Settings(**base, prewarm=True)) as on,
            served_bridge(Settings(**base, prewarm=False)) as off,
            httpx.AsyncClient() as http,
        ):
            url_on, url_off = on.url, off.url
            await place_call(http, url_on, 0.0, signer)  # warm up imports, code paths, HTTP connections: not measured
            await place_call(http, url_off, 0.0, signer)
            for handshake_ms in handshakes:
                model.handshake_ms = handshake_ms
                for gap_ms in gaps:
                    row = Row(handshake_ms, gap_ms)
                    for _ in range(calls):
                        for prewarm, url in ((True, url_on), (False, url_off)):
                            row.timings[prewarm].append(await place_call(http, url, gap_ms / 1000, signer))
                            await asyncio.sleep(0.05)  # let the bridge finish the call before the next
                    rows.append(row)
                    print(f"  handshake {handshake_ms:.0f} ms, gap {gap_ms:.0f} ms: done", file=sys.stderr)
    return rows


def machine_description() -> str:
    return f"{os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}"


def print_table(
    summaries: list[dict[str, Any]], first_audio_ms: float, calls: int, machine: str, elapsed: float
) -> None:
    print(f"\nPre-warm: time to first greeting audio, ms (mean / p50 / p95), {calls} calls each; "
          f"model first audio {first_audio_ms:.0f} ms after response.create; {machine}; {elapsed:.0f} s")  # fmt: skip
    header = (f"{'handshake':>9} {'gap':>5} | {'open→audio on':>20} {'open→audio off':>20} {'saved':>6} | "
              f"{'webhook→audio on':>20} {'webhook→audio off':>20} {'saved':>6}")  # fmt: skip
    print(header)
    print("-" * len(header))

    def cell(s: dict[str, float]) -> str:
        return f"{s['mean']:.0f} / {s['p50']:.0f} / {s['p95']:.0f}"

    for s in summaries:
        on, off = s["prewarm_on"], s["prewarm_off"]
        print(
            f"{s['handshake_ms']:>9.0f} {s['twilio_gap_ms']:>5.0f} | "
            f"{cell(on['open_to_audio_ms']):>20} {cell(off['open_to_audio_ms']):>20} {s['saved_open_to_audio_ms']:>6.0f} | "
            f"{cell(on['webhook_to_audio_ms']):>20} {cell(off['webhook_to_audio_ms']):>20} {s['saved_webhook_to_audio_ms']:>6.0f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handshake-ms", type=float, nargs="+", default=[150.0, 300.0, 600.0])
    parser.add_argument("--twilio-gap-ms", type=float, nargs="+", default=[0.0, 250.0],
                        help="time from the TwiML to Twilio opening the stream (default: 0 and 250)")  # fmt: skip
    parser.add_argument("--first-audio-ms", type=float, default=250.0, help="model delay after response.create")
    parser.add_argument("--calls", type=int, default=10, help="calls per setting, each with pre-warm on and off")
    args = parser.parse_args(argv)

    configure_logging("console", "error")
    started = time.monotonic()
    rows = asyncio.run(benchmark(args.handshake_ms, args.twilio_gap_ms, args.first_audio_ms, args.calls))
    elapsed = time.monotonic() - started
    summaries = [row.summary() for row in rows]
    machine = machine_description()
    print_table(summaries, args.first_audio_ms, args.calls, machine, elapsed)
    print(json.dumps({"benchmark": "prewarm", "calls": args.calls, "model_first_audio_ms": args.first_audio_ms,
                      "rows": summaries, "seconds": round(elapsed, 1), "machine": machine}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
