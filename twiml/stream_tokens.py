"""Short-lived, single-use tokens that tie a media stream to the webhook that announced it.

The webhook is signed by Twilio, the stream upgrade too, but the `start` event's CallSid is just
data: a token minted for that CallSid at webhook time, carried in a `<Parameter>`, proves the
stream belongs to a call we accepted, and recently.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


class StreamTokenError(ValueError):
    """Why a token was refused; `reason` is a stable name for logs and metrics."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StreamTokens:
    """Mints and redeems tokens `<expiry>.<hmac>`; HMAC-SHA256 over CallSid and expiry."""

    def __init__(self, key: bytes | None = None, ttl_s: float = 60.0) -> None:
        # A generated key only works within one process; replicas behind one number share a
        # configured key (VOICE_BRIDGE_STREAM_TOKEN_KEY) so any of them can redeem.
        self._key = key or secrets.token_bytes(32)
        self.ttl_s = ttl_s
        self._used: dict[str, float] = {}  # token → expiry, kept until it would expire anyway

    def _mac(self, call_sid: str, expiry: int) -> str:
        return hmac.new(self._key, f"{call_sid}.{expiry}".encode(), hashlib.sha256).hexdigest()

    def issue(self, call_sid: str, now: float) -> str:
        expiry = int(now + self.ttl_s)
        return f"{expiry}.{self._mac(call_sid, expiry)}"

    def redeem(self, token: str | None, call_sid: str, now: float) -> None:
        """Accept the token once for this CallSid, or raise StreamTokenError."""
        self._forget_expired(now)
        if not token:
            raise StreamTokenError("missing_stream_token")
        expiry_text, _, mac = token.partition(".")
        if not expiry_text.isdigit() or not mac:
            raise StreamTokenError("malformed_stream_token")
        if not hmac.compare_digest(mac, self._mac(call_sid, int(expiry_text))):
            raise StreamTokenError("invalid_stream_token")
        if int(expiry_text) < now:
            raise StreamTokenError("expired_stream_token")
        if token in self._used:
            raise StreamTokenError("reused_stream_token")
        self._used[token] = float(expiry_text)

    def _forget_expired(self, now: float) -> None:
        for token in [t for t, expiry in self._used.items() if expiry < now]:
            del self._used[token]
