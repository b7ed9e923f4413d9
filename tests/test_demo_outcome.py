"""`voice-bridge demo` says whether the caller's question reached the agent and the answer reached
the caller, and fails when either did not happen (issue 15)."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from bridge.cli import demo_outcome
from bridge.devtools.phone import CallReport
from bridge.devtools.phone.caller import CallerState

L, S, H = CallerState.LISTENING, CallerState.SPEAKING, CallerState.HUNG_UP
BIN = Path(sys.executable).parent / "voice-bridge"


def _tally(ticks: list[tuple[CallerState, CallerState, float]]) -> CallReport:
    report = CallReport(call_sid="CA1", stream_sid="MZ1")
    for before, after, heard_s in ticks:
        report.note_tick(before, after, heard_s)
    return report


# (ticks: caller state before and after, agent audio heard in the tick) → (utterances said, answered)
TALLIES = [
    ([], (0, 0)),
    ([(L, L, 0.02)] * 50, (0, 0)),  # a greeting, nobody speaks
    ([(L, S, 0.0), (S, S, 0.0), (S, L, 0.0)] + [(L, L, 0.02)] * 10, (1, 1)),  # question, 0.2 s of answer
    ([(L, S, 0.0), (S, L, 0.0)] + [(L, L, 0.02)] * 9, (1, 0)),  # 0.18 s: a tail, not an answer
    ([(L, S, 0.0), (S, L, 0.0)] + [(L, L, 0.0)] * 50 + [(L, H, 0.0)], (1, 0)),  # silence, then hangup
    ([(L, S, 0.0), (S, L, 0.2)] + [(L, L, 0.02)] * 9, (1, 0)),  # audio of the tick the question ends in is not after it
    ([(L, S, 0.0), (S, L, 0.2)] + [(L, L, 0.02)] * 10, (1, 1)),  # audio of the tick the question ends in is not after it; the rest is
    # two questions, both answered; the answer window of the first closes when the second begins
    ([(L, S, 0.0), (S, L, 0.0)] + [(L, L, 0.05)] * 5 + [(L, S, 0.0), (S, L, 0.0)] + [(L, L, 0.05)] * 5, (2, 2)),
    # the second question is never answered: audio heard before it does not count for it
    ([(L, S, 0.0), (S, L, 0.0)] + [(L, L, 0.05)] * 5 + [(L, S, 0.05), (S, L, 0.0)] + [(L, L, 0.0)] * 5, (2, 1)),
    ([(L, S, 0.0), (S, S, 0.02), (S, H, 0.0)], (0, 0)),  # hung up (max duration) mid-question
]


@pytest.mark.parametrize(("ticks", "expected"), TALLIES)
def test_the_phone_counts_utterances_said_and_answered(ticks: list[tuple[CallerState, CallerState, float]], expected: tuple[int, int]) -> None:
    report = _tally(ticks)
    assert (report.utterances_said, report.answers_heard) == expected
    assert f"caller utterances        {expected[0]} said, {expected[1]} answered" in report.summary()


# (planned utterances, said, answered, turns the agent detected) → (question heard, answer heard)
OUTCOMES = [
    (1, 1, 1, 1, True, True),
    (1, 1, 1, 2, True, True),  # the agent's VAD split the question in two: still heard
    (1, 1, 1, None, True, True),  # no local agent to ask: the phone decides
    (1, 1, 0, 1, True, False),
    (1, 1, 1, 0, False, True),
    (1, 0, 0, 0, False, False),  # the caller never got to speak
    (2, 1, 1, 1, False, True),  # hung up before the second question
    (2, 2, 1, 2, True, False),
    (0, 0, 0, 0, False, False),  # nothing to say: never a success
]


@pytest.mark.parametrize(("planned", "said", "answered", "turns", "heard", "got_answer"), OUTCOMES)
def test_the_demo_verdict(planned: int, said: int, answered: int, turns: int | None, heard: bool, got_answer: bool) -> None:
    report = CallReport(call_sid="CA1", stream_sid="MZ1", utterances_said=said, answers_heard=answered)
    lines, problems = demo_outcome(report, planned, turns)
    assert lines[0].startswith(f"  question heard by agent  {'yes' if heard else 'NO'} (the caller said {said} of {planned}")
    assert lines[1].startswith(f"  answer heard by caller   {'yes' if got_answer else 'NO'} ({answered} of {said} answered)")
    assert any("question was not heard" in p for p in problems) is not heard
    assert any("did not hear the agent's answer" in p for p in problems) is not got_answer


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_BRIDGE_", "TWILIO_", "AZURE_", "OPENAI_", "PORT"))}


def test_a_demo_whose_caller_says_nothing_audible_fails_in_one_line(tmp_path: Path) -> None:
    silence = tmp_path / "silence.wav"
    with wave.open(str(silence), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\0\0" * 8000)
    result = subprocess.run(
        [str(BIN), "demo", "--say", str(silence), "--speed", "8", "--max-seconds", "10", "--log-level", "warning"],
        env=_env(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "question heard by agent  NO (the caller said 1 of 1, the agent detected 0 turns)" in result.stdout
    assert "answer heard by caller   NO (0 of 1 answered)" in result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("voice-bridge demo: the caller's question was not heard by the agent")


def test_a_demo_with_the_question_heard_and_answered_exits_0() -> None:
    result = subprocess.run([str(BIN), "demo", "--speed", "8", "--log-level", "warning"], env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "question heard by agent  yes (the caller said 1 of 1, the agent detected 1 turn)" in result.stdout
    assert "answer heard by caller   yes (1 of 1 answered)" in result.stdout
