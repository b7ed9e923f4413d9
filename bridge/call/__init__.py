"""One phone call, in small parts: see `session.CallSession` for the order they run in."""

from .session import CallSession
from .setup import CallServices, CallSetup, open_session, prepare_call, prewarm_opener
from .state import CallState, EndReason, StartRefused

__all__ = [
    "CallServices",
    "CallSession",
    "CallSetup",
    "CallState",
    "EndReason",
    "StartRefused",
    "open_session",
    "prepare_call",
    "prewarm_opener",
]
