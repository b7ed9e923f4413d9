"""Streaming transcoders: latency accounting, chunking, flush/reset, quality against soxr.

Behaviour only; speed lives in benchmarks/codec.py.
"""

from __future__ import annotations

import random
import wave
from pathlib import Path

import numpy as np
import pytest
import soxr

from voice_codecs import (
    MODEL_RATE,
    TWILIO_RATE,
    CallerToModel,
    Downsampler,
    LowpassSpec,
    ModelToCaller,
    Passthrough,
    Upsampler,
    lowpass_taps,
    make_transcoders,
    ulaw_decode,
    ulaw_encode,
)

AUDIO = Path(__file__).resolve().parent.parent / "fixtures" / "audio"
FRAME_8K = 160  # 20 ms of μ-law at 8 kHz: 160 bytes
FRAME_24K = 480  # 20 ms of PCM16 at 24 kHz: 960 bytes


def read_wav(name: str) -> tuple[np.ndarray, int]:
    with wave.open(str(AUDIO / name), "rb") as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2"), wav.getframerate()


def caller_ulaw() -> bytes:
    samples, rate = read_wav("caller_question.wav")
    assert rate == TWILIO_RATE
    return ulaw_encode(samples)


def agent_pcm() -> bytes:
    samples, rate = read_wav("agent_greeting.wav")
    assert rate == MODEL_RATE
    return samples.tobytes()


def feed(transcoder, data: bytes, sizes) -> list[bytes]:
    """Feed `data` in chunks of the given sizes (cycled), then flush; the outputs in order."""
    outputs, position, sizes = [], 0, list(sizes)
    index = 0
    while position < len(data):
        size = sizes[index % len(sizes)]
        index += 1
        outputs.append(transcoder.process(data[position : position + size]))
        position += size
    outputs.append(transcoder.flush())
    return outputs


def random_sizes(seed: int, largest: int) -> list[int]:
    rng = random.Random(seed)
    sizes = [rng.choice([0, 1, 2, 3, rng.randrange(0, largest), rng.randrange(0, 4 * largest)]) for _ in range(400)]
    return [*sizes, 7, 0, 1, 999, 0, 5]  # odd byte counts and empty chunks for sure


def pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.int64)


ULAW_LEVELS = np.unique(ulaw_decode(bytes(range(256))))


def ulaw_level(data: bytes) -> np.ndarray:
    """Rank of each code's value among μ-law's levels: one apart = one quantisation step."""
    return np.searchsorted(ULAW_LEVELS, ulaw_decode(data)).astype(np.int64)


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    error = reference - test.astype(np.float64)
    return float(10 * np.log10(np.sum(reference**2) / np.sum(error**2)))


def band_snr_db(reference: np.ndarray, test: np.ndarray, rate: int, high_hz: float) -> float:
    """SNR of `test` against `reference` counting only the spectrum below `high_hz`."""
    ref = np.fft.rfft(reference.astype(np.float64))
    err = ref - np.fft.rfft(test.astype(np.float64))
    band = np.fft.rfftfreq(len(reference), 1 / rate) <= high_hz
    return float(10 * np.log10(np.sum(np.abs(ref[band]) ** 2) / np.sum(np.abs(err[band]) ** 2)))


