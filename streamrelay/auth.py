"""
Bearer tokens: the proxy's tokens for clients, and the secret the proxy
and the backend share.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

from twisted.logger import Logger
from twisted.web.iweb import IRequest

from streamrelay.errors import ApiError

_log = Logger()

REALM = b'Bearer realm="streamrelay"'

#: A token's name: printable ASCII (it travels in a header to the backend).
_NAME = re.compile(rb"[\x21-\x7e]{1,128}")


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
    return which(token, allowed) is not None


def which(token: bytes | None, allowed: list[bytes]) -> int | None:
    """
    The index in C{allowed} of C{token} (the first if several), or L{None};
    compared with every one in constant time.
    """
    if token is None:
        return None
    found: int | None = None
    for index, candidate in enumerate(allowed):
        if hmac.compare_digest(token, candidate) and found is None:
            found = index
    return found


def tokenName(token: bytes) -> str:
    """
    The name of a token listed without one: the first 12 hex digits of its
    SHA-256, which tell which token it was without giving it away.
    """
    return hashlib.sha256(token).hexdigest()[:12]


class TokenFile:
    """
    Tokens read from a file, one per line: C{NAME TOKEN}, or C{TOKEN} alone
    (then named by L{tokenName}).  Blank lines and lines starting with C{#}
    are ignored.  L{reload} reads it again, keeping the old tokens when the
    file cannot be read or holds a line of more than two fields.

    @ivar tokens: the tokens, in the file's order.
    @ivar names: the name of each of L{tokens}.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tokens: list[bytes] = []
        self.names: list[str] = []
        self.names, self.tokens = self._read()

    def _read(self) -> tuple[list[str], list[bytes]]:
        names: list[str] = []
        tokens: list[bytes] = []
        for number, line in enumerate(self.path.read_bytes().splitlines(), 1):
            fields = line.split()
            if not fields or fields[0].startswith(b"#"):
                continue
            if len(fields) > 2:
                # (Never the line itself: it holds a token.)
                raise ValueError(
                    f"{self.path}, line {number}: {len(fields)} fields; "
                    "a line is NAME TOKEN or TOKEN"
                )
            token = fields[-1]
            if len(fields) == 2 and not _NAME.fullmatch(fields[0]):
                raise ValueError(
                    f"{self.path}, line {number}: a token's name is printable ASCII"
                )
            name = fields[0].decode("ascii") if len(fields) == 2 else tokenName(token)
            names.append(name)
            tokens.append(token)
        return names, tokens

    def reload(self) -> None:
        try:
            self.names, self.tokens = self._read()
        except OSError as e:
            _log.warn("cannot reload tokens from {path}: {error}; keeping the old ones",
                      path=str(self.path), error=e.strerror)
            return
        except ValueError as e:
            _log.warn("cannot reload tokens: {error}; keeping the old ones", error=str(e))
            return
        _log.info("reloaded {count} token(s) from {path}",
                  count=len(self.tokens), path=str(self.path))

    def check(self, request: IRequest) -> str:
        """The name of the token C{request} carries; 401 unless it carries one."""
        found = which(bearerToken(request), self.tokens)
        if found is None:
            raise unauthorized()
        return self.names[found]


def readSecret(value: str | None, path: str | None) -> bytes | None:
    """The shared secret from an option's value or from a file's first line."""
    if path:
        secret = Path(path).read_bytes().strip().splitlines()
        return secret[0].strip() if secret else None
    return value.encode("utf-8") if value else None
