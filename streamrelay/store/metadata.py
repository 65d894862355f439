"""
A file's metadata: a few string pairs an application (its C{pre-create}
hook) keeps with the file, returned as C{"metadata"} in the file's JSON.

The bounds are checked once, where metadata comes in (the hook's answer);
stores keep it as the compact JSON L{encode} gives: the disk store in an
extended attribute (or a sidecar), S3 in one object metadata header.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from urllib.parse import quote, unquote

#: At most this many keys.
MAX_KEYS = 64
#: At most this many bytes of compact JSON (UTF-8) in all: small enough for
#: an extended attribute and for S3's object metadata.
MAX_BYTES = 2048
#: What a key looks like: letters, digits, C{.}, C{_} and C{-}, up to 64.
KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

#: Kept in S3 as this one object metadata header (percent-encoded JSON:
#: S3 metadata names are case-folded and values are ASCII).
S3_HEADER = "x-amz-meta-streamrelay-metadata"
#: Printable ASCII left as it is in the S3 header; the rest is %-encoded
#: (spaces too: request signing folds runs of them).
_S3_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")


class BadMetadata(ValueError):
    """Metadata that is not an object of bounded string pairs."""


def validateMetadata(value: object) -> dict[str, str]:
    """
    C{value} as metadata, or L{BadMetadata}: an object of at most
    L{MAX_KEYS} keys matching L{KEY_PATTERN}, string values without control
    characters, at most L{MAX_BYTES} of JSON in all.
    """
    if not isinstance(value, dict):
        raise BadMetadata("metadata is a JSON object")
    if len(value) > MAX_KEYS:
        raise BadMetadata(f"metadata has at most {MAX_KEYS} keys")
    for key, item in value.items():
        if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
            raise BadMetadata(f"metadata key {key!r} is not 1-64 of A-Z a-z 0-9 . _ -")
        if not isinstance(item, str):
            raise BadMetadata(f"metadata value of {key!r} is not a string")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in item):
            raise BadMetadata(f"metadata value of {key!r} holds control characters")
        try:
            item.encode("utf-8")
        except UnicodeEncodeError:
            raise BadMetadata(f"metadata value of {key!r} is not valid Unicode") from None
    metadata = dict(value)
    if len(encode(metadata)) > MAX_BYTES:
        raise BadMetadata(f"metadata is over {MAX_BYTES} bytes of JSON")
    return metadata


def encode(metadata: Mapping[str, str]) -> bytes:
    """Compact JSON, keys sorted."""
    return json.dumps(
        dict(metadata), ensure_ascii=False, separators=(",", ":"), sort_keys=True
    ).encode("utf-8")


def decode(data: bytes | str) -> dict[str, str] | None:
    """What L{encode} gave, or L{None} for anything unreadable."""
    try:
        value = json.loads(data)
    except ValueError:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return None
    return value or None


def s3Headers(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """The object metadata header keeping C{metadata} in S3 (none for none)."""
    if not metadata:
        return {}
    return {S3_HEADER: quote(encode(metadata).decode("utf-8"), safe=_S3_SAFE)}


def fromS3Header(value: str | None) -> dict[str, str] | None:
    """The metadata in an S3 object's header, if any."""
    if not value:
        return None
    try:
        text = unquote(value.strip(), errors="strict")
    except UnicodeDecodeError:
        return None
    return decode(text)
