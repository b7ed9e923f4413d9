"""The public URLs Twilio uses to reach us, which is what it signs."""

from __future__ import annotations

from urllib.parse import urlsplit


def public_base_url(
    configured: str | None,
    scheme: str,
    host: str,
    forwarded_proto: str | None = None,
    forwarded_host: str | None = None,
) -> str:
    """`scheme://host` as Twilio sees this service.

    A configured `VOICE_BRIDGE_PUBLIC_URL` wins; behind a proxy the forwarded headers tell the
    outside scheme and host; otherwise the request itself.
    """
    if configured:
        parts = urlsplit(configured)
        return f"{parts.scheme}://{parts.netloc}"
    proto = (forwarded_proto or scheme).split(",")[0].strip()
    netloc = (forwarded_host or host).split(",")[0].strip()
    if proto in ("ws", "wss"):
        proto = "https" if proto == "wss" else "http"
    return f"{proto}://{netloc}"


def websocket_url(base_url: str, path: str) -> str:
    """The ws(s) URL for `path`: `wss` behind `https` (what Twilio requires), `ws` on plain http."""
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{path}"
