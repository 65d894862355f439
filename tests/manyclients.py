"""
N concurrent uploads of one file (each under its own name) to URL/files/;
prints a JSON summary: statuses, sha256s answered, seconds.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlsplit


def main(count: int, path: str, url: str) -> None:
    data = open(path, "rb").read()
    sha = hashlib.sha256(data).hexdigest()
    where = urlsplit(url)
    statuses: Counter[str] = Counter()
    digests: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(count)

    def one(i: int) -> None:
        try:
            connection = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port,
                                                    timeout=120)
            connection.connect()
            barrier.wait(timeout=60)
            connection.request("PUT", f"/files/many-{i}.bin", body=data)
            response = connection.getresponse()
            answer = json.loads(response.read() or b"{}")
            with lock:
                statuses[str(response.status)] += 1
                digests["match" if answer.get("sha256") == sha else "other"] += 1
        except Exception as e:  # noqa: BLE001 - reported, not raised
            with lock:
                statuses[type(e).__name__] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"statuses": statuses, "digests": digests,
                      "seconds": round(time.monotonic() - started, 2)}), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
