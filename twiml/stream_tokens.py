"""Short-lived, single-use tokens that tie a media stream to the webhook that announced it.

The webhook is signed by Twilio, the stream upgrade too, but the `start` event's CallSid is just
data: a token minted for that CallSid and its admission reservation at webhook time, carried in a
`<Parameter>`, proves the stream belongs to a call we accepted, recently, and which reservation
it was given (bridge/admission.py checks that reservation again when the stream starts).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict

from bridge.wire import ascii_uint

EXPIRY_MAX_DIGITS = 12  # a Unix time in seconds; anything longer is not one of ours
RESERVATION_ID_CHARS = frozenset("0123456789abcdef")
RESERVATION_ID_MAX = 32
MAC_CHARS = 64  # hex SHA-256
MAX_USED = 100_000  # redeemed tokens remembered until they expire; beyond this the oldest go first


class StreamTokenError(ValueError):
    """Why a token was refused; `reason` is a stable name for logs and metrics."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StreamTokens:
    """Mints and redeems tokens `<expiry>.<reservation id>.<hmac>`; HMAC-SHA256 over all three and the CallSid."""

    def __init__(self, key: bytes | None = None, ttl_s: float = 60.0) -> None:
        # A generated key only works within one process; replicas behind one number share a
        # configured key (VOICE_BRIDGE_STREAM_TOKEN_KEY) so any of them can redeem.
        self._key = key or secrets.token_bytes(32)
        self.ttl_s = ttl_s
        self._used: OrderedDict[str, int] = OrderedDict()  # token MAC → expiry, kept until it would expire anyway

    def _mac(self, call_sid: str, expiry: int, reservation_id: str) -> str:
        return hmac.new(self._key, f"{call_sid}.{expiry}.{reservation_id}".encode(), hashlib.sha256).hexdigest()

    def issue(self, call_sid: str, reservation_id: str, now: float) -> str:
        if not _is_reservation_id(reservation_id):
            raise ValueError("a reservation id is 1 to 32 lowercase hex digits")
        expiry = int(now + self.ttl_s)
        return f"{expiry}.{reservation_id}.{self._mac(call_sid, expiry, reservation_id)}"

    def redeem(self, token: str | None, call_sid: str, now: float) -> str:
        """Accept the token once for this CallSid and return its reservation id, or raise StreamTokenError."""
        self._forget_expired(now)
        if not token:
            raise StreamTokenError("missing_stream_token")
        parts = token.split(".") if isinstance(token, str) and len(token) <= 128 else []
        if len(parts) != 3:
            raise StreamTokenError("malformed_stream_token")
        expiry_text, reservation_id, mac = parts
        expiry = ascii_uint(expiry_text, max_digits=EXPIRY_MAX_DIGITS)
        if expiry is None or not _is_reservation_id(reservation_id) or len(mac) != MAC_CHARS:
            raise StreamTokenError("malformed_stream_token")
        if not hmac.compare_digest(mac.encode("utf-8", "replace"), self._mac(call_sid, expiry, reservation_id).encode()):
            raise StreamTokenError("invalid_stream_token")
        if expiry < now:
            raise StreamTokenError("expired_stream_token")
        if mac in self._used:
            raise StreamTokenError("reused_stream_token")
        self._used[mac] = expiry
        while len(self._used) > MAX_USED:
            self._used.popitem(last=False)
        return reservation_id

    def _forget_expired(self, now: float) -> None:
        # Oldest first (tokens are redeemed within seconds of being minted, so nearly in expiry order).
        while self._used:
            mac, expiry = next(iter(self._used.items()))
            if expiry >= now:
                break
            del self._used[mac]


def _is_reservation_id(text: str) -> bool:
    return 0 < len(text) <= RESERVATION_ID_MAX and all(c in RESERVATION_ID_CHARS for c in text)
