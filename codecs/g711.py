"""G.711 μ-law and A-law (ITU-T G.711) with numpy lookup tables.

The tables are bit-exact with the ITU's own reference code (ITU-T G.191 STL, `g711.c`): samples are
16-bit left-justified, μ-law uses the top 14 bits and A-law the top 13, and a negative sample is
quantised by the magnitude of its one's complement (-x - 1), as that reference does. G.711 itself
only defines the decision and output levels; the one's complement rule is what makes the 16-bit
mapping symmetric, so encoders that agree with G.191 agree with each other bit for bit.
"""

from __future__ import annotations

import numpy as np

_BytesLike = bytes | bytearray | memoryview


def _int16_range() -> np.ndarray:
    """Every 16-bit sample, ordered by its uint16 bit pattern (the encode tables' index)."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _ones_complement_magnitude(samples: np.ndarray) -> np.ndarray:
    return np.where(samples < 0, ~samples, samples)


def _ulaw_decode_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    table: np.ndarray = np.where(codes & 0x80, -magnitude, magnitude).astype(np.int16)
    return table


def _ulaw_encode_table() -> np.ndarray:
    samples = _int16_range()
    # 14-bit magnitude plus the μ-law bias of 33, saturating at the top of the last segment.
    biased = np.minimum((_ones_complement_magnitude(samples) >> 2) + 33, 0x1FFF)
    exponent = np.zeros_like(biased)
    for bit in range(6, 13):  # segment = position of the leading one above bit 5
        exponent += (biased >> bit) > 0
    mantissa = (biased >> (exponent + 1)) & 0x0F
    sign = np.where(samples < 0, 0x00, 0x80)
    table: np.ndarray = (sign | ((7 - exponent) << 4) | (0x0F - mantissa)).astype(np.uint8)
    return table


def _alaw_decode_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32)
    toggled = (codes ^ 0x55) & 0x7F
    exponent = toggled >> 4
    mantissa = (toggled & 0x0F) + np.where(exponent > 0, 16, 0)
    magnitude = ((mantissa << 4) + 8) << np.maximum(exponent - 1, 0)
    table: np.ndarray = np.where(codes & 0x80, magnitude, -magnitude).astype(np.int16)
    return table


def _alaw_encode_table() -> np.ndarray:
    samples = _int16_range()
    magnitude = _ones_complement_magnitude(samples) >> 4  # 0..2047: the 12-bit magnitude
    exponent = np.zeros_like(magnitude)
    for bit in range(4, 11):  # segments 1..7 start at 16, 32, ..., 1024
        exponent += (magnitude >> bit) > 0
    mantissa = np.where(exponent > 0, magnitude >> np.maximum(exponent - 1, 0), magnitude) & 0x0F
    sign = np.where(samples < 0, 0x00, 0x80)
    table: np.ndarray = ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8)
    return table


def _frozen(table: np.ndarray) -> np.ndarray:
    table.setflags(write=False)
    return table


# Decode tables: code -> int16. Encode tables: indexed by the sample's uint16 bit pattern.
ULAW_DECODE = _frozen(_ulaw_decode_table())
ULAW_ENCODE = _frozen(_ulaw_encode_table())
ALAW_DECODE = _frozen(_alaw_decode_table())
ALAW_ENCODE = _frozen(_alaw_encode_table())


def _codes(data: object) -> np.ndarray:
    if isinstance(data, (bytes, bytearray)):
        return np.frombuffer(data, dtype=np.uint8)
    if isinstance(data, memoryview):
        return np.frombuffer(data.cast("B") if data.ndim == 1 else data.tobytes(), dtype=np.uint8)
    raise TypeError(f"G.711 data must be bytes-like, not {type(data).__name__}")


def _sample_index(samples: object) -> np.ndarray:
    if not isinstance(samples, np.ndarray):
        raise TypeError(f"samples must be a numpy int16 array, not {type(samples).__name__}")
    if samples.dtype == np.int16:
        return samples.reshape(-1).view(np.uint16)
    if samples.dtype.kind not in "iu":
        raise TypeError(f"samples must be integer PCM (int16), not dtype {samples.dtype}")
    if samples.size and (samples.min() < -32768 or samples.max() > 32767):
        raise ValueError("samples are outside the 16-bit range -32768..32767")
    return samples.reshape(-1).astype(np.int16).view(np.uint16)


def ulaw_decode(data: _BytesLike) -> np.ndarray:
    """μ-law bytes → int16 samples."""
    samples: np.ndarray = ULAW_DECODE[_codes(data)]
    return samples


def ulaw_encode(samples: np.ndarray) -> bytes:
    """int16 samples → μ-law bytes."""
    codes: bytes = ULAW_ENCODE[_sample_index(samples)].tobytes()
    return codes


def alaw_decode(data: _BytesLike) -> np.ndarray:
    """A-law bytes → int16 samples."""
    samples: np.ndarray = ALAW_DECODE[_codes(data)]
    return samples


def alaw_encode(samples: np.ndarray) -> bytes:
    """int16 samples → A-law bytes."""
    codes: bytes = ALAW_ENCODE[_sample_index(samples)].tobytes()
    return codes
