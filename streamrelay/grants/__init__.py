"""
Signed upload URLs: what lets a browser or a script upload (or download)
one name for a while without a token, as S3's presigned URLs do.

Applications sign with L{signURL}; the proxy checks with L{checkGrant}
against the keys of C{--grant-keys-file} (L{GrantKeys}).
"""

from streamrelay.grants.checking import Grant, GrantQuery, checkGrant, grantExpired, grantInvalid
from streamrelay.grants.keys import GrantKeys, parseKeys
from streamrelay.grants.signing import signature, signURL, stringToSign

__all__ = [
    "Grant",
    "GrantKeys",
    "GrantQuery",
    "checkGrant",
    "grantExpired",
    "grantInvalid",
    "parseKeys",
    "signURL",
    "signature",
    "stringToSign",
]
