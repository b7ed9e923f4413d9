"""Keypad digits as the model hears them (pure). Never logged: they may be PINs."""

from __future__ import annotations

COLLECT_MAX_DIGITS = 32


class Keypad:
    """`forward`: every digit is a line to the model; `collect`: digits until `#` make one line."""

    def __init__(self, mode: str) -> None:
        self.mode = mode  # "off", "forward", "collect"
        self._digits = ""

    def press(self, digit: str) -> str | None:
        """The text to tell the model now, or None (still collecting)."""
        if self.mode == "collect":
            if digit != "#":
                self._digits = (self._digits + digit)[-COLLECT_MAX_DIGITS:]
                return None
            typed, self._digits = self._digits or "nothing", ""
            return f"[The caller typed {typed} on the keypad, ending with #]"
        return f"[The caller pressed {digit} on the keypad]"
