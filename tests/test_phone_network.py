"""The phone simulator's network (pure: clock and seed injected) and Twilio's playout start delay."""

from __future__ import annotations

import random

import pytest

from bridge.devtools.phone.network import DelayLine, NetworkProfile
from bridge.devtools.phone.playout import PlayoutBuffer


def line(profile: NetworkProfile, seed: int = 1) -> DelayLine[int]:
    return DelayLine(profile, random.Random(seed))


def test_a_fixed_delay_delivers_each_message_that_much_later() -> None:
    net = line(NetworkProfile(delay_ms=30))
    assert net.send(1, now=0.0) == pytest.approx(0.030)
    assert net.send(2, now=0.010) == pytest.approx(0.040)
    assert net.due(0.029) == []
    assert net.due(0.030) == [1]
    assert net.next_due() == pytest.approx(0.040)
    assert net.due(1.0) == [2] and len(net) == 0


def test_jitter_varies_the_delay_within_its_bounds_and_never_reorders() -> None:
    net = line(NetworkProfile(delay_ms=30, jitter_ms=10), seed=7)
    sent = [i * 0.002 for i in range(2000)]  # a message every 2 ms: jitter would reorder without TCP's order
    deliveries = [net.send(i, now) for i, now in enumerate(sent)]
    assert deliveries == sorted(deliveries)
    delays = [d - s for d, s in zip(deliveries, sent, strict=True)]
    assert min(delays) >= 0.020 - 1e-9 and max(delays) <= 0.040 + 1e-9
    assert max(delays) - min(delays) > 0.015  # it does vary
    assert net.due(100.0) == list(range(2000))


def test_sparse_messages_see_the_jitter_itself_around_the_mean() -> None:
    net = line(NetworkProfile(delay_ms=30, jitter_ms=10), seed=3)
    delays = [net.send(i, now=i * 1.0) - i * 1.0 for i in range(400)]
    assert sum(delays) / len(delays) == pytest.approx(0.030, abs=0.002)


def test_jitter_never_makes_a_delay_negative() -> None:
    net = line(NetworkProfile(delay_ms=2, jitter_ms=10), seed=5)
    assert all(net.send(i, now=i * 1.0) >= i * 1.0 for i in range(200))


def test_a_stall_holds_messages_and_releases_them_in_one_burst() -> None:
    net = line(NetworkProfile(delay_ms=10, burst_every_s=0.5, burst_ms=80), seed=2)
    deliveries = [net.send(i, now=i * 0.005) for i in range(2000)]  # 10 s of a message every 5 ms
    bursts: dict[float, int] = {}
    for at in deliveries:
        bursts[at] = bursts.get(at, 0) + 1
    released_together = [n for n in bursts.values() if n > 1]
    # About 20 stalls of 80 ms in 10 s, each releasing the ~16 messages it held at once.
    assert 8 <= len(released_together) <= 40
    assert all(10 <= n <= 17 for n in released_together)
    assert deliveries == sorted(deliveries)
    late = [d - i * 0.005 for i, d in enumerate(deliveries)]
    assert max(late) == pytest.approx(0.090, abs=0.001) and min(late) == pytest.approx(0.010)


def test_the_same_seed_gives_the_same_network() -> None:
    profile = NetworkProfile.realistic(30.0)
    a, b = line(profile, seed=9), line(profile, seed=9)
    assert [a.send(i, i * 0.01) for i in range(500)] == [b.send(i, i * 0.01) for i in range(500)]


def test_a_profile_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        NetworkProfile(delay_ms=-1)
    assert NetworkProfile().is_direct and not NetworkProfile(delay_ms=1).is_direct


def test_audio_into_an_empty_buffer_waits_for_the_playout_delay_and_its_mark_with_it() -> None:
    buffer = PlayoutBuffer(playout_delay_samples=480)  # 60 ms
    buffer.add_media(b"\x01" * 160)
    assert buffer.add_mark("m") == []
    for _ in range(12):  # 60 ms of 5 ms steps: silence, nothing played, no mark
        audio, real, marks = buffer.play(40)
        assert (real, marks, audio) == (0, [], b"\xff" * 40)
    assert buffer.play(40)[1] == 40
    buffer.add_media(b"\x02" * 40)  # arrives while playing: no new delay
    played = [buffer.play(40) for _ in range(5)]
    assert [p[1] for p in played] == [40, 40, 40, 40, 0] and played[2][2] == ["m"]
    assert buffer.played_samples == 200


def test_a_step_can_hold_the_end_of_the_playout_delay_and_the_start_of_the_audio() -> None:
    buffer = PlayoutBuffer(playout_delay_samples=100)
    buffer.add_media(b"\x01" * 100)
    audio, real, _ = buffer.play(40)
    buffer.play(40)
    audio, real, _ = buffer.play(40)
    assert (real, buffer.last_step_delay) == (20, 20) and audio == b"\xff" * 20 + b"\x01" * 20


def test_clear_cancels_the_playout_delay_and_the_next_audio_waits_again() -> None:
    buffer = PlayoutBuffer(playout_delay_samples=80)
    buffer.add_media(b"\x01" * 400)
    buffer.play(40)
    buffer.clear()
    buffer.add_media(b"\x01" * 400)
    assert buffer.play(80)[1] == 0 and buffer.play(80)[1] == 80
