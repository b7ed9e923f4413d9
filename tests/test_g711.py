"""G.711 μ-law and A-law against a reference built here from the standard's segment tables.

The reference does not reuse the module's bit tricks: it lists G.711's decision levels (Tables 1
and 2: segment ends and step sizes) and finds each sample's interval by bisection, one sample at a
time. 16-bit samples are mapped to the standard's scale as ITU-T G.191's reference `g711.c` does:
μ-law keeps the top 14 bits, A-law the top 13, and a negative sample is quantised by the magnitude
of its one's complement (-x - 1).
"""

from __future__ import annotations

import bisect

import numpy as np
import pytest

from voice_codecs import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

# G.711 Table 2 (μ-law), on the 14-bit magnitude scale (0..8191): segment 0 has a first interval
# of width 1 and then steps of 2; segment s >= 1 has 16 steps of 2**(s+1); the segments end at
# 31, 95, 223, 479, 991, 2015, 4063, 8159. Output value = interval midpoint (0 for the first).
ULAW_SEGMENT_ENDS = [31, 95, 223, 479, 991, 2015, 4063, 8159]


def _ulaw_intervals() -> tuple[list[int], list[float]]:
    starts, outputs = [0], [0.0]
    for k in range(1, 16):
        starts.append(2 * k - 1)
        outputs.append(2.0 * k)
    for segment in range(1, 8):
        step = 2 ** (segment + 1)
        base = ULAW_SEGMENT_ENDS[segment - 1]
        for k in range(16):
            starts.append(base + k * step)
            outputs.append(base + k * step + step / 2)
    return starts, outputs


# G.711 Table 1 (A-law), on the 13-bit scale (magnitude 0..4095): segments 0 and 1 step by 2,
# segment s >= 2 by 2**s; they end at 32, 64, 128, ..., 4096. Output value = interval midpoint.
def _alaw_intervals() -> tuple[list[int], list[float]]:
    starts, outputs = [], []
    for segment in range(8):
        step = 2 if segment < 2 else 2**segment
        base = 0 if segment == 0 else 16 * 2**segment
        for k in range(16):
            starts.append(base + k * step)
            outputs.append(base + k * step + step / 2)
    return starts, outputs


ULAW_STARTS, ULAW_OUTPUTS = _ulaw_intervals()
ALAW_STARTS, ALAW_OUTPUTS = _alaw_intervals()


def ref_ulaw_encode(sample: int) -> int:
    magnitude = (sample if sample >= 0 else -sample - 1) >> 2  # 14-bit scale
    interval = bisect.bisect_right(ULAW_STARTS, magnitude) - 1  # past 8159: last one
    segment, step = divmod(interval, 16)
    sign = 0x80 if sample < 0 else 0x00
    return ~(sign | segment << 4 | step) & 0xFF  # μ-law transmits every bit inverted


def ref_ulaw_decode(code: int) -> int:
    bits = ~code & 0xFF
    value = ULAW_OUTPUTS[(bits >> 4 & 7) * 16 + (bits & 0x0F)] * 4  # back to the 16-bit scale
    return int(-value if bits & 0x80 else value)


def ref_alaw_encode(sample: int) -> int:
    magnitude = (sample if sample >= 0 else -sample - 1) >> 3  # 13-bit scale
    interval = bisect.bisect_right(ALAW_STARTS, magnitude) - 1
    segment, step = divmod(interval, 16)
    sign = 0x80 if sample >= 0 else 0x00  # A-law: sign bit set means positive
    return (sign | segment << 4 | step) ^ 0x55  # even bits inverted


def ref_alaw_decode(code: int) -> int:
    bits = code ^ 0x55
    value = ALAW_OUTPUTS[(bits >> 4 & 7) * 16 + (bits & 0x0F)] * 8  # back to the 16-bit scale
    return int(value if bits & 0x80 else -value)


ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def test_reference_tables_match_the_standard_landmarks() -> None:
    # Spot values printed in G.711 itself (on its own scales), to pin the reference down.
    assert ULAW_STARTS[-1] + 256 == 8159 and len(ULAW_STARTS) == 128
    assert ALAW_STARTS[-1] + 128 == 4096 and len(ALAW_STARTS) == 128
    assert ref_ulaw_decode(0x80) == 8031 * 4 and ref_ulaw_decode(0x00) == -8031 * 4
    assert ref_ulaw_decode(0xFF) == 0 and ref_ulaw_decode(0xFE) == 8
    assert ref_alaw_decode(0xD5) == 8 and ref_alaw_decode(0xAA) == 4032 * 8
    assert ref_ulaw_encode(0) == 0xFF and ref_alaw_encode(0) == 0xD5


