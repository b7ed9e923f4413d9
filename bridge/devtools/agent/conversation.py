"""The local agent's conversation state and the real service's rules for it (pure)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from .clips import Clip, ClipLibrary


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


class RealtimeRequestError(ValueError):
    """A client event the real service would answer with an `error` event."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


@dataclass(slots=True)
class Item:
    id: str
    role: str  # "user" or "assistant"
    audio_ms: float = 0.0


class AgentConversation:
    """Items with their audio lengths, and which clip answers next."""

    def __init__(self, clips: ClipLibrary) -> None:
        self._clips = clips
        self.items: dict[str, Item] = {}
        self._greeted = False
        self._answers_given = 0

    def add_item(self, role: str, item_id: str | None = None) -> Item:
        item = Item(id=item_id or new_id("item"), role=role)
        self.items[item.id] = item
        return item

    def next_clip(self) -> Clip:
        """The greeting first (if nobody spoke yet), then the answers in turn."""
        if not self._greeted and not any(i.role == "user" for i in self.items.values()):
            self._greeted = True
            return self._clips.greeting
        clip = self._clips.answers[self._answers_given % len(self._clips.answers)]
        self._answers_given += 1
        return clip

    def truncate(self, item_id: object, content_index: object, audio_end_ms: object) -> Item:
        """Apply `conversation.item.truncate`, or raise the error the real service sends."""
        if not isinstance(item_id, str) or item_id not in self.items:
            raise RealtimeRequestError("item_not_found", f"Item with item_id '{item_id}' not found.", "item_id")
        item = self.items[item_id]
        if item.role != "assistant":
            raise RealtimeRequestError(
                "invalid_value", "Only model output audio messages can be truncated", "item_id"
            )
        if content_index != 0:
            raise RealtimeRequestError("invalid_value", f"Invalid content_index: {content_index}", "content_index")
        if not isinstance(audio_end_ms, int) or isinstance(audio_end_ms, bool) or audio_end_ms <= 0:
            raise RealtimeRequestError(
                "invalid_value", f"Invalid audio_end_ms: {audio_end_ms}. It must be a positive integer.", "audio_end_ms"
            )
        have_ms = int(item.audio_ms)
        if audio_end_ms > have_ms:
            raise RealtimeRequestError(
                "invalid_value", f"Audio content of {have_ms}ms is already shorter than {audio_end_ms}ms", "audio_end_ms"
            )
        item.audio_ms = float(audio_end_ms)
        return item
