"""Greeting time and turn latency as the caller experiences them, with and without a network.

    .venv/bin/python benchmarks/network_timing.py                 # one-way 0, 10, 30, 60 ms; 4 calls each
    .venv/bin/python benchmarks/network_timing.py --calls 6 --delays 0,30

Each call runs in this process on loopback: the real app under uvicorn with its embedded local
agent (recorded speech, streamed 4x faster than real time), and the phone simulator as Twilio
with the network profile of `benchmarks/bargein.py` (jitter a third of the delay, 60 ms playout
start delay, a 40 ms stall about every 10 s each way). The caller listens to the greeting, asks
fixtures/audio/caller_question.wav, hears the answer and hangs up. Measured at the phone:

- greeting: from the stream's `start` to the first agent audio played (what `CallReport` calls
  first agent audio);
- turn: from the last sample of the caller's question to the first agent sample of the answer
  louder than -50 dBFS (the local agent's voice activity detection waits for ~0.5 s of silence
  before it answers: that wait is the same in every row).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys

import numpy as np
from bargein import machine_description, network_profile

from voice_codecs import ulaw_decode

LOUD = 100  # |sample| above this (16-bit) counts as agent speech: about -50 dBFS


def turn_latency_ms(report: object) -> float | None:
    caller = ulaw_decode(bytes(report.caller_audio))  # type: ignore[attr-defined]
    agent = ulaw_decode(bytes(report.agent_audio))  # type: ignore[attr-defined]
    spoken = np.flatnonzero(np.abs(caller.astype(np.int32)) > LOUD)
    if not len(spoken):
        return None
    end = int(spoken[-1])
    answer = np.flatnonzero(np.abs(agent[end:].astype(np.int32)) > LOUD)
    return None if not len(answer) else float(answer[0]) / 8.0


async def one_network(delay_ms: float | None, calls: int, seed: int) -> dict[str, object]:
    """`delay_ms` None: no network at all (the simulator talks to the socket directly)."""
    from bridge.devtools.local_bridge import served_bridge
    from bridge.devtools.phone import place_call
    from bridge.devtools.phone.caller import CallerPlan, load_caller_audio
    from bridge.settings import Settings
    from bargein import AUDIO

    token = secrets.token_hex(16)
    settings = Settings(twilio_auth_token=token)
    settings.validate()
    plan = CallerPlan(utterances=(load_caller_audio(AUDIO / "caller_question.wav"),), pause_s=0.6, hangup_after_s=1.0)
    greetings, turns = [], []
    async with served_bridge(settings) as bridge:
        url = bridge.url
        for n in range(0, calls, 2):
            batch = [
                place_call(url, plan, auth_token=token, network=None if delay_ms is None else network_profile(delay_ms, 1 / 3, 60.0, True, seed + n + k))
                for k in range(min(2, calls - n))
            ]
            for report in await asyncio.gather(*batch):
                if report.first_agent_audio_s is not None:
                    greetings.append(report.first_agent_audio_s * 1000)
                turn = turn_latency_ms(report)
                if turn is not None:
                    turns.append(turn)

    def stats(values: list[float]) -> dict[str, float | None]:
        if not values:
            return {"mean": None, "p50": None, "max": None}
        return {"mean": round(float(np.mean(values)), 1), "p50": round(float(np.median(values)), 1), "max": round(max(values), 1)}

    return {"delay_ms": delay_ms, "calls": calls, "greeting_ms": stats(greetings), "turn_ms": stats(turns)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4, help="calls per network, two at a time (default 4)")
    parser.add_argument("--delays", default="direct,0,10,30,60",
                        help="one-way delays, ms; 'direct' is no network at all (default direct,0,10,30,60)")
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args(argv)

    from bridge.logs import configure_logging

    configure_logging("console", "error")
    rows = [asyncio.run(one_network(None if d == "direct" else float(d), args.calls, args.seed)) for d in args.delays.split(",")]
    print(f"\nAt the phone, ms (mean / p50 / max), {args.calls} calls per row ({machine_description()})")
    print(f"{'one-way delay':<28} {'greeting (start -> first audio)':>32} {'turn (question end -> answer)':>32}")
    for row in rows:
        d = row["delay_ms"]
        label = "none (direct)" if d is None else f"{d:.0f} ± {d / 3:.0f} ms, playout 60 ms"  # type: ignore[operator]
        g, t = row["greeting_ms"], row["turn_ms"]
        print(f"{label:<28} {g['mean']} / {g['p50']} / {g['max']:>6} {'':>10} {t['mean']} / {t['p50']} / {t['max']}")  # type: ignore[index]
    print(json.dumps({"rows": rows, "machine": machine_description()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
