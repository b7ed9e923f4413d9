"""The phone simulator: places a call against the bridge the way Twilio does."""

from .simulator import CallReport, place_call

__all__ = ["CallReport", "place_call"]
