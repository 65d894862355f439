"""
C{streamrelay-sign}: print a signed URL.

    streamrelay-sign --keys-file FILE --key-id ID --method PUT \\
        --expires-in 3600 [--max-size N] [--page] URL
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from twisted.python.usage import UsageError

from streamrelay.grants.keys import parseKeys
from streamrelay.grants.signing import signURL
from streamrelay.options import parseSize


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"streamrelay-sign: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="streamrelay-sign",
        description="Print URL signed for one METHOD until it expires (see docs/signed-urls.md).",
    )
    parser.add_argument("--keys-file", required=True, help="the proxy's --grant-keys-file")
    parser.add_argument("--key-id", required=True, help="which of its keys signs")
    parser.add_argument("--method", required=True, help="PUT, GET, HEAD, DELETE, POST...")
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--expires-in", type=int, help="seconds from now")
    when.add_argument("--expires", type=int, help="a Unix time")
    parser.add_argument("--max-size", help="the largest body, in bytes (K, M, G, T suffixes)")
    parser.add_argument(
        "--page", action="store_true",
        help="print the link to the proxy's web page that uploads with the signed PUT",
    )
    parser.add_argument("url", help="http://proxy:8080/files/NAME, or /files/NAME")
    return parser


def pageLink(signed: str) -> str:
    """The link to the proxy's page (C{/?sr-path=...}) that uploads with C{signed}."""
    parts = urlsplit(signed)
    query = "sr-path=" + parts.path.replace("%", "%25").replace("&", "%26").replace(
        "+", "%2B").replace("#", "%23")
    return urlunsplit((parts.scheme, parts.netloc, "/", query + "&" + parts.query, ""))


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        keys = parseKeys(Path(args.keys_file).read_bytes(), args.keys_file)
        secret = keys.get(args.key_id)
        if secret is None:
            raise ValueError(f"no key {args.key_id} in {args.keys_file}")
        maxSize = parseSize(args.max_size) if args.max_size is not None else None
        if args.page and args.method.upper() != "PUT":
            raise ValueError("--page is for PUT only: the page uploads one file with it")
        signed = signURL(args.url, args.key_id, secret, args.method, expires=args.expires,
                         expiresIn=args.expires_in, maxSize=maxSize)
    except OSError as e:
        print(f"streamrelay-sign: {args.keys_file}: {e.strerror}", file=sys.stderr)
        raise SystemExit(2) from None
    except (ValueError, UsageError) as e:
        print(f"streamrelay-sign: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(pageLink(signed) if args.page else signed)


if __name__ == "__main__":
    main()
