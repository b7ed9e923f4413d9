"""Dead air (issue 16): from the caller's end of speech to the first audio the caller hears, with a
model that takes 0.5 / 2 / 5 s to start, with and without the turn watchdog.

    .venv/bin/python benchmarks/dead_air.py                 # 6 calls per row, three at a time
    .venv/bin/python benchmarks/dead_air.py --calls 10 --delays 0.5,2,5

Each call runs in this process on loopback: the real app under uvicorn with its embedded local
agent answering `--answer-delay` late (recorded speech), and the phone simulator as Twilio behind
the realistic network profile (`NetworkProfile.realistic()`: 30 ± 10 ms one way, 60 ms playout
start delay, occasional stalls). The caller listens to the greeting, asks
fixtures/audio/caller_question.wav, and hangs up 7 s after hearing nothing more. Measured at the
phone: from the last loud sample of the question to the first loud agent sample after it (filler
or answer: what the caller hears first), and to the answer itself. The local agent's voice
activity detection waits ~0.5 s of silence before its turn ends: the same in every row.
Watchdog on: the production defaults (filler after 1500 ms, turn timeout 8 s); off: both 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys

import numpy as np
from bargein import AUDIO, machine_description

from voice_codecs import ulaw_decode

LOUD = 100  # |sample| above this (16-bit): about -50 dBFS


def first_heard_ms(report: object, filler: bytes) -> tuple[float | None, float | None]:
    """(first audio heard after the question, the answer's first audio), ms after the question's end."""
    caller = ulaw_decode(bytes(report.caller_audio))  # type: ignore[attr-defined]
    raw = bytes(report.agent_audio)  # type: ignore[attr-defined]
    agent = ulaw_decode(raw)
    spoken = np.flatnonzero(np.abs(caller.astype(np.int32)) > LOUD)
    if not len(spoken):
        return None, None
    end = int(spoken[-1])
    loud = np.flatnonzero(np.abs(agent[end:].astype(np.int32)) > LOUD)
    if not len(loud):
        return None, None
    first = float(loud[0])
    at = raw.find(filler, end)
    answer_from = at + len(filler) - end if at >= 0 else 0
    after = loud[loud >= answer_from]
    return first / 8.0, (float(after[0]) / 8.0 if len(after) else None)


async def one_row(delay_s: float, watchdog: bool, calls: int, seed: int) -> dict[str, object]:
    from bridge.devtools.local_bridge import embedded_agent, served_bridge
    from bridge.devtools.phone import place_call
    from bridge.devtools.phone.caller import CallerPlan, load_caller_audio
    from bridge.devtools.phone.network import NetworkProfile
    from bridge.filler import default_filler_path, render_filler
    from bridge.settings import Settings

    token = secrets.token_hex(16)
    budgets = {"filler_after_ms": 1500, "turn_timeout_s": 8} if watchdog else {}
    settings = Settings(twilio_auth_token=token, **budgets)
    settings.validate()
    agent = embedded_agent(settings)
    agent.answer_delay_s = delay_s
    filler = render_filler(str(default_filler_path()))
    question = load_caller_audio(AUDIO / "caller_question.wav")
    plan = CallerPlan(utterances=(question,), pause_s=0.6, hangup_after_s=7.0, max_call_s=30)
    firsts, answers, fillers = [], [], 0
    async with served_bridge(settings, agent=agent) as bridge:
        url = bridge.url
        for n in range(0, calls, 3):
            batch = [
                place_call(url, plan, auth_token=token, network=NetworkProfile.realistic(seed=seed + n + k))
                for k in range(min(3, calls - n))
            ]
            for report in await asyncio.gather(*batch):
                first, answer = first_heard_ms(report, filler)
                fillers += bytes(report.agent_audio).find(filler) >= 0
                if first is not None:
                    firsts.append(first)
                if answer is not None:
                    answers.append(answer)

    def stats(values: list[float]) -> dict[str, float | None]:
        if not values:
            return {"p50": None, "p95": None}
        return {"p50": round(float(np.percentile(values, 50)), 1), "p95": round(float(np.percentile(values, 95)), 1)}

    return {"model_delay_s": delay_s, "watchdog": watchdog, "calls": calls, "fillers": fillers,
            "first_heard_ms": stats(firsts), "answer_ms": stats(answers)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=6, help="calls per row, three at a time (default 6)")
    parser.add_argument("--delays", default="0.5,2,5", help="the model's start delays, s (default 0.5,2,5)")
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args(argv)

    from bridge.logs import configure_logging

    configure_logging("console", "error")
    rows = [
        asyncio.run(one_row(float(d), watchdog, args.calls, args.seed))
        for d in args.delays.split(",")
        for watchdog in (False, True)
    ]
    print(
        f"\nAt the phone, ms after the question's end (p50 / p95), {args.calls} calls per row, "
        f"realistic network ({machine_description()})"
    )
    print(f"{'model start delay':<18} {'watchdog':<9} {'fillers':>8} {'first audio heard':>20} {'answer heard':>16}")
    for row in rows:
        f, a = row["first_heard_ms"], row["answer_ms"]
        print(
            f"{row['model_delay_s']:<18} {'on' if row['watchdog'] else 'off':<9} {row['fillers']:>8} "
            f"{f['p50']} / {f['p95']:>8} {'':>3} {a['p50']} / {a['p95']}"  # type: ignore[index]
        )
    print(json.dumps({"rows": rows, "machine": machine_description()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
