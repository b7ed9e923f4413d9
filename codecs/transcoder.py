"""Per-call streaming transcoders between Twilio audio (μ-law 8 kHz) and the model (PCM16 24 kHz).

All three share one interface, which the bridge relies on:
`process(chunk) -> bytes` for a chunk of any size, `flush() -> bytes` at the end of a model
response (returns the held-back tail, then starts a new stream), `reset()` on barge-in (drops
everything), and `held_back_samples`, the output samples owed but not yet given, for playback
accounting.
"""

from __future__ import annotations

import functools

import numpy as np

from .audio_mode import MODEL_RATE, TWILIO_RATE, AudioMode
from .fir import DEFAULT_SPEC, LowpassSpec
from .g711 import ULAW_DECODE, ULAW_ENCODE
from .resample import Downsampler, Upsampler

# The hot path decodes straight to float32, and turns the filter's float output into PCM16 or
# μ-law with one table lookup: the table is indexed by the rounded sample plus an offset and has
# saturation built in, which replaces a round, two clips and a cast (a few µs per frame).
_ULAW_DECODE_F32 = ULAW_DECODE.astype(np.float32)
_ULAW_PEAK = int(np.abs(ULAW_DECODE.astype(np.int32)).max())
_PCM16_PEAK = 32768


@functools.cache
def _output_table(reach: int, encode_ulaw: bool) -> np.ndarray:
    """`table[int(y + reach + 0.5)]` is y rounded, saturated to int16 and maybe μ-law encoded,
    for every |y| <= reach. Shared by all calls (cached): 130–300 kB, not per call."""
    values = np.clip(np.arange(-reach, reach + 1), -32768, 32767).astype("<i2")  # PCM16 LE
    table = ULAW_ENCODE[values.view(np.uint16)] if encode_ulaw else values
    table.setflags(write=False)
    return table


def _output_lookup(peak: int, gain: float, encode_ulaw: bool) -> tuple[np.ndarray, np.float32]:
    """(table, offset) for a filter whose |output| <= `gain` * |input| and |input| <= `peak`;
    two samples of margin cover float32 rounding."""
    reach = int(np.ceil(peak * gain)) + 2
    return _output_table(reach, encode_ulaw), np.float32(reach + 0.5)  # +0.5: truncation rounds


def _as_bytes(chunk: object) -> bytes:
    if type(chunk) is bytes:
        return chunk
    if isinstance(chunk, (bytearray, memoryview)):
        return bytes(chunk)
    raise TypeError(f"audio chunk must be bytes-like, not {type(chunk).__name__}")


def _lookup(samples: np.ndarray, table: np.ndarray, offset: np.float32) -> bytes:
    if not len(samples):
        return b""
    np.add(samples, offset, out=samples)
    return table.take(samples.astype(np.intp)).tobytes()


class _Resampling:
    """What both resampling transcoders share: the resampler, the output table, flush and reset."""

    def __init__(self, resampler: Upsampler | Downsampler, out_rate: int, peak: int, encode_ulaw: bool, factor: int) -> None:
        if resampler.out_rate != out_rate:
            raise ValueError(f"spec.factor must be {MODEL_RATE // TWILIO_RATE}, got {factor}")
        self._resampler = resampler
        self._table, self._offset = _output_lookup(peak, resampler.gain_bound, encode_ulaw)

    def flush(self) -> bytes:
        return _lookup(self._resampler.flush(), self._table, self._offset)

    def reset(self) -> None:
        self._resampler.reset()

    @property
    def held_back_samples(self) -> int:
        return self._resampler.held_back_samples

    @property
    def delay_samples(self) -> int:
        """The steady `held_back_samples` at the output rate: the whole latency this direction adds."""
        return self._resampler.delay_samples


class CallerToModel(_Resampling):
    """μ-law 8 kHz bytes → PCM16 LE 24 kHz bytes. Holds back a constant `delay_samples`."""

    def __init__(self, spec: LowpassSpec = DEFAULT_SPEC) -> None:
        super().__init__(Upsampler(spec, in_rate=TWILIO_RATE), MODEL_RATE, _ULAW_PEAK, False, spec.factor)

    def process(self, chunk: bytes) -> bytes:
        codes = np.frombuffer(_as_bytes(chunk), dtype=np.uint8)
        return _lookup(self._resampler._run(_ULAW_DECODE_F32.take(codes)), self._table, self._offset)


class ModelToCaller(_Resampling):
    """PCM16 LE 24 kHz bytes → μ-law 8 kHz bytes. Holds back a constant `delay_samples`.

    A chunk may end in the middle of a sample: the odd byte waits for the next chunk.
    """

    def __init__(self, spec: LowpassSpec = DEFAULT_SPEC) -> None:
        super().__init__(Downsampler(spec, in_rate=MODEL_RATE), TWILIO_RATE, _PCM16_PEAK, True, spec.factor)
        self._odd_byte = b""

    def process(self, chunk: bytes) -> bytes:
        data = _as_bytes(chunk)
        if self._odd_byte:
            data = self._odd_byte + data
        if len(data) & 1:
            self._odd_byte = data[-1:]
            data = data[:-1]
        else:
            self._odd_byte = b""
        samples = np.frombuffer(data, dtype="<i2")
        return _lookup(self._resampler._run(samples), self._table, self._offset)

    def flush(self) -> bytes:
        # A lone odd byte is half a sample: there is no sample to give for it.
        self._odd_byte = b""
        return super().flush()

    def reset(self) -> None:
        self._odd_byte = b""
        super().reset()


class Passthrough:
    """G.711 in both directions (VOICE_BRIDGE_AUDIO=g711): bytes go through unchanged."""

    held_back_samples = 0
    delay_samples = 0

    def process(self, chunk: bytes) -> bytes:
        return _as_bytes(chunk)

    def flush(self) -> bytes:
        return b""

    def reset(self) -> None:
        pass


def make_transcoders(audio_mode: AudioMode | str) -> tuple[CallerToModel | Passthrough, ModelToCaller | Passthrough]:
    """The (caller→model, model→caller) pair for one call."""
    if not isinstance(audio_mode, str):
        raise TypeError(f"audio_mode must be a str, not {type(audio_mode).__name__}")
    try:
        mode = AudioMode(audio_mode)
    except ValueError:
        raise ValueError(f"unknown audio mode {audio_mode!r} (expected 'pcm24k' or 'g711')") from None
    if mode is AudioMode.G711:
        return Passthrough(), Passthrough()
    return CallerToModel(), ModelToCaller()
