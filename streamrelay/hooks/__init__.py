"""
Hooks: the application decides on each upload (C{pre-create}) and is told
of every file published or deleted (C{post-finish}, C{post-delete}), at
least once.
"""

from streamrelay.hooks.context import (
    CLIENT_ADDRESS,
    CLIENT_AUTHORIZATION,
    CLIENT_HEADERS,
    CLIENT_IDENTITY,
    RequestContext,
    requestContext,
)
from streamrelay.hooks.interfaces import (
    Decision,
    HookRejected,
    HookUnavailable,
    IHooks,
    NoHooks,
)

__all__ = [
    "CLIENT_ADDRESS",
    "CLIENT_AUTHORIZATION",
    "CLIENT_HEADERS",
    "CLIENT_IDENTITY",
    "Decision",
    "HookRejected",
    "HookUnavailable",
    "IHooks",
    "NoHooks",
    "RequestContext",
    "requestContext",
]
