"""
The C{Streamrelay-Signature} header of every hook delivery:
C{t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>}.

L{verify} is what a receiver written in Python calls.
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = b"streamrelay-signature"

#: How far a signature's time may be from the receiver's clock by default.
TOLERANCE_SECONDS = 300


def sign(secret: bytes, body: bytes, now: float | None = None) -> bytes:
    """The header's value for C{body}, signed at C{now}."""
    t = int(time.time() if now is None else now)
    mac = hmac.new(secret, b"%d." % (t,) + body, hashlib.sha256).hexdigest()
    return b"t=%d,v1=%s" % (t, mac.encode("ascii"))


def verify(
    secret: bytes,
    header: bytes | str,
    body: bytes,
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """
    Whether C{header} signs C{body} with C{secret} within C{tolerance}
    seconds of C{now}.  Several C{v1} entries (a secret being rotated)
    are each tried.
    """
    if isinstance(header, str):
        header = header.encode("latin-1")
    t: int | None = None
    macs: list[bytes] = []
    for part in header.split(b","):
        key, _, value = part.strip().partition(b"=")
        if key == b"t" and value.isdigit():
            t = int(value)
        elif key == b"v1":
            macs.append(value)
    if t is None or not macs:
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = hmac.new(secret, b"%d." % (t,) + body, hashlib.sha256).hexdigest().encode("ascii")
    found = False
    for mac in macs:
        found |= hmac.compare_digest(mac, expected)
    return found
