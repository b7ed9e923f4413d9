"""The 8 kHz ↔ 24 kHz low-pass filter: a short linear-phase FIR, its length is the latency.

A linear-phase filter with `half_width` taps each side of its centre delays the signal by exactly
`half_width` samples at the high rate, so that is all the latency the resamplers add.

Two ways to get the taps (measured side by side in BENCHMARKS.md):

- `source="sinc"` (default): a Kaiser-windowed sinc. Telephone speech needs 300 Hz–3.4 kHz flat
  and the band from 4.5 kHz up rejected, a 1.1 kHz transition that a 2.5 ms filter spans with
  ~71 dB of rejection. The cutoff sits a little above the low rate's Nyquist (4.05 kHz, -4 dB at
  4 kHz) so the filter is close to power-complementary about 4 kHz: an 8 → 24 → 8 kHz round
  trip then keeps the band up to ~3.9 kHz, where a cutoff at 4 kHz loses 3.8–4 kHz twice.
  Passband: -0.5 dB at ~3.79 kHz (soxr's own: 3.76 kHz).
- `source="MQ"|"HQ"|"VHQ"`: soxr's own filter, recorded by resampling a unit impulse one-shot
  (which gives the centred, delay-compensated response) and cut to `half_width` under the same
  window. soxr centres its transition on ~3.83 kHz with a steep (±11 ms) response; cut to a few
  ms the transition widens around that centre, the passband edge drops to ~3.5 kHz and a μ-law
  round trip of real speech loses ~14 dB of SNR (29 dB, against 42 dB). Kept for the comparison.

Either way each polyphase branch is renormalised to unity gain.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import soxr

SOURCES = ("sinc", "MQ", "HQ", "VHQ")  # soxr's LQ droops -7.8 dB at 3.4 kHz; QQ does not filter


@dataclass(frozen=True)
class LowpassSpec:
    """Which filter, and how long: latency (`half_width`) against rejection (`kaiser_beta`)."""

    half_width: int = 60  # taps each side of the centre at the high rate: 2.5 ms at 24 kHz
    kaiser_beta: float = 7.0  # larger: lower sidelobes but a wider transition band
    source: str = "sinc"  # see the module docstring
    cutoff: float = 1.0125  # sinc only: cutoff over the low rate's Nyquist (4.05 kHz)
    factor: int = 3  # the integer rate ratio, 24 kHz / 8 kHz

    def __post_init__(self) -> None:
        for name in ("half_width", "factor"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        for name in ("kaiser_beta", "cutoff"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise TypeError(f"{name} must be a number, not {type(value).__name__}")
        if self.half_width < 1:
            raise ValueError(f"half_width must be >= 1, got {self.half_width}")
        if self.factor < 2:
            raise ValueError(f"factor must be >= 2, got {self.factor}")
        if not 0 <= self.kaiser_beta <= 40:
            raise ValueError(f"kaiser_beta must be within 0..40, got {self.kaiser_beta}")
        if not 0 < self.cutoff < self.factor:
            raise ValueError(f"cutoff must be above 0 and below factor, got {self.cutoff}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")


DEFAULT_SPEC = LowpassSpec()


@functools.cache
def soxr_impulse_response(quality: str, factor: int, half_width: int) -> np.ndarray:
    """soxr's ×`factor` interpolation filter: centred, `2*half_width+1` taps, unity DC gain."""
    # Enough zeros around the impulse that soxr's longest (VHQ, ±14 ms) response fits.
    pad = half_width // factor + 200
    impulse = np.zeros(2 * pad + 1)
    impulse[pad] = 1.0
    response = soxr.resample(impulse, 8000, 8000 * factor, quality=quality)
    centre = pad * factor
    taps: np.ndarray = response[centre - half_width : centre + half_width + 1] / factor
    taps.setflags(write=False)
    return taps


def _sinc(spec: LowpassSpec) -> np.ndarray:
    offsets = np.arange(-spec.half_width, spec.half_width + 1)
    band = spec.cutoff / spec.factor  # cutoff over the high rate's Nyquist
    taps: np.ndarray = band * np.sinc(band * offsets)
    return taps


@functools.cache
def lowpass_taps(spec: LowpassSpec = DEFAULT_SPEC) -> np.ndarray:
    """The prototype at the high rate: symmetric, `2*half_width+1` taps, centre at index
    `half_width`; each of its `factor` polyphase branches sums to exactly 1/factor."""
    if spec.source == "sinc":
        raw = _sinc(spec)
    else:
        raw = soxr_impulse_response(spec.source, spec.factor, spec.half_width)
    taps = raw * np.kaiser(len(raw), spec.kaiser_beta)
    # Equal branch sums make DC pass at exactly unity through every phase, so a DC offset leaves
    # no image at 8 kHz when upsampling and the 8/16 kHz components alias to nothing when down.
    offsets = np.arange(len(taps)) - spec.half_width
    for phase in range(spec.factor):
        branch = offsets % spec.factor == phase
        taps[branch] *= (1.0 / spec.factor) / taps[branch].sum()
    taps.setflags(write=False)
    return taps
