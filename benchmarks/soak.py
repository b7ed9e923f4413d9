"""Soak: two 30-minute calls on a scaled clock; memory and task count must stay flat.

    .venv/bin/python benchmarks/soak.py                 # 30 simulated minutes at 12x: ~2.5 min
    .venv/bin/python benchmarks/soak.py --minutes 60 --speed 15
    .venv/bin/python benchmarks/soak.py --minutes 8 --speed 3 --trace   # find where memory goes

Everything runs in this process on loopback, as `voice-bridge demo` does: the app
(`bridge.devtools.local_bridge.local_bridge(settings, clock=scaled_clock(speed))`) under uvicorn
(`bridge.serving.serving`), signatures on, the local agent (`bridge.devtools.agent.LocalAgent`, started here
with `pace = 4 x speed` so that it streams 4x faster than the call's own time, as it does in real
time), and two simulated callers (`bridge.devtools.phone.place_call(..., speed=speed)`), both cycling
fixtures/audio/caller_*.wav for the whole call:

- "barge-in": interrupts every answer 1.5 s into it (clear, response.cancel, truncate, again
  and again: ~13 times a minute);
- "listener": lets each answer play out, waits 0.8 s, asks the next question.

Every `--every` simulated seconds it samples: the process's RSS (/proc/self/status VmRSS), the
number of asyncio tasks (`len(asyncio.all_tasks())`), the number of objects the garbage collector
tracks, and the bridge's counters (barge-ins, frames). Simulated time is counted from the
callers' frames the bridge has taken in, so a process that cannot keep the speed only runs
longer. The simulator keeps each call's audio for `--record` (16 kB per simulated second per
call): the soak discards it, since that is the harness growing, not the bridge.

With `--trace` it starts tracemalloc at the half-way point, and takes two snapshots: at the last
sample of the calls (what the second half allocated and the calls still hold: per-call growth)
and after both calls have ended (what is held beyond the calls: a leak). The top sites of each
are printed. tracemalloc slows the process several times: use a lower `--speed`.

It is flat when, over the second half of the calls: RSS grew by less than `--rss-mb` (default
4 MB), the task count stayed within `--tasks` (default 6) of its first-half range and did not
grow, and the tracked-object count grew by less than 2 %. And after the calls: both ended by the
caller hanging up, the bridge holds no call, and the task count is back to where it was before
the calls. Prints the samples as a table and one JSON line; exits 1 if not flat.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import secrets
import sys
import time
import tracemalloc
from pathlib import Path

from machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
AUDIO = ROOT / "fixtures" / "audio"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS")


class _Discard(bytearray):
    """Stands in for the simulator's recording buffers: counts what would be recorded, keeps nothing."""

    recorded = 0

    def __iadd__(self, other):  # type: ignore[override]
        self.recorded += len(other)
        return self


def _no_recording() -> None:
    """The simulator keeps every call's audio for `--record` (16 kB per simulated second per call):
    that is the test harness growing, not the bridge, so the soak drops it."""
    from bridge.devtools.phone import simulator

    original = simulator.CallReport

    def report(*args, **kwargs):
        r = original(*args, **kwargs)
        r.caller_audio, r.agent_audio = _Discard(), _Discard()
        return r

    simulator.CallReport = report  # type: ignore[assignment,misc]


def counter(metric) -> float:
    return sum(sample.value for family in metric.collect() for sample in family.samples if sample.name.endswith("_total"))


