"""Numbers and JSON from a peer's wire, read so that no input can raise anything unexpected (pure).

Python's own readers are not safe for that: `str.isdigit()` is true for "²" and other Unicode
digits that `int()` refuses; `int()` refuses decimal strings over 4300 digits (`ValueError`);
`json.loads` raises `ValueError` for such integers and `RecursionError` for deep nesting, and
accepts `NaN` and `Infinity` (and reads `1e400` as infinity). Every number and JSON document the bridge reads from Twilio or from
the model goes through here, so each of those is one typed refusal (`None`, or `WireJSONError`).

Imports nothing from the project: `twiml` may use it as well as `bridge`.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DIGITS = 15  # a wire integer is 1-15 ASCII digits: any counter, timestamp or index a peer can honestly send
MAX_WIRE_INT = 10**MAX_DIGITS - 1  # ... and the same bound for JSON numbers
MAX_JSON_DEPTH = 64  # every message of both peers nests fewer than 10 levels (tool schemas a few more)


def ascii_uint(text: object, max_digits: int = MAX_DIGITS) -> int | None:
    """`text` as a non-negative int when it is 1 to `max_digits` ASCII digits `0`-`9`, else None."""
    if not isinstance(text, str) or not 0 < len(text) <= max_digits or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def json_uint(value: object, maximum: int = MAX_WIRE_INT) -> int | None:
    """A JSON integer in 0..`maximum` (not a bool, not a float), else None."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        return None
    return value


class WireJSONError(ValueError):
    """A text frame that is not a JSON document the bridge will read; the detail never quotes it."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 overflows to inf: Infinity by another name
        raise ValueError("a number out of the float range")
    return value


# One decoder, built once (json.loads with keyword arguments builds one per call).
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def loads_bounded(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode one JSON document: strict JSON (no NaN/Infinity), nested at most `max_depth` deep.

    Raises `WireJSONError` and nothing else, whatever `text` holds.
    """
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        value = _DECODER.decode(text)
    except RecursionError:
        raise WireJSONError("nested too deep") from None
    except ValueError as exc:  # JSONDecodeError, an integer over the int-string limit, bad UTF-8, NaN
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise WireJSONError(f"not JSON ({detail})") from None
    # Only a document with more containers than `max_depth` can be nested deeper: the hot path
    # (media frames, audio deltas: one or two objects) never walks the tree.
    if text.count("{") + text.count("[") > max_depth and _deeper_than(value, max_depth):
        raise WireJSONError(f"nested deeper than {max_depth} levels")
    return value


def _deeper_than(value: Any, max_depth: int) -> bool:
    """Whether containers nest more than `max_depth` levels (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
