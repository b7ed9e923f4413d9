"""Streaming integer-ratio resamplers: a polyphase FIR over a small fixed history.

Each output needs the input up to `half_width` high-rate samples past its own instant and nothing
more, so the resampler holds back a constant few milliseconds at every call, whatever the chunk
size, instead of soxr's stream buffering of tens of milliseconds in bursts. Output is aligned to
the input (the filter's centre offset is removed), the signal before a stream starts and after
it is flushed counts as silence, and the result matches one-shot resampling with the same taps.

Outputs are float32 on the int16 scale, not rounded or clipped: the transcoders round them into
their own output format (PCM16 or a G.711 table index) in one step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .fir import DEFAULT_SPEC, LowpassSpec, lowpass_taps

_EMPTY = np.zeros(0, dtype=np.float32)
_EMPTY.setflags(write=False)
_MAX_CACHED_PLANS = 64
_SPARE = 4096  # buffer room for new input beyond the history: a 20 ms frame is 160 or 480
# Output groups per row of the blocked product. 16 divides the 160 outputs of a 20 ms frame
# (and of 10 and 40 ms frames), and measured fastest: bigger rows multiply by more zeros.
_BLOCK = 16


class _PolyphaseFIR:
    """Output group g = `bank`ᵀ · input[stride*g : stride*g + width], for every complete window.

    The history lives at the front of one float32 buffer; new input is appended after it, all
    complete windows are filtered, and the unused tail is moved to the front.

    Filtering one window per row of an overlapping strided view makes numpy copy `width` floats
    per output into a scratch matrix before BLAS sees it, which costs more than the arithmetic.
    So windows are taken `_BLOCK` at a time: one row covers the span of `_BLOCK` consecutive
    windows, and a block-Toeplitz `block_bank` (the bank repeated at each window's offset)
    gives all their outputs from one row; the copy shrinks from `width` floats per output to
    about `width/_BLOCK + stride`. Windows left over past the last full block go through the
    plain per-window product. The strided views are cached per buffer fill, which repeats for
    a steady frame size, because building a view costs more than the filtering.
    """

    __slots__ = ("_bank", "_block_bank", "_buf", "_fill", "_lead", "_plans", "_stride", "_width", "gain_bound")

    def __init__(self, bank: np.ndarray, stride: int, lead: int) -> None:
        bank = np.ascontiguousarray(bank, dtype=np.float32)
        self._bank = bank
        self._width = width = bank.shape[0]
        self._stride = stride
        self._lead = lead  # zeros standing for the silence before the stream
        matrix = bank.reshape(width, -1)
        phases = matrix.shape[1]
        block_bank = np.zeros(((_BLOCK - 1) * stride + width, _BLOCK * phases), dtype=np.float32)
        for window in range(_BLOCK):
            block_bank[window * stride : window * stride + width, window * phases : (window + 1) * phases] = matrix
        self._block_bank = block_bank
        self.gain_bound = float(np.abs(matrix.astype(np.float64)).sum(axis=0).max())
        self._buf = np.zeros(width + _SPARE, dtype=np.float32)
        self._fill = lead
        self._plans: dict[int, tuple[np.ndarray | None, np.ndarray | None, int]] = {}

    def run(self, samples: np.ndarray) -> np.ndarray:
        fill = self._fill
        need = fill + len(samples)
        if need > len(self._buf):
            self._grow(need)
        buf = self._buf
        buf[fill:need] = samples
        plan = self._plans.get(need)
        if plan is None:
            plan = self._plan(need)
        blocks, rest, used = plan
        if blocks is not None:
            out: np.ndarray = np.dot(blocks, self._block_bank).reshape(-1)
            if rest is not None:
                out = np.concatenate((out, np.dot(rest, self._bank).reshape(-1)))
        elif rest is not None:
            out = np.dot(rest, self._bank).reshape(-1)
        else:
            self._fill = need
            return _EMPTY
        buf[: need - used] = buf[used:need]
        self._fill = need - used
        return out

    def clear(self) -> None:
        if len(self._buf) > self._width + _SPARE:  # one huge chunk should not pin memory for good
            self._buf = np.zeros(self._width + _SPARE, dtype=np.float32)
            self._plans.clear()
        self._buf[: self._lead] = 0.0
        self._fill = self._lead

    def _plan(self, fill: int) -> tuple[np.ndarray | None, np.ndarray | None, int]:
        """Strided views of the complete windows of a buffer holding `fill` samples."""
        if len(self._plans) >= _MAX_CACHED_PLANS:
            self._plans.clear()
        windows = max(0, (fill - self._width) // self._stride + 1)
        rows, left = divmod(windows, _BLOCK)
        item = self._buf.itemsize
        step = self._stride * item
        blocks = rest = None
        if rows:
            shape = (rows, self._block_bank.shape[0])
            blocks = as_strided(self._buf, shape, (_BLOCK * step, item), writeable=False)
        if left:
            start = self._buf[rows * _BLOCK * self._stride :]
            rest = as_strided(start, (left, self._width), (step, item), writeable=False)
        plan = (blocks, rest, windows * self._stride)
        self._plans[fill] = plan
        return plan

    def _grow(self, need: int) -> None:
        buf = np.zeros(max(need, 2 * len(self._buf)), dtype=np.float32)
        buf[: self._fill] = self._buf[: self._fill]
        self._buf = buf
        self._plans.clear()


def _check_samples(samples: object) -> None:
    if not isinstance(samples, np.ndarray):
        raise TypeError(f"samples must be a numpy array, not {type(samples).__name__}")
    if samples.ndim != 1:
        raise ValueError(f"samples must be one-dimensional (mono), got shape {samples.shape}")
    if samples.dtype != np.int16 and samples.dtype != np.float32:
        raise TypeError(f"samples must be int16 or float32, not dtype {samples.dtype}")


class _Resampler(ABC):
    """Shared bookkeeping: counts, held-back samples, flush and reset."""

    in_rate: int
    out_rate: int
    _lookahead: int  # input samples of silence that push the last real input out on flush
    _delay: int

    def __init__(self, fir: _PolyphaseFIR) -> None:
        self._fir = fir
        self._in_total = 0
        self._out_total = 0

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Filter a chunk of any length; returns every output sample that is now complete."""
        _check_samples(samples)
        return self._run(samples)

    def _run(self, samples: np.ndarray) -> np.ndarray:
        """`process` without the argument checks, for callers that built `samples` themselves."""
        out = self._fir.run(samples)
        self._in_total += len(samples)
        self._out_total += len(out)
        return out

    def flush(self) -> np.ndarray:
        """Everything still held back (the stream is taken to end in silence); then reset."""
        out = self._fir.run(np.zeros(self._lookahead, dtype=np.float32))
        out = out[: self._expected(self._in_total) - self._out_total]
        self.reset()
        return out

    def reset(self) -> None:
        """Drop all pending audio and history; the next sample starts a new stream."""
        self._fir.clear()
        self._in_total = 0
        self._out_total = 0

    @property
    def held_back_samples(self) -> int:
        """Output samples (at `out_rate`) that the input so far calls for but not yet given."""
        return self._expected(self._in_total) - self._out_total

    @property
    def gain_bound(self) -> float:
        """No output exceeds this times the largest input magnitude (the sum of |taps|)."""
        return self._fir.gain_bound

    @property
    def delay_samples(self) -> int:
        """The most a running stream holds back, at the output rate: the latency added.

        Constant once the first `half_width` input samples are in when `half_width` is a
        multiple of the factor (the default); otherwise the decimator's varies by one.
        """
        return self._delay

    @abstractmethod
    def _expected(self, inputs: int) -> int:
        """Output samples that `inputs` input samples call for (the direction decides)."""


def _check_setup(spec: object, in_rate: object) -> None:
    if not isinstance(spec, LowpassSpec):
        raise TypeError(f"spec must be a LowpassSpec, not {type(spec).__name__}")
    if not isinstance(in_rate, int) or isinstance(in_rate, bool):
        raise TypeError(f"in_rate must be an int, not {type(in_rate).__name__}")
    if in_rate <= 0:
        raise ValueError(f"in_rate must be positive, got {in_rate}")


class Upsampler(_Resampler):
    """Streaming ×factor interpolator (8 kHz → 24 kHz by default)."""

    def __init__(self, spec: LowpassSpec = DEFAULT_SPEC, in_rate: int = 8000) -> None:
        _check_setup(spec, in_rate)
        factor = spec.factor
        taps = lowpass_taps(spec) * factor  # each branch of the interpolator then has unity gain
        # Output 3t+p is sum over j of x[t-j] * taps[c + 3j + p]: a window of 2*lead+1 inputs
        # centred on x[t] feeds all `factor` phases of output group t.
        lead = (spec.half_width + factor - 1) // factor
        width = 2 * lead + 1
        bank = np.zeros((width, factor), dtype=np.float64)
        for k in range(width):
            for p in range(factor):
                index = spec.half_width + factor * (lead - k) + p
                if 0 <= index < len(taps):
                    bank[k, p] = taps[index]
        super().__init__(_PolyphaseFIR(bank.astype(np.float32), stride=1, lead=lead))
        self.factor = factor
        self.in_rate = in_rate
        self.out_rate = in_rate * factor
        self._lookahead = lead
        self._delay = lead * factor

    def _expected(self, inputs: int) -> int:
        return inputs * self.factor


class Downsampler(_Resampler):
    """Streaming ÷factor decimator (24 kHz → 8 kHz by default).

    Output j is the filtered input at instant factor*j, so n inputs call for ceil(n/factor)
    outputs.
    """

    def __init__(self, spec: LowpassSpec = DEFAULT_SPEC, in_rate: int = 24000) -> None:
        _check_setup(spec, in_rate)
        factor = spec.factor
        if in_rate % factor:
            raise ValueError(f"in_rate {in_rate} is not a multiple of the factor {factor}")
        taps = lowpass_taps(spec)
        bank = np.ascontiguousarray(taps[::-1], dtype=np.float32)
        super().__init__(_PolyphaseFIR(bank, stride=factor, lead=spec.half_width))
        self.factor = factor
        self.in_rate = in_rate
        self.out_rate = in_rate // factor
        self._lookahead = spec.half_width
        self._delay = -(-spec.half_width // factor)

    def _expected(self, inputs: int) -> int:
        return -(-inputs // self.factor)
