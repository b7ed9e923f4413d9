"""What a new model session is told of the call so far (pure): a summary of the older turns in its
instructions, and the last few turns verbatim as conversation items.

The summary is built from the heard transcript (`transcript.py`), not asked of the model: each older
turn shortened, the newest kept first within a character budget, so a new session's history, and
with it the input tokens every response re-reads, stays bounded however long the call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .transcript import INTERRUPTED_MARK, HeardTurn

RECENT_TURNS = 6  # the last turns, word for word, as conversation items
SUMMARY_CHARS = 2400  # the summary's budget in characters (about 600 tokens)
TURN_CHARS = 240  # an older turn is shortened to this
CONTINUATION = (
    "This phone call is already under way: you are continuing it in a new session. Do not greet the "
    "caller again or mention the new session; carry on from where the conversation is."
)
SPEAKERS = {"user": "Caller", "assistant": "You"}


@dataclass(frozen=True, slots=True)
class Seed:
    instructions: str  # the session's instructions, with the call so far
    turns: tuple[tuple[str, str], ...]  # (role, text) of the last turns, oldest first
    summarized: int  # older turns in the summary
    left_out: int  # older turns beyond the summary's budget


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def _said(turn: HeardTurn) -> str:
    return turn.text + (INTERRUPTED_MARK if turn.interrupted else "")


def build_seed(
    instructions: str,
    turns: Sequence[HeardTurn],
    recent: int = RECENT_TURNS,
    summary_chars: int = SUMMARY_CHARS,
    turn_chars: int = TURN_CHARS,
) -> Seed:
    """The seed of a new session for a call whose heard turns are `turns` (oldest first)."""
    recent = max(recent, 0)
    older, last = (list(turns[:-recent]), list(turns[-recent:])) if recent else (list(turns), [])
    lines: list[str] = []
    used = 0
    for turn in reversed(older):
        line = f"- {SPEAKERS.get(turn.role, turn.role)}: {_shorten(_said(turn), turn_chars)}"
        if used + len(line) + 1 > summary_chars:
            break
        lines.append(line)
        used += len(line) + 1
    lines.reverse()
    parts = [instructions, CONTINUATION]
    if lines:
        head = "Earlier in this call (shortened; a turn ending in … was cut off by the caller):"
        skipped = len(older) - len(lines)
        if skipped:
            head += f" {skipped} earlier turn(s) left out."
        parts.append(head + "\n" + "\n".join(lines))
    return Seed(
        instructions="\n\n".join(parts),
        turns=tuple((turn.role, _said(turn)) for turn in last),
        summarized=len(lines),
        left_out=len(older) - len(lines),
    )
