"""
Upload a file with tuspy (the tus project's Python client) to a tus
endpoint, retrying from the server's offset after a failure; print the
upload URL, then DONE.

    python tuspy_upload.py ENDPOINT FILE NAME [TOKEN]
"""

from __future__ import annotations

import sys

from tusclient import client


def main(endpoint: str, path: str, name: str, token: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    tus = client.TusClient(endpoint, headers=headers)
    uploader = tus.uploader(
        path, chunk_size=1 << 62, metadata={"filename": name}, retries=10, retry_delay=1
    )
    uploader.upload()
    print("URL", uploader.url, flush=True)
    print("DONE", uploader.offset, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
