"""Whether this machine has the IPv6 loopback the C{::1} tests need."""

from __future__ import annotations

import socket


def noIPv6() -> str | None:
    """Why C{::1} cannot be listened on here (a test's C{skip}), or None."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError as e:
        return f"no IPv6 loopback: {e}"
    return None
