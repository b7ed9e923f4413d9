"""Cutting a TCP connection for good (pure asyncio, no protocol knowledge)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

_LINGER_ZERO = struct.pack("ii", 1, 0)


def reset(transport: asyncio.BaseTransport) -> None:
    """Abort `transport` with a TCP reset.

    `transport.abort()` alone closes the socket with a FIN: what the peer never read stays queued
    in the kernel, as an orphan connection that lives for minutes while the peer keeps its window
    shut (a stalled peer does exactly that). With SO_LINGER 0 the close sends RST and the kernel
    drops the connection and its buffers at once.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    transport.abort()
