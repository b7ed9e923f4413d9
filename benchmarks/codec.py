"""Codec hot path: our transcoders against soxr's stream (VHQ, HQ) and stateful linear interpolation.

    .venv/bin/python benchmarks/codec.py

For each implementation and direction (caller_to_model = μ-law 8 kHz → PCM16 24 kHz,
model_to_caller = PCM16 24 kHz → μ-law 8 kHz), with 20 ms frames:

- latency_ms_mean / latency_ms_max: held-back audio after each frame of real speech, i.e. the
  output the input so far calls for minus the output given, in ms at the output rate. Counted
  here from the bytes, the same way for every implementation.
- rejection_db: worst case over test tones, through the whole transcoder (G.711 included).
  caller_to_model: image power (>= 4.5 kHz) under the tone, for μ-law tones 300 Hz–3.4 kHz.
  model_to_caller: everything that comes out, under the tone's power, for tones 4.5–11 kHz.
  Tones at -1 dBFS. rejection_db_pcm: the same at the resampler stage, 16-bit in and out.
- passband_ripple_db: largest gain error, in dB, for tones 300 Hz–3.4 kHz at -6 dBFS.
- us_per_frame: CPU time of process() per 20 ms frame, G.711 included; the minimum over
  repeats (the runs are interleaved, so all implementations see the same machine load).

Then the latency / quality trade-off of the filter settings that were tried, and one JSON line.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soxr
from machine import cpu_model
from voice_codecs import (
    CallerToModel,
    Downsampler,
    LowpassSpec,
    ModelToCaller,
    Upsampler,
    ulaw_decode,
    ulaw_encode,
)

AUDIO = Path(__file__).resolve().parent.parent / "fixtures" / "audio"
LOW, HIGH = 8000, 24000
FRAME_LOW, FRAME_HIGH = 160, 480  # samples in 20 ms
CPU_REPEATS = 9
TONE_SECONDS = 0.25
DIRECTIONS = ("caller_to_model", "model_to_caller")

# --- implementations: each gives a resampler stage (int16 → int16) --------------------------


class LinearStage:
    """Stateful linear interpolation, as audioop.ratecv does it: the output at input position p
    mixes x[floor(p)] and x[floor(p)+1], starting one input sample late (at the last sample of
    the previous chunk), so nothing is held back and nothing is filtered."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate, self.out_rate = in_rate, out_rate
        self.reset()

    def process(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        if not n:
            return np.zeros(0, dtype=np.int16)
        signal = np.empty(n + 1, dtype=np.float64)
        signal[0] = self._prev
        signal[1:] = x
        # Positions in units of 1/out_rate input samples, kept as integers: no drift.
        ticks = np.arange(self._tick, n * self.out_rate, self.in_rate)
        index, remainder = np.divmod(ticks, self.out_rate)
        frac = remainder / self.out_rate
        y = signal[index] * (1 - frac) + signal[index + 1] * frac
        self._tick = (ticks[-1] + self.in_rate - n * self.out_rate) if len(ticks) else self._tick - n * self.out_rate
        self._prev = float(x[-1])
        return np.clip(np.rint(y), -32768, 32767).astype(np.int16)

    def flush(self) -> np.ndarray:
        self.reset()
        return np.zeros(0, dtype=np.int16)

    def reset(self) -> None:
        self._prev, self._tick = 0.0, 0


class SoxrStage:
    def __init__(self, in_rate: int, out_rate: int, quality: str) -> None:
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)

    def process(self, x: np.ndarray) -> np.ndarray:
        return self._stream.resample_chunk(x)

    def flush(self) -> np.ndarray:
        out = self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        self._stream.clear()
        return out


class OurStage:
    """Our resamplers with the rounding the transcoders do, for the 16-bit stage measurements."""

    def __init__(self, resampler: Upsampler | Downsampler) -> None:
        self._resampler = resampler

    @staticmethod
    def _round(y: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(y), -32768, 32767).astype(np.int16)

    def process(self, x: np.ndarray) -> np.ndarray:
        return self._round(self._resampler.process(x))

    def flush(self) -> np.ndarray:
        return self._round(self._resampler.flush())