def tone(freq: float, rate: int, seconds: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


# --- latency: a constant few milliseconds, at every frame ----------------------------------


def test_caller_to_model_holds_back_a_constant_few_ms_per_20ms_frame() -> None:
    transcoder, data = CallerToModel(), caller_ulaw()
    assert 0 < transcoder.delay_samples <= 5 * MODEL_RATE // 1000
    for start in range(0, len(data) - FRAME_8K + 1, FRAME_8K):
        out = transcoder.process(data[start : start + FRAME_8K])
        if start:  # from the second frame on, every frame gives exactly one frame out
            assert len(out) == 2 * 3 * FRAME_8K
        assert transcoder.held_back_samples == transcoder.delay_samples


def test_model_to_caller_holds_back_a_constant_few_ms_per_20ms_frame() -> None:
    transcoder, data = ModelToCaller(), agent_pcm()
    assert 0 < transcoder.delay_samples <= 5 * TWILIO_RATE // 1000
    for start in range(0, len(data) - 2 * FRAME_24K + 1, 2 * FRAME_24K):
        out = transcoder.process(data[start : start + 2 * FRAME_24K])
        if start:
            assert len(out) == FRAME_24K // 3
        assert transcoder.held_back_samples == transcoder.delay_samples


def test_both_directions_add_the_same_latency() -> None:
    up, down = CallerToModel(), ModelToCaller()
    assert up.delay_samples / MODEL_RATE == down.delay_samples / TWILIO_RATE


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_held_back_samples_is_expected_output_minus_output_given(seed: int) -> None:
    rng = random.Random(seed)
    up, down = CallerToModel(), ModelToCaller()
    ulaw, pcm_bytes = caller_ulaw(), agent_pcm()
    given_up = given_down = fed_up = fed_down_bytes = 0
    for _ in range(300):
        size = rng.randrange(0, 700)
        chunk = ulaw[fed_up : fed_up + size]
        fed_up += len(chunk)
        given_up += len(up.process(chunk)) // 2
        assert up.held_back_samples == 3 * fed_up - given_up

        chunk = pcm_bytes[fed_down_bytes : fed_down_bytes + size]
        fed_down_bytes += len(chunk)
        given_down += len(down.process(chunk))
        whole_samples = fed_down_bytes // 2  # an odd trailing byte is not a sample yet
        assert down.held_back_samples == -(-whole_samples // 3) - given_down


# --- chunking: any chunk sizes give the same audio ------------------------------------------


@pytest.mark.parametrize("seed", [11, 12])
def test_caller_to_model_is_chunk_size_invariant(seed: int) -> None:
    data = caller_ulaw()
    framed = b"".join(feed(CallerToModel(), data, [FRAME_8K]))
    chunked = b"".join(feed(CallerToModel(), data, random_sizes(seed, FRAME_8K)))
    assert len(framed) == len(chunked) == 2 * 3 * len(data)
    assert np.abs(pcm(framed) - pcm(chunked)).max() <= 1


@pytest.mark.parametrize("seed", [21, 22])
def test_model_to_caller_is_chunk_size_invariant_including_odd_byte_counts(seed: int) -> None:
    data = agent_pcm()
    framed = b"".join(feed(ModelToCaller(), data, [2 * FRAME_24K]))
    chunked = b"".join(feed(ModelToCaller(), data, random_sizes(seed, 2 * FRAME_24K)))
    assert len(framed) == len(chunked) == -(-len(data) // 2 // 3)
    assert np.abs(ulaw_level(framed) - ulaw_level(chunked)).max() <= 1


def test_odd_byte_is_carried_to_the_next_chunk() -> None:
    samples = np.arange(-3000, 3000, 7, dtype=np.int16).tobytes()
    whole = ModelToCaller()
    expected = whole.process(samples) + whole.flush()
    split = ModelToCaller()
    got = b"".join(split.process(samples[i : i + 1]) for i in range(len(samples))) + split.flush()
    assert np.abs(ulaw_level(got) - ulaw_level(expected)).max() <= 1


# --- the filter itself: exactly a polyphase FIR, with telephone-grade response ---------------


def test_streaming_equals_direct_convolution_with_the_same_taps() -> None:
    taps = lowpass_taps()
    centre = (len(taps) - 1) // 2
    rng = np.random.default_rng(5)
    x = rng.integers(-20000, 20000, 1000).astype(np.int16)

    up = Upsampler()
    got = np.concatenate([up.process(x[i : i + 37]) for i in range(0, len(x), 37)] + [up.flush()])
    stuffed = np.zeros(3 * len(x))
    stuffed[::3] = x
    expected = np.convolve(stuffed, 3 * taps)[centre : centre + 3 * len(x)]
    assert np.abs(got - expected).max() < 0.5  # well inside one LSB

    down = Downsampler()
    y = rng.integers(-20000, 20000, 3001).astype(np.int16)
    got = np.concatenate([down.process(y[i : i + 101]) for i in range(0, len(y), 101)] + [down.flush()])
    expected = np.convolve(y.astype(np.float64), taps)[centre : centre + len(y) : 3]
    assert len(got) == len(expected) == 1001
    assert np.abs(got - expected).max() < 0.5  # well inside one LSB


def test_matches_soxr_one_shot_in_the_telephone_band() -> None:
    speech8, _ = read_wav("caller_question.wav")
    up = Upsampler()
    ours = np.concatenate([up.process(speech8), up.flush()])
    theirs = soxr.resample(speech8.astype(np.float64), TWILIO_RATE, MODEL_RATE, quality="VHQ")
    assert len(ours) == len(theirs)
    assert band_snr_db(theirs, ours, MODEL_RATE, 3400) >= 60
    assert band_snr_db(theirs, ours, MODEL_RATE, 3700) >= 45

    speech24, _ = read_wav("agent_greeting.wav")
    down = Downsampler()
    ours = np.concatenate([down.process(speech24), down.flush()])
    theirs = soxr.resample(speech24.astype(np.float64), MODEL_RATE, TWILIO_RATE, quality="VHQ")
    assert abs(len(ours) - len(theirs)) <= 1
    n = min(len(ours), len(theirs))
    assert band_snr_db(theirs[:n], ours[:n], TWILIO_RATE, 3400) >= 60


def tone_gain_db(freq: float, samples: np.ndarray, rate: int, amplitude: float) -> float:
    """Level of `freq` in `samples` (steady part, Hann window) relative to `amplitude`."""
    steady = samples[len(samples) // 4 : 3 * len(samples) // 4].astype(np.float64)
    window = np.hanning(len(steady))
    t = np.arange(len(steady)) / rate
    level = 2 * np.abs(np.sum(steady * window * np.exp(-2j * np.pi * freq * t))) / window.sum()
    return float(20 * np.log10(max(level, 1e-9) / amplitude))


@pytest.mark.parametrize("freq", [300, 1000, 2000, 3000, 3400])
def test_passband_is_flat_both_ways(freq: float) -> None:
    amplitude = 8000.0
    x8 = tone(freq, TWILIO_RATE, 0.5, amplitude)
    up = Upsampler()
    assert abs(tone_gain_db(freq, np.concatenate([up.process(x8), up.flush()]), MODEL_RATE, amplitude)) < 0.1
    x24 = tone(freq, MODEL_RATE, 0.5, amplitude)
    down = Downsampler()
    assert abs(tone_gain_db(freq, np.concatenate([down.process(x24), down.flush()]), TWILIO_RATE, amplitude)) < 0.1


@pytest.mark.parametrize("freq", [4500, 5000, 6000, 7000, 7900, 8100, 9000, 10000, 11000])
def test_model_to_caller_rejects_aliases(freq: float) -> None:
    amplitude = 29000.0  # -1 dBFS
    x24 = tone(freq, MODEL_RATE, 0.5, amplitude)
    transcoder = ModelToCaller()
    out = ulaw_decode(transcoder.process(x24.tobytes()) + transcoder.flush()).astype(np.float64)
    steady = out[len(out) // 4 : 3 * len(out) // 4]
    power_ratio = np.mean(steady**2) / (amplitude**2 / 2)
    assert power_ratio < 10 ** (-60 / 10)  # everything that comes out at all: >= 60 dB down


@pytest.mark.parametrize("freq", [300, 1000, 2500, 3400])
def test_caller_to_model_rejects_images(freq: float) -> None:
    amplitude = 29000.0
    transcoder = CallerToModel()
    data = ulaw_encode(tone(freq, TWILIO_RATE, 0.5, amplitude))
    out = pcm(transcoder.process(data) + transcoder.flush()).astype(np.float64)
    steady = out[len(out) // 4 : 3 * len(out) // 4]
    steady = steady * np.hanning(len(steady))
    spectrum = np.abs(np.fft.rfft(steady)) ** 2
    freqs = np.fft.rfftfreq(len(steady), 1 / MODEL_RATE)
    images = spectrum[freqs >= 4500].sum() / spectrum.sum()
    assert images < 10 ** (-60 / 10)


# --- round trip on real speech ----------------------------------------------------------------


def best_lag(reference: np.ndarray, test: np.ndarray, span: int = 40) -> int:
    ref, out = reference.astype(np.float64), test.astype(np.float64)
    scores = {lag: np.dot(ref[span:-span], np.roll(out, -lag)[span:-span]) for lag in range(-span, span + 1)}
    return max(scores, key=scores.get)


@pytest.mark.parametrize("name", sorted(p.name for p in AUDIO.glob("*.wav")))
def test_ulaw_round_trip_through_24k_keeps_35_db(name: str) -> None:
    samples, rate = read_wav(name)
    if rate == TWILIO_RATE:
        ulaw = ulaw_encode(samples)
    else:  # a model clip: what the caller hears of it is the μ-law to start from
        to_caller = ModelToCaller()
        ulaw = to_caller.process(samples.tobytes()) + to_caller.flush()
    to_model, back = CallerToModel(), ModelToCaller()
    at_24k = b"".join(feed(to_model, ulaw, [FRAME_8K]))
    round_trip = b"".join(feed(back, at_24k, [2 * FRAME_24K]))
    assert len(round_trip) == len(ulaw)
    reference, result = ulaw_decode(ulaw), ulaw_decode(round_trip)
    lag = best_lag(reference, result)
    assert lag == 0  # the transcoders remove their own delay: output is aligned to input
    assert snr_db(reference, result) >= 35


# --- flush and reset --------------------------------------------------------------------------


@pytest.mark.parametrize("make", [CallerToModel, ModelToCaller])
def test_flush_completes_the_stream_and_starts_a_new_one(make) -> None:
    transcoder = make()
    if make is CallerToModel:
        data, expected = caller_ulaw()[:3333], lambda n: 6 * n
    else:
        data, expected = agent_pcm()[:7777], lambda n: -(-(n // 2) // 3)
    first = feed(transcoder, data, [FRAME_8K])
    assert len(b"".join(first)) == expected(len(data))
    assert len(first[-1]) > 0  # the flush gave the held-back tail
    assert transcoder.held_back_samples == 0
    assert transcoder.flush() == b""  # nothing left after a flush
    # Usable again, and the second stream is exactly what a fresh object would make.
    again = b"".join(feed(transcoder, data, [FRAME_8K]))
    assert again == b"".join(feed(make(), data, [FRAME_8K]))


@pytest.mark.parametrize("samples", [1, 2, 3, 4, 59, 60, 61, 200])
def test_flush_output_length_is_input_times_ratio(samples: int) -> None:
    up = CallerToModel()
    total = len(up.process(b"\x80" * samples)) + len(up.flush())
    assert total == 2 * 3 * samples
    down = ModelToCaller()
    total = len(down.process(b"\x10\x00" * samples)) + len(down.flush())
    assert abs(total - samples / 3) < 1


def test_flush_drops_a_lone_odd_byte() -> None:
    down = ModelToCaller()
    assert down.process(b"\x00\x10\x00") == b""  # one sample and half of another
    assert len(down.flush()) == 1
    after = b"".join(feed(down, b"\x00\x10" * 300, [600]))
    assert after == b"".join(feed(ModelToCaller(), b"\x00\x10" * 300, [600]))


@pytest.mark.parametrize("make", [CallerToModel, ModelToCaller])
def test_reset_drops_pending_audio(make) -> None:
    transcoder = make()
    if make is CallerToModel:
        loud, silence = ulaw_encode(tone(1000, TWILIO_RATE, 0.1, 20000)), b"\xff" * 800
        is_silent = lambda out: not pcm(out).any()  # noqa: E731
    else:
        loud, silence = tone(1000, MODEL_RATE, 0.1, 20000).tobytes() + b"\x01", b"\x00\x00" * 2400
        is_silent = lambda out: set(out) <= {0xFF}  # noqa: E731  μ-law zero
    transcoder.process(loud)
    assert transcoder.held_back_samples > 0
    transcoder.reset()
    assert transcoder.held_back_samples == 0
    out = transcoder.process(silence) + transcoder.flush()
    assert out and is_silent(out)  # nothing of the old audio comes out
    assert out == b"".join(feed(make(), silence, [len(silence)]))


# --- the interface: Passthrough, make_transcoders, bad input --------------------------------


def test_passthrough_has_the_same_interface() -> None:
    passthrough = Passthrough()
    assert passthrough.process(b"\x01\x02\x03") == b"\x01\x02\x03"
    assert passthrough.process(bytearray(b"\x04")) == b"\x04"
    assert passthrough.process(memoryview(b"\x05")) == b"\x05"
    assert passthrough.process(b"") == b""
    assert passthrough.held_back_samples == 0
    assert passthrough.flush() == b""
    passthrough.reset()
    assert passthrough.held_back_samples == 0
    for name in ("process", "flush", "reset", "held_back_samples"):
        assert hasattr(CallerToModel(), name) and hasattr(ModelToCaller(), name)


def test_make_transcoders() -> None:
    caller_to_model, model_to_caller = make_transcoders("pcm24k")
    assert isinstance(caller_to_model, CallerToModel) and isinstance(model_to_caller, ModelToCaller)
    assert make_transcoders("pcm24k")[0] is not caller_to_model  # fresh state for every call
    g711 = make_transcoders("g711")
    assert all(isinstance(t, Passthrough) for t in g711)
    with pytest.raises(ValueError, match="unknown audio mode"):
        make_transcoders("opus")
    with pytest.raises(TypeError, match="audio_mode"):
        make_transcoders(None)


@pytest.mark.parametrize("make", [CallerToModel, ModelToCaller, Passthrough])
@pytest.mark.parametrize("bad", ["\x00\x01", [0, 1], None, 42, np.zeros(4, dtype=np.int16)])
def test_process_rejects_non_bytes(make, bad) -> None:
    with pytest.raises(TypeError, match="bytes-like"):
        make().process(bad)


@pytest.mark.parametrize("make", [CallerToModel, ModelToCaller])
def test_process_accepts_bytearray_and_memoryview(make) -> None:
    data = bytes(range(256)) * 4
    expected = make().process(data)
    assert make().process(bytearray(data)) == expected
    assert make().process(memoryview(data)) == expected


@pytest.mark.parametrize("make", [Upsampler, Downsampler])
@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (b"\x00\x01", TypeError),
        ([0, 1], TypeError),
        (np.zeros(4, dtype=np.float64), TypeError),
        (np.zeros(4, dtype=np.int32), TypeError),
        (np.zeros((2, 2), dtype=np.int16), ValueError),
    ],
)
def test_resampler_rejects_bad_samples(make, bad, error) -> None:
    with pytest.raises(error):
        make().process(bad)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"half_width": -1}, ValueError),
        ({"half_width": 0}, ValueError),
        ({"half_width": 2.5}, TypeError),
        ({"half_width": "60"}, TypeError),
        ({"kaiser_beta": -1.0}, ValueError),
        ({"kaiser_beta": "7"}, TypeError),
        ({"cutoff": -0.5}, ValueError),
        ({"factor": -3}, ValueError),
        ({"factor": 3.0}, TypeError),
        ({"source": "LQ"}, ValueError),
    ],
)
def test_filter_spec_rejects_bad_settings(kwargs, error) -> None:
    with pytest.raises(error):
        LowpassSpec(**kwargs)


@pytest.mark.parametrize("make", [Upsampler, Downsampler])
@pytest.mark.parametrize(
    ("in_rate", "error"), [(-8000, ValueError), (0, ValueError), (8000.0, TypeError), ("8000", TypeError)]
)
def test_resampler_rejects_bad_rates(make, in_rate, error) -> None:
    with pytest.raises(error, match="in_rate"):
        make(in_rate=in_rate)


def test_a_huge_chunk_then_normal_frames_still_work() -> None:
    transcoder = ModelToCaller()
    big = agent_pcm() * 3
    out = transcoder.process(big) + transcoder.flush()
    assert len(out) == -(-len(big) // 2 // 3)
    frames = b"".join(feed(transcoder, agent_pcm(), [2 * FRAME_24K]))
    assert frames == b"".join(feed(ModelToCaller(), agent_pcm(), [2 * FRAME_24K]))


def test_transcoders_reject_a_spec_for_another_ratio() -> None:
    with pytest.raises(ValueError, match="factor"):
        CallerToModel(LowpassSpec(factor=2))
    with pytest.raises(ValueError, match="factor"):
        ModelToCaller(LowpassSpec(factor=2))
    with pytest.raises(TypeError, match="LowpassSpec"):
        Upsampler("VHQ")  # type: ignore[arg-type]


@pytest.mark.parametrize("source", ["MQ", "HQ", "VHQ"])
def test_soxr_derived_taps_are_a_working_alternative(source: str) -> None:
    spec = LowpassSpec(source=source, kaiser_beta=9.0)
    data = caller_ulaw()
    out = pcm(b"".join(feed(CallerToModel(spec), data, [FRAME_8K])))
    assert len(out) == 3 * len(data)
    assert CallerToModel(spec).delay_samples == CallerToModel().delay_samples