async def soak(args: argparse.Namespace) -> dict:
    from bridge.devtools.agent import LocalAgent
    from bridge.devtools.clock import scaled_clock
    from bridge.devtools.local_bridge import local_bridge
    from bridge.devtools.phone import place_call
    from bridge.devtools.phone.caller import CallerPlan, load_caller_audio
    from bridge.logs import configure_logging
    from bridge.serving import serving
    from bridge.settings import Settings

    configure_logging("console", "warning")
    _no_recording()
    clips = [load_caller_audio(AUDIO / "caller_question.wav"), load_caller_audio(AUDIO / "caller_interrupt.wav")]
    call_s = args.minutes * 60.0
    utterances = tuple(clips[k % 2] for k in range(int(call_s / 2) + 10))  # more than can be said: the call ends on time
    plans = {
        "barge-in": CallerPlan(utterances=utterances, pause_s=0.8, barge_in_after_s=1.5, max_call_s=call_s),
        "listener": CallerPlan(utterances=utterances, pause_s=0.8, barge_in_after_s=None, max_call_s=call_s),
    }
    token = secrets.token_hex(16)
    agent = LocalAgent(pace=4.0 * args.speed)
    await agent.start()
    settings = Settings(twilio_auth_token=token, upstream_url=agent.url, log_level="warning")
    settings.validate()
    services = contextlib.AsyncExitStack()  # the bridge's services, closed once the calls are over
    app = (await services.enter_async_context(local_bridge(settings, clock=scaled_clock(args.speed)))).app
    state = app.state.bridge
    samples: list[dict] = []
    snapshot_half = None
    during_snapshot = after_snapshot = None
    try:
        async with serving(app) as url:
            await asyncio.sleep(0.2)
            gc.collect()
            tasks_before = len(asyncio.all_tasks())
            rss_before = rss_mb()
            started = time.monotonic()
            calls = {
                name: asyncio.create_task(
                    place_call(url, plan, auth_token=token, to=f"+1555010000{i}", speed=args.speed, playout_step_ms=20),
                    name=f"soak_{name}",
                )
                for i, (name, plan) in enumerate(plans.items())
            }
            deadline = started + call_s / args.speed * 3 + 30  # bounded whatever happens
            next_sample = 0.0
            frames = state.metrics.frames.labels(direction="in")
            while not all(c.done() for c in calls.values()) and time.monotonic() < deadline:
                # Simulated time as the callers lived it: their 20 ms frames the bridge has taken in.
                sim_s = frames._value.get() * 0.02 / len(calls)
                if sim_s >= next_sample and sim_s <= call_s:
                    if snapshot_half is None and sim_s >= call_s / 2 and args.trace:
                        tracemalloc.start(args.trace_frames)
                        snapshot_half = True
                    samples.append(
                        {
                            "sim_s": round(sim_s, 1),
                            "rss_mb": round(rss_mb(), 2),
                            "tasks": len(asyncio.all_tasks()),
                            "gc_objects": len(gc.get_objects()),
                            "active_calls": len(state.active_calls),
                            "barge_ins": int(counter(state.metrics.barge_ins)),
                            "frames_in": int(frames._value.get()),
                            "wall_s": round(time.monotonic() - started, 1),
                            "traced_mb": round(tracemalloc.get_traced_memory()[0] / 2**20, 2) if tracemalloc.is_tracing() else None,
                        }
                    )
                    next_sample += args.every
                    if tracemalloc.is_tracing() and during_snapshot is None and sim_s >= call_s - 1.5 * args.every:
                        # The last sample of the calls: what the second half allocated and the calls still hold.
                        during_snapshot = tracemalloc.take_snapshot()
                await asyncio.sleep(0.05)
            if not all(c.done() for c in calls.values()):
                for c in calls.values():
                    c.cancel()
            results = await asyncio.gather(*calls.values(), return_exceptions=True)
            wall_s = time.monotonic() - started
            await asyncio.sleep(0.5)
            gc.collect()
            tasks_after = len(asyncio.all_tasks())
            active_after = len(state.active_calls)
            rss_after = rss_mb()
            # What the second half allocated and is still alive after both calls ended: a leak past the call.
            after_snapshot = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
            tracemalloc.stop()
    finally:
        await services.aclose()
        await agent.stop()

    reports = {}
    for name, result in zip(calls, results):
        if isinstance(result, BaseException):
            reports[name] = {"ok": False, "error": f"{type(result).__name__}: {result}"[:200]}
        else:
            reports[name] = {
                "ok": result.ended_by == "caller",
                "ended_by": result.ended_by,
                "call_s": round(result.call_s, 1),
                "clears": result.clears,
                "agent_heard_s": round(result.agent_audio_s, 1),
                "marks_echoed": result.marks_echoed,
            }
    def top_sites(snapshot: tracemalloc.Snapshot | None) -> list[dict]:
        if snapshot is None:
            return []
        ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap*>")]
        out = []
        for stat in snapshot.filter_traces(ignore).statistics("traceback")[:12]:
            frames = [f"{Path(f.filename).name}:{f.lineno}" for f in stat.traceback[-5:]]
            out.append({"kb": round(stat.size / 1024, 1), "count": stat.count, "where": " <- ".join(reversed(frames))})
        return out

    return {
        "samples": samples,
        "calls": reports,
        "wall_s": round(wall_s, 1),
        "tasks_before": tasks_before,
        "tasks_after": tasks_after,
        "active_calls_after": active_after,
        "rss_before_mb": round(rss_before, 2),
        "rss_after_mb": round(rss_after, 2),
        "alive_from_second_half_during_calls": top_sites(during_snapshot),
        "alive_from_second_half_after_calls": top_sites(after_snapshot),
    }


