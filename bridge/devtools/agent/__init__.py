"""The embedded local agent: a Realtime-protocol (GA) server that speaks recorded clips.

It lets the whole bridge run with no cloud account: energy-based turn detection, a greeting,
spoken answers, cancel and truncate with the real service's rules.
"""

from .server import LocalAgent

__all__ = ["LocalAgent"]
