"""The tools a call has run, as a new model session must know them (pure): each call's name,
arguments and output, so that after a rollover or a replacement the model does not look something
up again or repeat an action (a transfer already asked for).

`ToolHistory` keeps the call's last `keep` answered calls; `tool_lines` renders them newest first,
each shortened, within a character budget (the seed's instructions stay bounded).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

KEPT_TOOL_CALLS = 32
TOOL_STATE_CHARS = 1600  # the seed's tool section, in characters (about 400 tokens)
ARGUMENT_CHARS = 160
OUTPUT_CHARS = 400


@dataclass(frozen=True, slots=True)
class ToolUse:
    name: str
    arguments: str  # JSON text, as the model wrote it
    output: str  # the function_call_output the model received


class ToolHistory:
    def __init__(self, keep: int = KEPT_TOOL_CALLS) -> None:
        self._uses: deque[ToolUse] = deque(maxlen=keep)
        self.total = 0  # answered calls, this call

    def add(self, name: str, arguments: str, output: str) -> None:
        self._uses.append(ToolUse(name, arguments, output))
        self.total += 1

    def newest_first(self) -> list[ToolUse]:
        return list(reversed(self._uses))


def _short(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def tool_lines(
    uses: list[ToolUse], budget: int = TOOL_STATE_CHARS, argument_chars: int = ARGUMENT_CHARS, output_chars: int = OUTPUT_CHARS
) -> list[str]:
    """One line per call, newest first, as many as fit in `budget` characters."""
    lines: list[str] = []
    used = 0
    for use in uses:
        line = f"- {use.name}({_short(use.arguments or '{}', argument_chars)}) returned: {_short(use.output, output_chars)}"
        if used + len(line) + 1 > budget:
            break
        lines.append(line)
        used += len(line) + 1
    return lines
