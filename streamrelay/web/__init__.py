"""
The web page people use in a browser: static files shipped in the package.
"""

from __future__ import annotations

from importlib import resources

#: name -> content type of every asset the page is made of.
ASSETS = {
    "index.html": b"text/html; charset=utf-8",
    "app.js": b"text/javascript; charset=utf-8",
    "signed.js": b"text/javascript; charset=utf-8",
    "app.css": b"text/css; charset=utf-8",
    "tus.min.js": b"text/javascript; charset=utf-8",
    "favicon.svg": b"image/svg+xml",
}


def asset(name: str) -> tuple[bytes, bytes] | None:
    """The content type and bytes of a page asset, or L{None}."""
    contentType = ASSETS.get(name)
    if contentType is None:
        return None
    data = resources.files(__name__).joinpath("static", name).read_bytes()
    return contentType, data