class StageUp:
    """μ-law → stage → PCM16, the way the bridge would wrap a stage without our transcoders."""

    def __init__(self, stage) -> None:
        self.stage = stage

    def process(self, chunk: bytes) -> bytes:
        return self.stage.process(ulaw_decode(chunk)).tobytes()

    def flush(self) -> bytes:
        return self.stage.flush().tobytes()


class StageDown:
    def __init__(self, stage) -> None:
        self.stage = stage

    def process(self, chunk: bytes) -> bytes:
        return ulaw_encode(self.stage.process(np.frombuffer(chunk, dtype="<i2")))

    def flush(self) -> bytes:
        return ulaw_encode(self.stage.flush())


class Implementation:
    def __init__(self, name: str, up_stage, down_stage, up_full=None, down_full=None) -> None:
        self.name = name
        self.up_stage: Callable = up_stage
        self.down_stage: Callable = down_stage
        self.up_full: Callable = up_full or (lambda: StageUp(up_stage()))
        self.down_full: Callable = down_full or (lambda: StageDown(down_stage()))


def ours(spec: LowpassSpec | None = None, name: str = "voice_bridge") -> Implementation:
    spec = spec or LowpassSpec()
    return Implementation(
        name,
        lambda: OurStage(Upsampler(spec)),
        lambda: OurStage(Downsampler(spec)),
        lambda: CallerToModel(spec),
        lambda: ModelToCaller(spec),
    )


IMPLEMENTATIONS = [
    ours(),
    Implementation("soxr_stream_vhq", lambda: SoxrStage(LOW, HIGH, "VHQ"), lambda: SoxrStage(HIGH, LOW, "VHQ")),
    Implementation("soxr_stream_hq", lambda: SoxrStage(LOW, HIGH, "HQ"), lambda: SoxrStage(HIGH, LOW, "HQ")),
    Implementation("linear_ratecv", lambda: LinearStage(LOW, HIGH), lambda: LinearStage(HIGH, LOW)),
]

# --- inputs ---------------------------------------------------------------------------------


def read_wav(name: str) -> np.ndarray:
    with wave.open(str(AUDIO / name), "rb") as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")


def speech_frames() -> tuple[list[bytes], list[bytes]]:
    """20 ms frames of real speech: μ-law 8 kHz (caller) and PCM16 24 kHz (agent)."""
    caller = ulaw_encode(np.concatenate([read_wav("caller_question.wav"), read_wav("caller_interrupt.wav")]))
    agent = np.concatenate([read_wav("agent_answer_hours.wav"), read_wav("agent_answer_order.wav")]).tobytes()
    low = [caller[i : i + FRAME_LOW] for i in range(0, len(caller) - FRAME_LOW + 1, FRAME_LOW)]
    high = [agent[i : i + 2 * FRAME_HIGH] for i in range(0, len(agent) - 2 * FRAME_HIGH + 1, 2 * FRAME_HIGH)]
    return low, high


