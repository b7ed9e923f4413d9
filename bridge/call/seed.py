"""What a new model session is told of the call so far (pure): a summary of the older turns and the
tools already run in its instructions, and the last few turns verbatim as conversation items.

The summary is the model's own when a planned rollover got one out of band (`summary.py`);
otherwise it is built from the heard transcript (`transcript.py`): each older turn shortened, the
newest kept first within a character budget. Either way a new session's history, and with it the
input tokens every response re-reads, stays bounded however long the call. The tool calls come
from `tool_state.py`, newest first within their own budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .tool_state import ToolUse, tool_lines
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
    source: str = "transcript"  # whose summary: "model" (asked out of band) or "transcript"
    tool_calls: int = 0  # tool calls told


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
    summary: str | None = None,
    tools: Sequence[ToolUse] = (),
) -> Seed:
    """The seed of a new session for a call whose heard turns are `turns` (oldest first); `summary`:
    the model's own summary of the call, used instead of the older turns; `tools`: newest first."""
    recent = max(recent, 0)
    older, last = (list(turns[:-recent]), list(turns[-recent:])) if recent else (list(turns), [])
    parts = [instructions, CONTINUATION]
    if summary is not None:
        parts.append("Summary of the call so far, by the colleague who took it until now:\n" + summary[:summary_chars])
        summarized, left_out = len(older), 0
    else:
        summarized, left_out = _transcript_summary(older, parts, summary_chars, turn_chars)
    told = tool_lines(list(tools))
    if told:
        head = "Tools already used in this call, newest first (their results stand: do not call them again for the same thing"
        parts.append(head + " unless the caller asks):\n" + "\n".join(told))
    return Seed(
        instructions="\n\n".join(parts),
        turns=tuple((turn.role, _said(turn)) for turn in last),
        summarized=summarized,
        left_out=left_out,
        source="model" if summary is not None else "transcript",
        tool_calls=len(told),
    )


def _transcript_summary(older: list[HeardTurn], parts: list[str], summary_chars: int, turn_chars: int) -> tuple[int, int]:
    """The older turns, shortened, newest kept first within the budget, added to `parts`;
    returns (turns summarised, turns left out)."""
    lines: list[str] = []
    used = 0
    for turn in reversed(older):
        line = f"- {SPEAKERS.get(turn.role, turn.role)}: {_shorten(_said(turn), turn_chars)}"
        if used + len(line) + 1 > summary_chars:
            break
        lines.append(line)
        used += len(line) + 1
    lines.reverse()
    if lines:
        head = "Earlier in this call (shortened; a turn ending in … was cut off by the caller):"
        skipped = len(older) - len(lines)
        if skipped:
            head += f" {skipped} earlier turn(s) left out."
        parts.append(head + "\n" + "\n".join(lines))
    return len(lines), len(older) - len(lines)
