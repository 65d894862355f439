#!/usr/bin/env python3
"""
Container healthcheck for the streamrelay services.

Usage: streamrelay-healthcheck BASE_URL

Healthy (exit 0) only when BASE_URL/healthz (the process is up) and
BASE_URL/readyz (backend: storage writable; proxy: backend reachable) both
answer 200. Otherwise it prints why, which `docker inspect` shows under
State.Health, and exits 1. Standard library only, so it needs nothing
that a slim image lacks (no curl).
"""

import sys
import urllib.error
import urllib.request


def check(base: str, timeout: float = 4.0) -> str | None:
    # No proxy from the environment: the service is on this container's loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for path in ("/healthz", "/readyz"):
        url = base.rstrip("/") + path
        try:
            with opener.open(url, timeout=timeout) as response:
                if response.status != 200:
                    return f"{url}: HTTP {response.status}"
        except urllib.error.HTTPError as e:
            return f"{url}: HTTP {e.code} {e.read(200).decode('utf-8', 'replace')}"
        except (OSError, ValueError) as e:
            return f"{url}: {e}"
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: streamrelay-healthcheck BASE_URL", file=sys.stderr)
        return 2
    problem = check(argv[1])
    if problem is not None:
        print(f"unhealthy: {problem}")
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