def tone(freq: float, rate: int, amplitude: float) -> np.ndarray:
    t = np.arange(int(rate * TONE_SECONDS)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def steady(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)[len(x) // 4 : 3 * len(x) // 4]


def level(x: np.ndarray, freq: float, rate: int) -> float:
    """Amplitude of `freq` in the steady middle of x (Hann-windowed single-bin DFT)."""
    mid = steady(x)
    window = np.hanning(len(mid))
    t = np.arange(len(mid)) / rate
    return float(2 * np.abs(np.sum(mid * window * np.exp(-2j * np.pi * freq * t))) / window.sum())


def db(ratio: float) -> float:
    return float(10 * np.log10(max(ratio, 1e-15)))  # power ratio; floor at -150 dB (silence)


# --- measurements ----------------------------------------------------------------------------


def run(transcoder, data, chunk: int):
    parts = [transcoder.process(data[i : i + chunk]) for i in range(0, len(data), chunk)]
    parts.append(transcoder.flush())
    return b"".join(parts) if isinstance(data, bytes) else np.concatenate(parts)


def latency(make, frames: list[bytes], in_per_frame: int, ratio: float, out_rate: int, out_width: int):
    transcoder = make()
    fed = given = 0
    held = []
    for frame in frames:
        given += len(transcoder.process(frame)) // out_width
        fed += in_per_frame
        held.append((fed * ratio - given) / out_rate * 1000)
    return float(np.mean(held)), float(np.max(held))


FULL_SCALE, HALF_SCALE = 29000.0, 16384.0
# Off the 100 Hz grid (but ending exactly on 300 Hz and 3.4 kHz): a tone whose period is a few
# samples makes the G.711 error periodic and biases the measured level by up to 0.2 dB.
PASS_TONES = np.array([300.0, *np.arange(317.0, 3400.0, 100.0), 3400.0])
ALIAS_TONES = np.arange(4500.0, 11001.0, 100.0)


def image_rejection(make, ulaw_in: bool) -> float:
    worst = -np.inf
    for freq in PASS_TONES:
        x = tone(freq, LOW, FULL_SCALE)
        if ulaw_in:
            out = np.frombuffer(run(make(), ulaw_encode(x), FRAME_LOW), dtype="<i2")
        else:
            out = run(make(), x, FRAME_LOW)
        mid = steady(out) * np.hanning(len(steady(out)))
        power = np.abs(np.fft.rfft(mid)) ** 2
        freqs = np.fft.rfftfreq(len(mid), 1 / HIGH)
        worst = max(worst, db(power[freqs >= 4500].sum() / power[np.abs(freqs - freq) < 100].sum()))
    return -worst


def alias_rejection(make, ulaw_out: bool) -> float:
    worst = -np.inf
    for freq in ALIAS_TONES:
        x = tone(freq, HIGH, FULL_SCALE)
        if ulaw_out:
            out = ulaw_decode(run(make(), x.tobytes(), 2 * FRAME_HIGH))
        else:
            out = run(make(), x, FRAME_HIGH)
        worst = max(worst, db(np.mean(steady(out) ** 2) / (FULL_SCALE**2 / 2)))
    return -worst


def passband_ripple(impl: Implementation) -> tuple[float, float]:
    up = down = 0.0
    for freq in PASS_TONES:
        x = tone(freq, LOW, HALF_SCALE)
        sent = ulaw_encode(x)
        out = np.frombuffer(run(impl.up_full(), sent, FRAME_LOW), dtype="<i2")
        gain = level(out, freq, HIGH) / level(ulaw_decode(sent), freq, LOW)
        up = max(up, abs(20 * np.log10(gain)))
        x = tone(freq, HIGH, HALF_SCALE)
        out = ulaw_decode(run(impl.down_full(), x.tobytes(), 2 * FRAME_HIGH))
        down = max(down, abs(20 * np.log10(level(out, freq, LOW) / level(x, freq, HIGH))))
    return up, down


def round_trip_snr(impl: Implementation) -> float:
    """Worst μ-law → 24 kHz → μ-law SNR over the speech fixtures (aligned for constant delay)."""
    worst = np.inf
    for path in sorted(AUDIO.glob("*.wav")):
        samples = read_wav(path.name)
        if path.name.startswith("caller"):
            ulaw = ulaw_encode(samples)
        else:  # a model clip: start from what the caller would hear of it
            ulaw = run(impl.down_full(), samples.tobytes(), 2 * FRAME_HIGH)
        back = run(impl.down_full(), run(impl.up_full(), ulaw, FRAME_LOW), 2 * FRAME_HIGH)
        ref, out = ulaw_decode(ulaw).astype(np.float64), ulaw_decode(back).astype(np.float64)
        n = min(len(ref), len(out))
        span = 40
        lag = max(range(0, span), key=lambda k: np.dot(ref[span : n - span], out[span + k : n - span + k]))
        aligned = out[lag : lag + n - span]
        ref = ref[: len(aligned)]
        worst = min(worst, 10 * np.log10(np.sum(ref**2) / np.sum((ref - aligned) ** 2)))
    return float(worst)


def cpu(impls: list[Implementation], low: list[bytes], high: list[bytes]) -> dict[tuple[str, str], float]:
    best: dict[tuple[str, str], float] = {}
    objects = {
        (impl.name, direction): impl.up_full() if direction == "caller_to_model" else impl.down_full()
        for impl in impls
        for direction in DIRECTIONS
    }
    for _ in range(CPU_REPEATS):
        for (name, direction), transcoder in objects.items():
            frames = low if direction == "caller_to_model" else high
            process = transcoder.process
            start = time.perf_counter()
            for frame in frames:
                process(frame)
            elapsed = (time.perf_counter() - start) / len(frames) * 1e6
            transcoder.flush()
            best[(name, direction)] = min(best.get((name, direction), np.inf), elapsed)
    return best


def measure(impl: Implementation, low: list[bytes], high: list[bytes]) -> dict:
    up_ripple, down_ripple = passband_ripple(impl)
    up_lat = latency(impl.up_full, low, FRAME_LOW, HIGH / LOW, HIGH, 2)
    down_lat = latency(impl.down_full, high, FRAME_HIGH, LOW / HIGH, LOW, 1)
    result = {
        "caller_to_model": {
            "latency_ms_mean": up_lat[0],
            "latency_ms_max": up_lat[1],
            "rejection_db": image_rejection(impl.up_full, ulaw_in=True),
            "passband_ripple_db": up_ripple,
        },
        "model_to_caller": {
            "latency_ms_mean": down_lat[0],
            "latency_ms_max": down_lat[1],
            "rejection_db": alias_rejection(impl.down_full, ulaw_out=True),
            "passband_ripple_db": down_ripple,
        },
    }
    result["caller_to_model"]["rejection_db_pcm"] = image_rejection(impl.up_stage, ulaw_in=False)
    result["model_to_caller"]["rejection_db_pcm"] = alias_rejection(impl.down_stage, ulaw_out=False)
    return result


# --- the filter settings tried ---------------------------------------------------------------

TRADEOFFS: list[tuple[str, LowpassSpec]] = [
    ("sinc 4.05k, ±36 taps, β4.2", LowpassSpec(half_width=36, kaiser_beta=4.2)),
    ("sinc 4.05k, ±48 taps, β5.6", LowpassSpec(half_width=48, kaiser_beta=5.6)),
    ("sinc 4.00k, ±48 taps, β6.3", LowpassSpec(half_width=48, kaiser_beta=6.3, cutoff=1.0)),
    ("sinc 4.00k, ±60 taps, β7.8", LowpassSpec(half_width=60, kaiser_beta=7.8, cutoff=1.0)),
    ("sinc 4.05k, ±60 taps, β7.0 (default)", LowpassSpec()),
    ("sinc 4.10k, ±60 taps, β6.2", LowpassSpec(half_width=60, kaiser_beta=6.2, cutoff=1.025)),
    ("sinc 4.05k, ±72 taps, β8.5", LowpassSpec(half_width=72, kaiser_beta=8.5)),
    ("sinc 4.05k, ±96 taps, β11.3", LowpassSpec(half_width=96, kaiser_beta=11.3)),
    ("sinc 4.05k, ±120 taps, β13.9", LowpassSpec(half_width=120, kaiser_beta=13.9)),
    ("soxr MQ cut to ±60, β9.1", LowpassSpec(source="MQ", kaiser_beta=9.1)),
    ("soxr HQ cut to ±60, β9.2", LowpassSpec(source="HQ", kaiser_beta=9.2)),
    ("soxr VHQ cut to ±60, β9.1", LowpassSpec(source="VHQ", kaiser_beta=9.1)),
    ("soxr VHQ cut to ±120, β13.9", LowpassSpec(source="VHQ", half_width=120, kaiser_beta=13.9)),
]


# --- output ----------------------------------------------------------------------------------


def machine() -> str:
    return (
        f"{cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}, numpy {np.__version__}, "
        f"soxr {soxr.__version__}, {platform.system()} {platform.release()}"
    )


def print_comparison(results: dict, round_trips: dict[str, float]) -> None:
    header = (
        f"{'implementation':<17} {'direction':<16} {'latency ms mean/max':>20} {'rejection dB':>13} "
        f"{'(16-bit)':>9} {'ripple dB':>10} {'µs/frame':>9} {'round trip SNR dB':>18}"
    )
    print(header)
    print("-" * len(header))
    for name, by_direction in results.items():
        for direction, m in by_direction.items():
            print(
                f"{name:<17} {direction:<16} {m['latency_ms_mean']:>10.2f} / {m['latency_ms_max']:<7.2f} "
                f"{m['rejection_db']:>13.1f} {m['rejection_db_pcm']:>9.1f} {m['passband_ripple_db']:>10.3f} "
                f"{m['us_per_frame']:>9.1f} {round_trips[name]:>18.1f}"
            )
    ours_result = results["voice_bridge"].values()
    checks = {
        "latency <= 5 ms at every frame": all(m["latency_ms_max"] <= 5 for m in ours_result),
        "stretch: <= 3 ms": all(m["latency_ms_max"] <= 3 for m in ours_result),
        "rejection >= 60 dB": all(m["rejection_db"] >= 60 for m in ours_result),
        "ripple <= 0.5 dB": all(m["passband_ripple_db"] <= 0.5 for m in ours_result),
        "CPU <= 25 µs/frame": all(m["us_per_frame"] <= 25 for m in ours_result),
        "round trip >= 35 dB": round_trips["voice_bridge"] >= 35,
    }
    print("\nvoice_bridge targets: " + ", ".join(f"{k}: {'ok' if v else 'MISSED'}" for k, v in checks.items()))


def print_tradeoffs(low: list[bytes], high: list[bytes]) -> None:
    print("\nfilter settings tried (our transcoders; latency is the same both ways and at every frame;")
    print("rejection at the 16-bit stage, since through G.711 anything below ~-75 dB rounds to silence):")
    header = (
        f"{'setting':<38} {'latency ms':>10} {'rejection dB up/down':>21} {'ripple dB':>10} "
        f"{'round trip SNR dB':>18} {'µs/frame up/down':>17}"
    )
    print(header)
    print("-" * len(header))
    impls = [ours(spec, label) for label, spec in TRADEOFFS]
    speeds = cpu(impls, low, high)
    for impl in impls:
        m = measure(impl, low, high)
        up, down = m["caller_to_model"], m["model_to_caller"]
        ripple = max(up["passband_ripple_db"], down["passband_ripple_db"])
        rejection = f"{up['rejection_db_pcm']:>10.1f} / {down['rejection_db_pcm']:<8.1f}"
        cpu_up, cpu_down = speeds[(impl.name, "caller_to_model")], speeds[(impl.name, "model_to_caller")]
        print(
            f"{impl.name:<38} {up['latency_ms_max']:>10.2f} {rejection} {ripple:>10.3f} "
            f"{round_trip_snr(impl):>18.1f} {cpu_up:>8.1f} / {cpu_down:<7.1f}"
        )


def main() -> None:
    started = time.perf_counter()
    low, high = speech_frames()
    print(f"machine: {machine()}")
    print(f"input: {len(low)} caller frames, {len(high)} agent frames of 20 ms\n")

    results = {impl.name: measure(impl, low, high) for impl in IMPLEMENTATIONS}
    speeds = cpu(IMPLEMENTATIONS, low, high)
    for impl in IMPLEMENTATIONS:
        for direction in DIRECTIONS:
            results[impl.name][direction]["us_per_frame"] = speeds[(impl.name, direction)]
    round_trips = {impl.name: round_trip_snr(impl) for impl in IMPLEMENTATIONS}

    print_comparison(results, round_trips)
    print_tradeoffs(low, high)
    print(f"\n(ran in {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    print(json.dumps(results, sort_keys=True))


if __name__ == "__main__":
    main()
