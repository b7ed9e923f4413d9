"""The conversation in words, to seed a new model session if the current one is lost."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

MAX_SEED_TURNS = 50


class ConversationMemory:
    def __init__(self, max_turns: int = MAX_SEED_TURNS) -> None:
        self._turns: deque[tuple[str, str]] = deque(maxlen=max_turns)

    def remember(self, role: str, text: str) -> bool:
        """Keep a turn; False for an empty one (nothing kept)."""
        if not text.strip():
            return False
        self._turns.append((role, text))
        return True

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._turns))

    def __len__(self) -> int:
        return len(self._turns)