@pytest.mark.parametrize(
    ("decode", "reference"), [(ulaw_decode, ref_ulaw_decode), (alaw_decode, ref_alaw_decode)]
)
def test_decode_all_256_codes(decode, reference) -> None:
    got = decode(ALL_CODES)
    assert got.dtype == np.int16
    assert got.tolist() == [reference(code) for code in range(256)]


@pytest.mark.parametrize(
    ("encode", "reference"), [(ulaw_encode, ref_ulaw_encode), (alaw_encode, ref_alaw_encode)]
)
def test_encode_whole_16_bit_range(encode, reference) -> None:
    got = encode(ALL_SAMPLES)
    assert isinstance(got, bytes) and len(got) == 65536
    expected = bytes(reference(int(sample)) for sample in ALL_SAMPLES)
    mismatches = [int(s) for s, a, b in zip(ALL_SAMPLES, got, expected, strict=True) if a != b]
    assert mismatches == []


def test_ulaw_codes_survive_decode_then_encode() -> None:
    # Every code but μ-law's "negative zero" (0x7F), which decodes to 0 and comes back as 0xFF.
    again = ulaw_encode(ulaw_decode(ALL_CODES))
    assert [c for c in range(256) if again[c] != c] == [0x7F]
    assert again[0x7F] == 0xFF


def test_alaw_codes_survive_decode_then_encode() -> None:
    assert alaw_encode(alaw_decode(ALL_CODES)) == ALL_CODES


@pytest.mark.parametrize(("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)])
def test_quantisation_error_is_within_half_a_step(encode, decode) -> None:
    decoded = decode(encode(ALL_SAMPLES)).astype(np.int32)
    error = np.abs(decoded - ALL_SAMPLES)
    # The coarsest step is 1024 on the 16-bit scale for both laws; the one's complement rule
    # for negative samples moves a decision level by one. Beyond the top level only overload.
    inside = np.abs(ALL_SAMPLES.astype(np.int32)) < 32000
    assert error[inside].max() <= 512 + 4
    assert np.all(np.diff(decoded) >= 0)  # monotonic


@pytest.mark.parametrize("decode", [ulaw_decode, alaw_decode])
def test_decode_accepts_bytes_like(decode) -> None:
    data = bytes([0, 1, 0x7F, 0x80, 0xFF])
    expected = decode(data)
    assert np.array_equal(decode(bytearray(data)), expected)
    assert np.array_equal(decode(memoryview(data)), expected)
    assert decode(b"").shape == (0,)


@pytest.mark.parametrize("encode", [ulaw_encode, alaw_encode])
def test_encode_accepts_other_integer_dtypes_in_range(encode) -> None:
    samples = np.array([-32768, -1, 0, 1, 32767], dtype=np.int16)
    assert encode(samples.astype(np.int32)) == encode(samples)
    assert encode(np.zeros(0, dtype=np.int16)) == b""


@pytest.mark.parametrize("decode", [ulaw_decode, alaw_decode])
@pytest.mark.parametrize("bad", ["\x00\x01", [0, 1], 5, None, np.zeros(2, dtype=np.uint8)])
def test_decode_rejects_non_bytes(decode, bad) -> None:
    with pytest.raises(TypeError, match="bytes-like"):
        decode(bad)


@pytest.mark.parametrize("encode", [ulaw_encode, alaw_encode])
@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (b"\x00\x01", TypeError, "numpy int16 array"),
        ([0, 1], TypeError, "numpy int16 array"),
        (np.zeros(4, dtype=np.float32), TypeError, "integer PCM"),
        (np.array([40000], dtype=np.int32), ValueError, "16-bit range"),
        (np.array([-40000], dtype=np.int32), ValueError, "16-bit range"),
    ],
)
def test_encode_rejects_bad_input(encode, bad, error, match) -> None:
    with pytest.raises(error, match=match):
        encode(bad)
