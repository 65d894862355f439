"""
The rules a stored file's name must follow (API.md, "{name}").
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

MAX_NAME_BYTES = 255

#: Where files live in the HTTP API.
FILES_PREFIX = b"/files/"


class BadName(ValueError):
    """A name that no file may take."""


def validateName(name: str) -> str:
    """
    Return C{name} if a file may be stored under it, else raise L{BadName}.

    A name is one path segment of 1 to 255 UTF-8 bytes, not starting with
    C{.} (so never C{.} or C{..}, and never one of the store's own files),
    with no C{/}, C{\\}, NUL or control character.
    """
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise BadName("The file name is not valid UTF-8.") from None
    if not 1 <= len(encoded) <= MAX_NAME_BYTES:
        raise BadName(f"A file name has 1 to {MAX_NAME_BYTES} bytes.")
    if name.startswith("."):
        raise BadName("A file name may not start with '.'.")
    for ch in name:
        if ch in "/\\" or ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
            raise BadName("A file name may not hold '/', '\\', NUL or control characters.")
    return name


def isValidName(name: str) -> bool:
    """Whether a file may be stored under C{name} (see L{validateName})."""
    try:
        validateName(name)
    except BadName:
        return False
    return True


def nameFromPath(rawPath: bytes, prefix: bytes) -> str:
    """
    Decode the file name in C{rawPath} (the request's path, still
    percent-encoded) that follows C{prefix}, and validate it.

    Decoding the raw path ourselves keeps C{%2F} from becoming a path
    separator before the name is checked.
    """
    if not rawPath.startswith(prefix):
        raise BadName("The path names no file.")
    segment = rawPath[len(prefix):]
    if b"/" in segment:
        raise BadName("A file name is one path segment.")
    try:
        name = unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        raise BadName("The file name is not valid UTF-8.") from None
    return validateName(name)
