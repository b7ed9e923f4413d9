"""The scaled clock: the bridge's time when a simulated phone (or a replayed call) runs faster."""

from __future__ import annotations

import time
from collections.abc import Callable


def scaled_clock(speed: float) -> Callable[[], float]:
    """A monotonic clock running `speed` times faster: give it to the bridge when the phone runs at `speed`."""
    origin = time.monotonic()
    return lambda: origin + (time.monotonic() - origin) * speed
