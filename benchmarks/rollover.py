"""Long calls (issue 18): a 90-minute call on a scaled clock, with and without planned rollover.

    .venv/bin/python benchmarks/rollover.py                  # 90 min, speed 60, both runs at once (~2 min)
    .venv/bin/python benchmarks/rollover.py --minutes 20 --speed 40 --plot ''   # shorter, no PNG
    .venv/bin/python benchmarks/rollover.py --budget 6000 --plot benchmarks/rollover.png

Everything runs in this process on loopback: the real app under uvicorn (`served_bridge`) on a
clock `--speed` times faster than real time (`bridge.devtools.clock.scaled_clock`), the phone
simulator as Twilio (`place_call`, 20 ms playout steps, same speed), and a scripted GA Realtime
model on the shared fake server (`bridge.devtools.fake_realtime`, one per run) that:

- ends every session `--cap-minutes` after it opened (30, as Azure OpenAI does): `error
  session_expired`, then waits for the client to close;
- detects the caller's turns by energy on the appended audio (server VAD: speech_started/stopped,
  committed, the user item, its transcription) and answers each with a recorded clip (3.5 s and
  8.2 s in turn) in one burst of deltas, with its transcript;
- bills every response as the services do: input tokens = everything the session holds (the
  instructions, the seeded text items, every caller utterance and every answer so far; audio at
  10 tokens/s, text at 4 characters a token; no cache), output tokens = the answer (audio at
  20 tokens/s plus its text), reported in `response.done`'s `usage`;
- answers the bridge's out-of-band summary request (a `response.create` tagged with `metadata`) as
  the services do: a text-only response with the same metadata, billed the same way, added to
  nothing.

The bridge talks to it as `openai` (a 60-minute cap it knows of), so:
- without rollover (no VOICE_BRIDGE_ROLLOVER_* settings), nothing is planned before the model's
  30-minute cap: each session grows until it expires, and the bridge replaces it (the unplanned path,
  seeded the same way);
- with rollover, VOICE_BRIDGE_ROLLOVER_SECONDS=1680 (the cap less 2 min: what the bridge does on its
  own for an upstream whose cap it knows) and VOICE_BRIDGE_ROLLOVER_INPUT_TOKENS=`--budget`.

Measured per run: input tokens per response over the call, the call's total tokens and their
ESTIMATED cost at the shipped gpt-realtime prices (bridge/cost.py), sessions, rollovers (quiet or
forced, from the bridge's /metrics) and replacements; whether the caller was answered every time;
and what the phone heard around each switch of session: for the answer after each switch, the
longest silence inside it beyond the longest pause of the clip itself (the model's own pauses), and
the delay from the end of the caller's utterance to the answer against the median delay of the call.
Prints a table and one JSON line; `--plot` writes a PNG (matplotlib: a benchmark-only tool, not a
dependency of the bridge; `--plot ''` skips it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import time
import urllib.request
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge.cost import DEFAULT_PRICES, cost_estimate  # noqa: E402
from bridge.devtools.clock import scaled_clock  # noqa: E402
from bridge.devtools.fake_realtime import FakeRealtime, FakeSession  # noqa: E402
from bridge.devtools.local_bridge import served_bridge  # noqa: E402
from bridge.devtools.phone import CallReport, place_call  # noqa: E402
from bridge.devtools.phone.caller import Caller, CallerPlan, CallerState  # noqa: E402
from bridge.dialects import GA_WIRE_NAMES  # noqa: E402
from bridge.settings import Settings  # noqa: E402
from voice_codecs import ulaw_decode, ulaw_encode  # noqa: E402

AUDIO = ROOT / "fixtures" / "audio"
AUTH_TOKEN = "rollover-benchmark-token"
KEY = "sk-benchmark-not-a-key"
AUDIO_TOKENS_PER_S = 10  # input audio (OpenAI: about one token per 100 ms)
OUTPUT_AUDIO_TOKENS_PER_S = 20
CHARS_PER_TOKEN = 4
SPEECH_LEVEL = 1000  # μ-law decoded peak above which 20 ms of caller audio is speech (the fake's VAD)
VAD_SILENCE_MS = 500
FRAME = 160  # 20 ms of 8 kHz μ-law
HEARD_LEVEL = 300  # a 20 ms frame the phone played louder than this is heard speech
PRICE = DEFAULT_PRICES["gpt-realtime"]
REASK_S = 6.0  # a caller who hears no answer for this long asks again (a real one says "hello?")


def _wav_ulaw(name: str) -> bytes:
    """A fixture clip as 8 kHz μ-law (24 kHz clips decimated by 3 after a 3-tap mean)."""
    with wave.open(str(AUDIO / name)) as wav:
        rate, pcm = wav.getframerate(), np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    if rate == 24000:
        pcm = pcm[: len(pcm) // 3 * 3].astype(np.int32).reshape(-1, 3).mean(axis=1).astype(np.int16)
    return ulaw_encode(pcm)


CLIPS = json.loads((AUDIO / "clips.json").read_text())
GREETING = (_wav_ulaw(CLIPS["greeting"]["file"]), CLIPS["greeting"]["text"])
ANSWERS = [(_wav_ulaw(a["file"]), a["text"]) for a in CLIPS["answers"]]
QUESTION = _wav_ulaw("caller_question.wav")


def loud_frames(ulaw: bytes | bytearray, level: int) -> np.ndarray:
    """One bool per 20 ms frame: its peak is above `level`."""
    n = len(ulaw) // FRAME
    samples = np.abs(ulaw_decode(bytes(ulaw[: n * FRAME])).astype(np.int32)).reshape(n, FRAME)
    return np.asarray(samples.max(axis=1) > level)


def longest_run(flags: np.ndarray) -> int:
    """The longest run of True, in frames."""
    best = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def own_pause_ms(ulaw: bytes) -> int:
    """The longest silence inside a clip, between its first and last heard frame: the model's own pause."""
    loud = loud_frames(ulaw, HEARD_LEVEL)
    idx = np.flatnonzero(loud)
    return longest_run(~loud[idx[0] : idx[-1] + 1]) * 20 if idx.size else 0


