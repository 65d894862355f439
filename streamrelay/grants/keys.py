"""
The keys of C{--grant-keys-file}: lines C{KEY_ID SECRET}, several for
rotation, C{#} comments; re-read on C{SIGHUP}.  Secrets are never logged.
"""

from __future__ import annotations

from pathlib import Path

from twisted.logger import Logger

from streamrelay.grants.signing import KEY_ID

__all__ = ["GrantKeys", "MIN_SECRET", "parseKeys"]

_log = Logger()

#: The fewest bytes a secret may have: guessing it must be hopeless.
MIN_SECRET = 16


def parseKeys(data: bytes, where: str = "the grant keys file") -> dict[str, bytes]:
    """
    The keys of a keys file's C{data}, by key id.

    @raise ValueError: on a line that is not C{KEY_ID SECRET}, a key id
        given twice or a secret too short; the message names the line by
        its number only, never its text.
    """
    keys: dict[str, bytes] = {}
    for number, line in enumerate(data.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith(b"#"):
            continue
        if len(fields) != 2:
            raise ValueError(f"{where}, line {number}: a line is KEY_ID SECRET")
        keyId = fields[0].decode("ascii", "replace")
        if not KEY_ID.fullmatch(keyId):
            raise ValueError(
                f"{where}, line {number}: a key id is 1 to 64 of A-Z a-z 0-9 . _ ~ -"
            )
        if keyId in keys:
            raise ValueError(f"{where}, line {number}: key id {keyId} is given twice")
        if len(fields[1]) < MIN_SECRET:
            raise ValueError(
                f"{where}, line {number}: the secret of {keyId} is shorter than "
                f"{MIN_SECRET} bytes"
            )
        keys[keyId] = fields[1]
    return keys


class GrantKeys:
    """
    The keys read from C{path}; L{reload} reads it again, keeping the old
    keys when it cannot be read or is not valid.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys = parseKeys(path.read_bytes(), str(path))

    @property
    def ids(self) -> list[str]:
        return list(self._keys)

    def secret(self, keyId: str) -> bytes | None:
        """The secret of C{keyId}, if it is one of the keys."""
        return self._keys.get(keyId)

    def reload(self) -> None:
        try:
            self._keys = parseKeys(self.path.read_bytes(), str(self.path))
        except OSError as e:
            _log.warn("cannot reload grant keys from {path}: {error}; keeping the old ones",
                      path=str(self.path), error=e.strerror)
            return
        except ValueError as e:
            _log.warn("cannot reload grant keys: {error}; keeping the old ones", error=str(e))
            return
        _log.info("reloaded {count} grant key(s) from {path}: {ids}",
                  count=len(self._keys), path=str(self.path), ids=" ".join(self._keys))