def judge(result: dict, args: argparse.Namespace) -> dict:
    end = args.minutes * 60.0
    # Both calls up, and not their last seconds (a phone that has hung up is not steady state).
    samples = [s for s in result["samples"] if s["active_calls"] == 2 and s["sim_s"] <= end - 10]
    half = end / 2
    first = [s for s in samples if s["sim_s"] < half and s["sim_s"] >= args.every * 2]  # after the first minute or so
    second = [s for s in samples if s["sim_s"] >= half]
    checks: dict[str, dict] = {}
    if not first or not second:
        return {"flat": False, "checks": {"enough samples": {"ok": False, "detail": f"{len(first)} + {len(second)}"}}}
    rss_growth = second[-1]["rss_mb"] - second[0]["rss_mb"]
    rss_max_growth = max(s["rss_mb"] for s in second) - second[0]["rss_mb"]
    checks["RSS growth over the second half"] = {
        "ok": rss_max_growth < args.rss_mb,
        "detail": f"{rss_growth:+.2f} MB (max {rss_max_growth:+.2f}), bound {args.rss_mb} MB",
    }
    t_first = [s["tasks"] for s in first]
    t_second = [s["tasks"] for s in second]
    checks["task count"] = {
        "ok": max(t_second) - min(t_first + t_second) <= args.tasks and max(t_second) <= max(t_first) + 1,
        "detail": f"first half {min(t_first)}-{max(t_first)}, second half {min(t_second)}-{max(t_second)}, bound {args.tasks}",
    }
    objects = (second[-1]["gc_objects"] - second[0]["gc_objects"]) / second[0]["gc_objects"]
    checks["gc-tracked objects over the second half"] = {"ok": objects < 0.02, "detail": f"{objects:+.2%}"}
    checks["both calls ended by the caller"] = {
        "ok": all(r.get("ok") for r in result["calls"].values()),
        "detail": ", ".join(f"{k}: {v.get('ended_by') or v.get('error')}" for k, v in result["calls"].items()),
    }
    checks["no call left, tasks back to before"] = {
        "ok": result["active_calls_after"] == 0 and result["tasks_after"] <= result["tasks_before"],
        "detail": f"active {result['active_calls_after']}, tasks {result['tasks_before']} before / {result['tasks_after']} after",
    }
    barge_ins = second[-1]["barge_ins"] - first[0]["barge_ins"]
    checks["barge-ins kept happening"] = {"ok": barge_ins > 0 and second[-1]["barge_ins"] > second[0]["barge_ins"], "detail": f"{barge_ins} over the measured span"}
    return {"flat": all(c["ok"] for c in checks.values()), "checks": checks, "rss_growth_second_half_mb": rss_growth}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="simulated call length")
    parser.add_argument("--speed", type=float, default=12.0, help="clock speed-up (bridge and phones alike)")
    parser.add_argument("--every", type=float, default=60.0, help="sample every this many simulated seconds")
    parser.add_argument("--rss-mb", type=float, default=4.0, help="allowed RSS growth over the second half")
    parser.add_argument("--tasks", type=int, default=6, help="allowed spread of the task count")
    parser.add_argument("--trace", action="store_true", help="tracemalloc in the second half, to find a leak (slows the "
                        "process several times: use a lower --speed)")
    parser.add_argument("--trace-frames", type=int, default=6, help="traceback depth kept by tracemalloc")
    args = parser.parse_args()

    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}\n"
        f"two calls of {args.minutes:.0f} simulated minutes at {args.speed:g}x (~{args.minutes * 60 / args.speed:.0f} s), "
        f"a sample every {args.every:.0f} simulated s\n",
        flush=True,
    )
    result = asyncio.run(soak(args))
    verdict = judge(result, args)
    print(f"{'sim min':>7} {'wall s':>7} {'RSS MB':>8} {'tasks':>6} {'gc objects':>11} {'calls':>6} {'barge-ins':>9} {'frames in':>10} {'traced MB':>10}")
    for s in result["samples"]:
        traced = f"{s['traced_mb']:>10.2f}" if s["traced_mb"] is not None else f"{'-':>10}"
        print(
            f"{s['sim_s'] / 60:>7.1f} {s['wall_s']:>7.1f} {s['rss_mb']:>8.2f} {s['tasks']:>6} {s['gc_objects']:>11} {s['active_calls']:>6} "
            f"{s['barge_ins']:>9} {s['frames_in']:>10} {traced}"
        )
    achieved = args.minutes * 60 / result["wall_s"]
    print(f"\nwall time {result['wall_s']} s (the clock ran {args.speed:g}x; the callers achieved {achieved:.1f}x); calls: " + "; ".join(f"{k} {v}" for k, v in result["calls"].items()))
    for key, title in (
        ("alive_from_second_half_during_calls", "allocated in the second half and still held at the end of the calls"),
        ("alive_from_second_half_after_calls", "allocated in the second half and still held after the calls ended"),
    ):
        if result[key]:
            print(f"tracemalloc, {title} (top sites, innermost frame first):")
            for t in result[key]:
                print(f"  {t['kb']:>8.1f} kB in {t['count']:>6} blocks  {t['where']}")
    print()
    for name, check in verdict["checks"].items():
        print(f"  {'ok  ' if check['ok'] else 'FAIL'} {name}: {check['detail']}")
    print(f"\n{'flat' if verdict['flat'] else 'NOT FLAT'}")
    print(json.dumps({"args": vars(args), **result, **verdict}, sort_keys=True))
    sys.exit(0 if verdict["flat"] else 1)


if __name__ == "__main__":
    main()
