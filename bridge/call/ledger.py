"""The model's responses as the call sees them (pure): which one is active, which were dropped,
the audio items of each in order, and how far the responses have got.

A barge-in plan reads it (`active`, `last_item`, `items_of_response_of`); waiting for a line to be
heard reads `marker()`/`finished_since()`. Only the last `keep` responses are remembered: a long
call stays flat, and the items `started()` forgets are returned so playback accounting forgets
them too.
"""

from __future__ import annotations

from collections import deque

from ..playback import ItemKey

# The response playing and the few before it are all a barge-in can concern.
KEPT_RESPONSES = 8


class ResponseLedger:
    def __init__(self, keep: int = KEPT_RESPONSES) -> None:
        self.keep = keep
        self.active: str | None = None  # the response being generated, if any
        self.last_item: ItemKey | None = None  # the newest item with audio sent to the caller
        self._dropped: set[str] = set()
        self._items: dict[str, list[ItemKey]] = {}  # audio items of each response, in order
        self._item_response: dict[ItemKey, str] = {}
        self._recent: deque[str] = deque()
        self._seq = 0  # responses started so far
        self._seqs: dict[str, int] = {}
        self._finished_seq = 0  # the highest-numbered response that has finished

    # --- events from the model ---

    def started(self, response_id: str) -> list[ItemKey]:
        """A response began; returns the audio items of responses no longer remembered."""
        self.active = response_id
        self.last_item = None  # until its first audio, the new response has nothing to truncate
        self._seq += 1
        self._seqs[response_id] = self._seq
        self._recent.append(response_id)
        forgotten: list[ItemKey] = []
        while len(self._recent) > self.keep:
            old = self._recent.popleft()
            self._dropped.discard(old)
            self._seqs.pop(old, None)
            for key in self._items.pop(old, []):
                self._item_response.pop(key, None)
                forgotten.append(key)
        return forgotten

    def audio(self, response_id: str, item: ItemKey) -> bool:
        """Audio of `item` arrived; False if its response was dropped (the audio must not play)."""
        if response_id in self._dropped:
            return False
        self.last_item = item
        if item not in self._item_response:
            self._item_response[item] = response_id
            self._items.setdefault(response_id, []).append(item)
        return True

    def finished(self, response_id: str) -> None:
        if response_id == self.active:
            self.active = None
        self._finished_seq = max(self._finished_seq, self._seqs.pop(response_id, 0))

    # --- decisions of the call ---

    def is_dropped(self, response_id: str) -> bool:
        return response_id in self._dropped

    def drop(self, response_id: str) -> None:
        """The call cancelled `response_id`: its remaining audio is thrown away."""
        self._dropped.add(response_id)
        if response_id == self.active:
            self.active = None

    def playback_stopped(self) -> None:
        """The caller's playback was cleared: nothing sent so far is still to be heard."""
        self.last_item = None

    def session_replaced(self) -> None:
        """A new model session: nothing of the old one is active or playing."""
        self.active = None
        self.last_item = None

    # --- questions ---

    def items_of_response_of(self, item: ItemKey) -> list[ItemKey]:
        """The audio items of the response `item` belongs to, in order."""
        response_id = self._item_response.get(item)
        return self._items.get(response_id, []) if response_id else []

    def marker(self) -> int:
        """A point in the response order: `finished_since(marker)` is true once a later one finished."""
        return self._seq

    def finished_since(self, marker: int) -> bool:
        return self._finished_seq > marker

    def remembered(self) -> int:
        """Responses whose bookkeeping is kept (at most `keep`)."""
        return len(self._recent)
