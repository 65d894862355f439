"""
Bearer tokens: the proxy's tokens for clients, and the secret the proxy
and the backend share.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from streamrelay.errors import ApiError

_log = Logger()

REALM = b'Bearer realm="streamrelay"'


def unauthorized(message: str = "A valid access token is needed.") -> ApiError:
    return ApiError(401, "unauthorized", message, {b"www-authenticate": REALM})


def bearerToken(request: IRequest) -> bytes | None:
    """The token of an C{Authorization: Bearer …} header, if any."""
    value = request.getHeader(b"authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None
    return token.strip()


def matches(token: bytes | None, allowed: list[bytes]) -> bool:
    """
    Whether C{token} is one of C{allowed}, comparing with every one in
    constant time so the answer's timing tells nothing about them.
    """
    if token is None:
        return False
    found = False
    for candidate in allowed:
        found |= hmac.compare_digest(token, candidate)
    return found


class TokenFile:
    """
    Tokens read from a file, one per line (blank lines and lines starting
    with C{#} ignored); L{reload} reads it again, keeping the old tokens
    when the file cannot be read.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tokens: list[bytes] = []
        self.tokens = self._read()

    def _read(self) -> list[bytes]:
        tokens = []
        for line in self.path.read_bytes().splitlines():
            line = line.strip()
            if line and not line.startswith(b"#"):
                tokens.append(line)
        return tokens

    def reload(self) -> None:
        try:
            self.tokens = self._read()
        except OSError as e:
            _log.warn("cannot reload tokens from {path}: {error}; keeping the old ones",
                      path=str(self.path), error=e.strerror)
            return
        _log.info("reloaded {count} token(s) from {path}",
                  count=len(self.tokens), path=str(self.path))

    def check(self, request: IRequest) -> None:
        """Raise 401 unless C{request} carries one of the tokens."""
        if not matches(bearerToken(request), self.tokens):
            raise unauthorized()


def readSecret(value: str | None, path: str | None) -> bytes | None:
    """The shared secret from an option's value or from a file's first line."""
    if path:
        secret = Path(path).read_bytes().strip().splitlines()
        return secret[0].strip() if secret else None
    return value.encode("utf-8") if value else None