@dataclass(slots=True)
class Response:
    n: int  # 0: the greeting; n: the answer to the caller's n-th utterance
    session: int
    at_s: float  # call time (s) when it was sent
    input_tokens: int
    output_tokens: int
    text_in: int
    audio_in: int


@dataclass(slots=True)
class History:
    """What one session holds, in tokens."""

    instructions: int = 0
    text: int = 0
    audio: int = 0

    @property
    def input_tokens(self) -> int:
        return self.instructions + self.text + self.audio


@dataclass
class Model:
    """The scripted model of one run: its clock, its cap, what it billed."""

    clock: Callable[[], float]
    cap_s: float
    speed: float
    start: float = 0.0
    responses: list[Response] = field(default_factory=list)
    heard_audio_s: list[float] = field(default_factory=list)  # caller audio each session received
    expired: int = 0
    answers: int = 0  # the caller's utterances answered, over every session
    summaries: int = 0  # out-of-band summaries given (billed with the responses, never played)

    def now_s(self) -> float:
        return self.clock() - self.start

    async def script(self, s: FakeSession) -> None:
        history = History()
        self.heard_audio_s.append(0.0)
        expiry = asyncio.create_task(self._expire(s))
        await s.send("session.created", session={"type": "realtime", "id": f"sess_{s.index}"})
        vad = _Vad()
        try:
            async for raw in s.ws:
                event = json.loads(raw)
                kind = event.get("type")
                if kind == "session.update":
                    instructions = event.get("session", {}).get("instructions")
                    if instructions:
                        history.instructions = len(instructions) // CHARS_PER_TOKEN
                    await s.send("session.updated", session={"type": "realtime", "id": f"sess_{s.index}"})
                elif kind == "conversation.item.create":
                    text = " ".join(str(c.get("text", "")) for c in event.get("item", {}).get("content", []))
                    history.text += len(text) // CHARS_PER_TOKEN
                elif kind == "input_audio_buffer.append":
                    audio = base64.b64decode(event["audio"])
                    self.heard_audio_s[s.index] += len(audio) / 8000
                    turn = vad.feed(audio)
                    if turn == "started":
                        await s.send("input_audio_buffer.speech_started", audio_start_ms=vad.start_ms, item_id=vad.item(s))
                    elif turn == "stopped":
                        await self._user_turn(s, vad, history)
                        await self._answer(s, history, self.answers)
                elif kind == "response.create":
                    metadata = (event.get("response") or {}).get("metadata")
                    if metadata:  # the bridge's out-of-band summary: text only, outside the conversation
                        await self._summarise(s, history, metadata)
                    else:
                        await self._answer(s, history, None)
        except websockets.ConnectionClosed:
            pass
        finally:
            expiry.cancel()

    async def _expire(self, s: FakeSession) -> None:
        await asyncio.sleep(self.cap_s / self.speed)
        self.expired += 1
        error = {"type": "invalid_request_error", "code": "session_expired", "message": "Your session hit the maximum duration."}
        await s.send("error", error=error)
        try:
            async with asyncio.timeout(10 / self.speed + 2):
                await s.ws.wait_closed()
        except TimeoutError:
            await s.ws.close(1011)

    async def _user_turn(self, s: FakeSession, vad: _Vad, history: History) -> None:
        item_id = vad.item(s)
        await s.send("input_audio_buffer.speech_stopped", audio_end_ms=vad.end_ms, item_id=item_id)
        await s.send("input_audio_buffer.committed", previous_item_id=None, item_id=item_id)
        item = {"id": item_id, "type": "message", "role": "user", "content": [{"type": "input_audio", "transcript": None}]}
        await s.send(GA_WIRE_NAMES.item_added, previous_item_id=None, item=item)
        self.answers += 1
        transcript = f"Question number {self.answers}: where is my order and when do you open?"
        await s.send(
            "conversation.item.input_audio_transcription.completed", item_id=item_id, content_index=0, transcript=transcript
        )
        history.audio += round((vad.end_ms - vad.start_ms) / 1000 * AUDIO_TOKENS_PER_S)
        history.text += len(transcript) // CHARS_PER_TOKEN
        vad.reset()

    async def _summarise(self, s: FakeSession, history: History, metadata: dict[str, Any]) -> None:
        """An out-of-band text response, as the services give one: billed for what the session
        holds, tagged with the request's metadata, added to nothing."""
        rid = f"resp_{s.index}_oob_{len(self.responses)}"
        text = "The caller is asking about their order; every question so far was answered. " * 3
        created = {"id": rid, "object": "realtime.response", "status": "in_progress", "metadata": metadata}
        await s.send("response.created", response=created)
        output = [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}]
        done = {**created, "status": "completed", "output": output, "usage": self._bill(s, history, 0, 0, text)}
        await s.send("response.done", response=done)
        self.summaries += 1

    def _bill(self, s: FakeSession, history: History, n: int, out_audio: int, text: str) -> dict[str, Any]:
        """A response's usage as the services report it (everything the session holds is re-read),
        booked in `responses`."""
        out_text = len(text) // CHARS_PER_TOKEN
        text_in = history.instructions + history.text
        self.responses.append(
            Response(n, s.index, self.now_s(), history.input_tokens, out_audio + out_text, text_in, history.audio)
        )
        return {
            "total_tokens": history.input_tokens + out_audio + out_text,
            "input_tokens": history.input_tokens,
            "output_tokens": out_audio + out_text,
            "input_token_details": {"text_tokens": text_in, "audio_tokens": history.audio, "cached_tokens": 0},
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
        }

    async def _answer(self, s: FakeSession, history: History, n: int | None) -> None:
        """One audio response, billed for what the session holds, then added to it."""
        pcm, text = GREETING if n is None else ANSWERS[n % len(ANSWERS)]
        rid, iid = f"resp_{s.index}_{len(self.responses)}", f"item_{s.index}_{len(self.responses)}"
        where = {"response_id": rid, "item_id": iid, "output_index": 0, "content_index": 0}
        await s.send("response.created", response={"id": rid, "object": "realtime.response", "status": "in_progress"})
        item = {"id": iid, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        await s.send("response.output_item.added", response_id=rid, output_index=0, item=item)
        await s.send(GA_WIRE_NAMES.item_added, previous_item_id=None, item=item)
        for offset in range(0, len(pcm), 8000):  # 1 s deltas
            await s.send(GA_WIRE_NAMES.audio_delta, **where, delta=base64.b64encode(pcm[offset : offset + 8000]).decode())
        await s.send(GA_WIRE_NAMES.audio_done, **where)
        await s.send(GA_WIRE_NAMES.transcript_done, **where, transcript=text)
        await s.send("response.output_item.done", response_id=rid, output_index=0, item={**item, "status": "completed"})
        audio_s = len(pcm) / 8000
        usage = self._bill(s, history, n or 0, round(audio_s * OUTPUT_AUDIO_TOKENS_PER_S), text)
        response = {"id": rid, "object": "realtime.response", "status": "completed", "usage": usage}
        await s.send("response.done", response=response)
        history.audio += round(audio_s * AUDIO_TOKENS_PER_S)
        history.text += len(text) // CHARS_PER_TOKEN


class _Vad:
    """Energy VAD on the appended μ-law audio, in audio time."""

    def __init__(self) -> None:
        self.audio_ms = 0.0
        self.start_ms = 0
        self.end_ms = 0
        self._quiet_since: float | None = None
        self._speaking = False
        self._item: str | None = None
        self._items = 0

    def item(self, s: FakeSession) -> str:
        if self._item is None:
            self._items += 1
            self._item = f"user_{s.index}_{self._items}"
        return self._item

    def reset(self) -> None:
        self._speaking, self._quiet_since, self._item = False, None, None

    def feed(self, audio: bytes) -> str | None:
        loud = bool(len(audio)) and int(np.abs(ulaw_decode(audio).astype(np.int32)).max()) > SPEECH_LEVEL
        at = self.audio_ms
        self.audio_ms += len(audio) / 8
        if not self._speaking:
            if loud:
                self._speaking, self.start_ms, self._quiet_since = True, int(at), None
                return "started"
            return None
        if loud:
            self._quiet_since = None
        elif self._quiet_since is None:
            self._quiet_since = at
        elif self.audio_ms - self._quiet_since >= VAD_SILENCE_MS:
            self.end_ms = int(self._quiet_since)
            return "stopped"
        return None


class PatientCaller(Caller):
    """The phone's caller (`CallerPlan`), who asks again after `REASK_S` without an answer instead of
    waiting for ever (an utterance lost in a session switch would otherwise end the conversation)."""

    reasked = 0

    def _listen(self, agent_audible: bool) -> None:
        super()._listen(agent_audible)
        more = self._next < len(self.plan.utterances)
        if self.state is CallerState.LISTENING and more and not self._heard_agent and self._quiet_ms >= REASK_S * 1000:
            self.state = CallerState.SPEAKING
            self.reasked += 1


# --- one call ----------------------------------------------------------------------------------


@dataclass
class Run:
    mode: str
    report: CallReport
    model: Model
    sessions: int
    metrics: dict[str, float]
    wall_s: float
    reasked: int


def _metrics(text: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("voice_bridge_session_") or sample.name == "voice_bridge_dropped_frames_total":
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                found[f"{sample.name}{{{labels}}}"] = sample.value
    return found


def _get(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return str(response.read().decode())


async def run_call(minutes: float, speed: float, cap_minutes: float, budget: int, rollover: bool) -> Run:
    clock = scaled_clock(speed)
    model = Model(clock, cap_minutes * 60, speed)
    started = time.monotonic()
    async with FakeRealtime(model.script, record=False, abort_open_on_close=True) as fake:
        settings = Settings(
            twilio_auth_token=AUTH_TOKEN,
            upstream="openai",
            openai_api_key=KEY,
            upstream_url=f"{fake.url}?model=gpt-realtime",
            audio="g711",  # type: ignore[arg-type]
            prewarm=False,
            rollover_seconds=round(max(cap_minutes * 60 - 120, cap_minutes * 54)) if rollover else 0,
            rollover_input_tokens=budget if rollover else 0,
        )
        settings.validate()
        async with served_bridge(settings, clock=clock) as bridge:
            assert bridge.url is not None
            plan = CallerPlan(utterances=(QUESTION,) * 5000, pause_s=0.8, max_call_s=minutes * 60)

            def on_start() -> None:
                model.start = clock()

            caller = PatientCaller(plan)
            report = await place_call(
                bridge.url, auth_token=AUTH_TOKEN, speed=speed, playout_step_ms=20, caller=caller, on_start=on_start
            )
            await asyncio.sleep(0.5)
            metrics = _metrics(await asyncio.to_thread(_get, bridge.url + "/metrics"))
        sessions = fake.accepted
    mode = "rollover" if rollover else "no rollover"
    return Run(mode, report, model, sessions, metrics, time.monotonic() - started, caller.reasked)


# --- what the phone heard ----------------------------------------------------------------------


def segments(loud: np.ndarray, bridge_frames: int) -> list[tuple[int, int]]:
    """Runs of loud frames (start, end exclusive), joining runs apart by less than `bridge_frames`."""
    out: list[tuple[int, int]] = []
    for i in np.flatnonzero(loud):
        if out and i - out[-1][1] < bridge_frames:
            out[-1] = (out[-1][0], int(i) + 1)
        else:
            out.append((int(i), int(i) + 1))
    return out


def heard_turns(report: CallReport) -> list[dict[str, Any]]:
    """Per caller utterance (1-based n): the delay to the answer the phone played, the answer's
    longest inner silence beyond its clip's own longest pause, and whether it was heard whole."""
    caller = segments(loud_frames(report.caller_audio, SPEECH_LEVEL), VAD_SILENCE_MS // 20)
    agent = loud_frames(report.agent_audio, HEARD_LEVEL)
    own = [own_pause_ms(pcm) for pcm, _ in ANSWERS]
    spans = [int(np.ptp(np.flatnonzero(loud_frames(pcm, HEARD_LEVEL)))) + 1 for pcm, _ in ANSWERS]
    turns = []
    for k, (_, end) in enumerate(caller[:-1], start=1):  # the last: the caller hangs up during it
        until = caller[k][0] if k < len(caller) else len(agent)
        heard = np.flatnonzero(agent[end:until])
        if heard.size == 0:
            turns.append({"n": k, "end_s": end * 0.02, "answered": False})
            continue
        first, last = end + int(heard[0]), end + int(heard[-1])
        gap_ms = longest_run(~agent[first : last + 1]) * 20
        turns.append(
            {
                "n": k,
                "end_s": end * 0.02,
                "answered": True,
                "delay_ms": (first - end) * 20,
                "gap_beyond_own_ms": max(0, gap_ms - own[k % len(ANSWERS)]),
                "whole": last - first + 1 >= spans[k % len(ANSWERS)] - 2,
            }
        )
    return turns


def summarise(run: Run) -> dict[str, Any]:
    model, report = run.model, run.report
    responses = model.responses
    turns = heard_turns(report)
    # the phone's turn whose utterance ended last before each new session's first response
    switched = [r.at_s for prev, r in zip(responses, responses[1:], strict=False) if r.session != prev.session]
    after = [max((t for t in turns if t["end_s"] <= at + 1.0), key=lambda t: t["end_s"]) for at in switched]
    answered = [t for t in turns if t["answered"]]
    delays = [t["delay_ms"] for t in answered]
    counts = {
        ("input", "text"): sum(r.text_in for r in responses),
        ("input", "audio"): sum(r.audio_in for r in responses),
        ("output", "audio"): sum(r.output_tokens for r in responses),  # audio and text, priced as audio (an upper bound)
    }
    last_30 = [r.input_tokens for r in responses if r.at_s >= report.call_s - 1800]
    m = run.metrics
    rollovers = {k.split("{")[1].rstrip("}"): v for k, v in m.items() if k.startswith("voice_bridge_session_rollovers_total")}
    return {
        "mode": run.mode,
        "call_min": round(report.call_s / 60, 1),
        "ended_by": report.ended_by,
        "sessions": run.sessions,
        "rollovers_quiet": int(sum(v for k, v in rollovers.items() if "quiet=true" in k)),
        "rollovers_forced": int(sum(v for k, v in rollovers.items() if "quiet=false" in k)),
        "replacements": int(m.get("voice_bridge_session_replacements_total{result=ok}", 0)),
        "expired_by_model": model.expired,
        "utterances": report.utterances_said,
        "answered": report.answers_heard,
        "reasked": run.reasked,
        "responses": len(responses),
        "summaries": model.summaries,
        "last_response_min": round(responses[-1].at_s / 60, 1),
        "input_tokens_per_response_max": max(r.input_tokens for r in responses),
        "input_tokens_per_response_last30min_mean": round(statistics.fmean(last_30)) if last_30 else None,
        "input_tokens_total": sum(r.input_tokens for r in responses),
        "output_tokens_total": sum(r.output_tokens for r in responses),
        "total_tokens": sum(r.input_tokens + r.output_tokens for r in responses),
        "cost_estimate_usd": round(cost_estimate(counts, PRICE), 2),
        "caller_audio_sent_s": round(report.call_s, 1),
        "caller_audio_at_models_s": round(sum(model.heard_audio_s), 1),
        "dropped_frames": {k.split("{")[1].rstrip("}"): v for k, v in m.items() if "dropped_frames" in k},
        "switches": len(switched),
        "after_switch_gap_beyond_own_ms_max": max((t.get("gap_beyond_own_ms", 0) for t in after), default=None),
        "after_switch_delay_ms_max": max((t["delay_ms"] for t in after if t["answered"]), default=None),
        "after_switch_unanswered": sum(not t["answered"] for t in after),
        "answers_cut": sum(not t["whole"] for t in answered),
        "gap_beyond_own_ms_max_all": max((t["gap_beyond_own_ms"] for t in answered), default=None),
        "delay_ms_median": statistics.median(delays) if delays else None,
        "delay_ms_p95": round(float(np.percentile(delays, 95))) if delays else None,
        "wall_s": round(run.wall_s, 1),
    }


ROWS = [
    ("call length (min)", "call_min"),
    ("model sessions", "sessions"),
    ("rollovers quiet / forced", ("rollovers_quiet", "rollovers_forced")),
    ("sessions expired by the model / replaced", ("expired_by_model", "replacements")),
    ("caller utterances / answered / asked again after 6 s of silence", ("utterances", "answered", "reasked")),
    ("last response of the model (min)", "last_response_min"),
    ("input tokens per response, max", "input_tokens_per_response_max"),
    ("input tokens per response, mean of the last 30 min", "input_tokens_per_response_last30min_mean"),
    ("out-of-band summaries (billed, never played)", "summaries"),
    ("input tokens, total", "input_tokens_total"),
    ("output tokens, total", "output_tokens_total"),
    ("estimated cost, gpt-realtime prices (USD)", "cost_estimate_usd"),
    ("caller audio sent / reaching a model (s)", ("caller_audio_sent_s", "caller_audio_at_models_s")),
    ("answers cut short", "answers_cut"),
    ("after a switch: longest gap beyond the model's own pause (ms)", "after_switch_gap_beyond_own_ms_max"),
    ("after a switch: longest answer delay (ms)", "after_switch_delay_ms_max"),
    ("answer delay (ms), median / p95 of the call", ("delay_ms_median", "delay_ms_p95")),
    ("wall time (s)", "wall_s"),
]


def table(results: list[dict[str, Any]]) -> str:
    def cell(r: dict[str, Any], key: str | tuple[str, ...]) -> str:
        return " / ".join(str(r[k]) for k in key) if isinstance(key, tuple) else str(r[key])

    lines = ["| | " + " | ".join(r["mode"] for r in results) + " |", "|---|" + "---:|" * len(results)]
    lines += [f"| {name} | " + " | ".join(cell(r, key) for r in results) + " |" for name, key in ROWS]
    return "\n".join(lines)


def plot(runs: list[Run], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (per, total) = plt.subplots(2, 1, figsize=(7.5, 5.5), sharex=True)
    for run in runs:
        minutes = [r.at_s / 60 for r in run.model.responses]
        per.plot(minutes, [r.input_tokens for r in run.model.responses], label=run.mode, linewidth=1)
        total.plot(minutes, np.cumsum([r.input_tokens + r.output_tokens for r in run.model.responses]), label=run.mode)
    per.set_ylabel("input tokens per response")
    total.set_ylabel("tokens so far")
    total.set_xlabel("call time (min)")
    per.legend(loc="upper left")
    per.set_title("A 90-minute call, sessions capped at 30 min: input tokens re-read per response", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=70)


async def main_async(args: argparse.Namespace) -> list[Run]:
    from bridge.logs import configure_logging

    configure_logging("console", "error")  # the bridge logs every turn at info
    calls = [run_call(args.minutes, args.speed, args.cap_minutes, args.budget, rollover) for rollover in (False, True)]
    if args.sequential:
        return [await call for call in calls]
    return list(await asyncio.gather(*calls))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=90.0, help="call length (simulated minutes)")
    parser.add_argument("--speed", type=float, default=60.0, help="how much faster than real time")
    parser.add_argument("--cap-minutes", type=float, default=30.0, help="the model's session cap")
    parser.add_argument("--budget", type=int, default=6000, help="VOICE_BRIDGE_ROLLOVER_INPUT_TOKENS of the rollover run")
    parser.add_argument("--sequential", action="store_true", help="one call after the other (default: both at once)")
    parser.add_argument("--plot", default=str(ROOT / "benchmarks" / "rollover.png"), help="PNG path ('' skips)")
    args = parser.parse_args()
    runs = asyncio.run(main_async(args))
    results = [summarise(run) for run in runs]
    print(table(results))
    print(json.dumps({"benchmark": "rollover", "speed": args.speed, "budget": args.budget, "runs": results}))
    if args.plot:
        plot(runs, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
