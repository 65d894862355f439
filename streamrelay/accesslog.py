"""
The access log's lines: twisted.web's combined format, with the signature
of a signed URL (C{sr-signature=…}, in the request target or in a
C{Referer} naming the web page's signed link) left out, so that a log
never holds a URL anyone could use.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.web.http import combinedLogFormatter
from twisted.web.iweb import IAccessLogFormatter
from zope.interface import provider

_SIGNATURE = re.compile(r"(sr-signature=)[^&\s\"#]*", re.IGNORECASE)


@provider(IAccessLogFormatter)
def redactedLogFormatter(timestamp: str, request: Any) -> str:
    """A combined log line for C{request}, signatures replaced by C{-}."""
    return _SIGNATURE.sub(r"\1-", combinedLogFormatter(timestamp, request))
