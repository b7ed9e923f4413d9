"""Caller frames gathered into appends of VOICE_BRIDGE_APPEND_MS (pure: no sockets)."""

from __future__ import annotations

import pytest

from bridge.append_batcher import AppendBatcher, Batch

FRAME = bytes(range(160))  # 20 ms of μ-law


def test_the_default_passes_every_frame_at_once() -> None:
    batcher = AppendBatcher()
    batch = batcher.add(FRAME, 1.0)
    assert batch == Batch(FRAME, 1, 1.0)
    assert batcher.pending_ms == 0


def test_frames_are_held_until_the_batch_is_full_then_released_in_order() -> None:
    batcher = AppendBatcher(100)
    frames = [bytes([i]) * 160 for i in range(12)]
    batches = [batcher.add(frame, float(i)) for i, frame in enumerate(frames)]
    released = [(i, b) for i, b in enumerate(batches) if b is not None]
    assert [i for i, _ in released] == [4, 9]  # after the 5th and the 10th frame
    assert released[0][1] == Batch(b"".join(frames[:5]), 5, 4.0)
    assert released[1][1] == Batch(b"".join(frames[5:10]), 5, 9.0)
    assert batcher.pending_ms == 40.0  # two frames wait for the next batch


def test_clear_drops_what_is_held_back() -> None:
    batcher = AppendBatcher(60)
    batcher.add(FRAME, 0.0)
    batcher.add(FRAME, 0.02)
    batcher.clear()
    assert batcher.pending_ms == 0
    assert batcher.add(FRAME, 0.04) is None  # a fresh batch: 20 of 60 ms
    assert batcher.add(FRAME, 0.06) is None
    batch = batcher.add(FRAME, 0.08)
    assert batch is not None and batch.frames == 3 and batch.completed_at == 0.08


def test_odd_sized_frames_count_by_audio_not_by_frames() -> None:
    batcher = AppendBatcher(40)  # 320 bytes
    assert batcher.add(b"\xff" * 100, 0.0) is None
    assert batcher.add(b"\xff" * 200, 0.0) is None
    batch = batcher.add(b"\xff" * 100, 0.0)
    assert batch is not None and len(batch.audio) == 400


@pytest.mark.parametrize("append_ms", [0, 10, 30, 220])
def test_a_batch_that_is_not_whole_frames_within_limits_is_refused(append_ms: int) -> None:
    with pytest.raises(ValueError, match="multiple of 20 ms"):
        AppendBatcher(append_ms)
