"""Barge-in exactness over real loopback sockets: the truncate the bridge sends against what the phone played.

The scripted upstream is the one of `benchmarks/bargein.py` (GA event names, audio streamed 4x
faster than real time, the real service's truncate rules). The truth is the phone simulator's
playback clock (`CallReport.clear_log`); the bridge must name the item being heard and an
`audio_end_ms` within 25 ms of it, and truncate nothing when nothing was heard.
"""

from __future__ import annotations

import importlib.util
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np
from conftest import AUDIO, run

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bargein.py"
sys.path.insert(0, str(_PATH.parent))  # as when the script runs: its sibling modules import
_spec = importlib.util.spec_from_file_location("bargein_benchmark", _PATH)
assert _spec is not None and _spec.loader is not None
bargein = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bargein  # dataclasses look their module up while the class is built
_spec.loader.exec_module(bargein)

ItemPlan, ResponsePlan, RoundPlan = bargein.ItemPlan, bargein.ResponsePlan, bargein.RoundPlan
TOLERANCE_MS = 25  # |audio_end_ms - heard|
SCENARIO_MS = 60  # how far the moment of the interruption may drift from the plan on a busy machine

with wave.open(str(AUDIO / "agent_greeting.wav"), "rb") as _wav:
    SPEECH = np.frombuffer(_wav.readframes(_wav.getnframes()), dtype="<i2")


def audio(item_id: str, ms: int, start_ms: int = 200) -> ItemPlan:
    start = start_ms * 24
    return ItemPlan(item_id, "audio", SPEECH[start : start + ms * 24].tobytes())


def play(rounds: list[Any]) -> tuple[list[Any], Any]:
    async def scenario() -> tuple[list[Any], Any]:
        tap = bargein.PhoneTap()
        with tap.installed():
            result = await bargein.run_call(rounds, tap)
        return bargein.score_call(0, result), result

    return run(scenario(), timeout=60)


def assert_heard_and_told(event: Any, item_id: str, planned_ms: float) -> None:
    assert event.clear_at is not None, "no clear reached the phone"
    assert event.truth_item == item_id, (event.truth_item, event.truth_ms)
    assert abs(event.truth_ms - planned_ms) <= SCENARIO_MS, event.truth_ms
    assert len(event.ours) == 1, event.ours
    claim = event.ours[0]
    assert claim.rejected is None, claim.rejected
    assert claim.item_id == item_id
    assert abs(claim.audio_end_ms - event.truth_ms) <= TOLERANCE_MS, (claim.audio_end_ms, event.truth_ms)


def test_truncates_match_what_the_phone_played() -> None:
    rounds = [
        # Before any audio: the caller speaks once the response started, before its first delta.
        RoundPlan(0, "pre_delta", ResponsePlan("resp_0", (audio("item_0", 600),)), before_audio=True),
        # Mid-sentence, inside the fifth 100 ms chunk.
        RoundPlan(1, "mid", ResponsePlan("resp_1", (audio("item_1", 800, 900),)), at_ms=430),
        # Right after a clear: a new response starts at once and is interrupted 40 ms later.
        RoundPlan(
            2, "double", ResponsePlan("resp_2", (audio("item_2", 600, 400),)), at_ms=300,
            followup=ResponsePlan("resp_2b", (audio("item_2b", 500, 1500),)), second_after_ms=40,
        ),
        # Across a multi-item response: a tool call, then two audio items; heard 200 ms into the second.
        RoundPlan(
            3, "across",
            ResponsePlan("resp_3", (ItemPlan("item_3_fc", "function_call"), audio("item_3a", 400), audio("item_3b", 500, 1200))),
            at_ms=400 + 200,
        ),
        # No interruption: the answer plays out; nothing is cleared, cancelled or truncated.
        RoundPlan(4, "none", ResponsePlan("resp_4", (audio("item_4", 500),))),
    ]
    events, result = play(rounds)
    session = result.session

    assert [(e.round_index, e.nth) for e in events] == [(0, 0), (1, 0), (2, 0), (2, 1), (3, 0)]
    before_audio, mid, first_of_two, second_of_two, across = events

    assert before_audio.clear_at is not None and before_audio.heard_samples == 0
    assert before_audio.ours == []
    assert_heard_and_told(mid, "item_1", 430)
    assert_heard_and_told(first_of_two, "item_2", 300)
    # The new response's audio is counted from its own start; the old epoch's echoes do not count.
    assert_heard_and_told(second_of_two, "item_2b", 40 - 5)
    assert_heard_and_told(across, "item_3b", 200)

    # The real service's rules: every truncate accepted, one per interruption that was heard.
    assert [t.error for t in session.truncates] == [None] * 4
    assert [t.item_id for t in session.truncates] == ["item_1", "item_2", "item_2b", "item_3b"]
    assert result.report.clears == 5
    # The uninterrupted answer was heard to the end.
    assert not [t for t in session.truncates if t.item_id == "item_4"]
    assert all(r.done_at is not None for r in session.responses)


def test_speech_before_the_first_delta_of_a_new_response_truncates_nothing() -> None:
    rounds = [
        RoundPlan(0, "mid", ResponsePlan("resp_0", (audio("item_0", 800, 900),)), at_ms=430),
        RoundPlan(1, "pre_delta", ResponsePlan("resp_1", (audio("item_1", 600),)), before_audio=True),
    ]
    events, _ = play(rounds)
    mid, before_audio = events
    assert_heard_and_told(mid, "item_0", 430)
    assert before_audio.clear_at is not None and before_audio.heard_samples == 0
    assert before_audio.ours == [], before_audio.ours
