"""
Sending one file with the tus 1.0.0 protocol (C{--resumable}): after a
dropped connection or a restarted backend, the next attempt asks the
server how much it kept (C{HEAD}) and sends only the rest.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin

from treq.client import HTTPClient
from twisted.internet.threads import deferToThread

from streamrelay.digests import hashFilePrefix
from streamrelay.upload.sender import (
    RETRYABLE_STATUS,
    FileSender,
    Stored,
    UploadFailed,
    _describe,
    _json,
    answerFailed,
)
from streamrelay.uris import uriOf

TUS: dict[bytes | str, list[bytes | str]] = {b"tus-resumable": [b"1.0.0"]}
#: Answers after which asking for the offset again and resuming may succeed.
RESUMABLE_STATUS = RETRYABLE_STATUS | {409, 423}


def _failed(response: Any, text: str, what: str) -> UploadFailed:
    return answerFailed(response, text, what, RESUMABLE_STATUS)


class ResumableSender:
    """
    One file sent through C{/uploads}; it remembers its upload across
    attempts, so each attempt after the first resumes it.
    """

    def __init__(
        self,
        client: HTTPClient,
        base: str,
        path: str,
        name: str,
        headers: dict[bytes | str, list[bytes | str]] | None = None,
        say: Callable[[str], object] = lambda line: None,
    ) -> None:
        self.client = client
        self.say = say
        self.endpoint = base.rstrip("/") + "/uploads/"
        self.path = path
        self.name = name
        self.headers: dict[bytes | str, list[bytes | str]] = {**(headers or {}), **TUS}
        self.url: str | None = None

    def _headers(self, **more: bytes) -> dict[bytes | str, list[bytes | str]]:
        extra: dict[bytes | str, list[bytes | str]] = {
            k.replace("_", "-").encode("ascii"): [v] for k, v in more.items()
        }
        return {**self.headers, **extra}

    async def _request(self, method: str, url: str, what: str, **kwargs: Any) -> tuple[Any, str]:
        try:
            target = uriOf(url)
        except ValueError as e:
            raise UploadFailed(f"{what}: not a usable URL {url!r}: {e}") from None
        try:
            response = await self.client.request(method, target, unbuffered=True, **kwargs)
            text = await response.text("utf-8")
        except Exception as e:
            raise UploadFailed(f"{what}: connection failed: {_describe(e)}",
                               retryable=True) from None
        return response, text

    async def _create(self, size: int) -> None:
        metadata = b"filename " + base64.b64encode(self.name.encode("utf-8"))
        response, text = await self._request(
            "POST", self.endpoint, "creating the upload",
            headers=self._headers(upload_length=b"%d" % (size,), upload_metadata=metadata),
        )
        location = response.headers.getRawHeaders(b"location")
        if response.code != 201 or not location:
            raise _failed(response, text, "creating the upload")
        self.url = urljoin(self.endpoint, location[0].decode("ascii"))

    async def _offset(self) -> int | None:
        """The server's offset, or L{None} when the upload is gone."""
        assert self.url is not None
        response, text = await self._request("HEAD", self.url, "asking for the offset",
                                             headers=self._headers())
        if response.code in (404, 410):
            return None
        offset = response.headers.getRawHeaders(b"upload-offset")
        if response.code != 200 or not offset:
            raise _failed(response, text, "asking for the offset")
        return int(offset[0])

    async def send(self, progress: Callable[[int], object]) -> Stored:
        """One attempt: create or resume the upload, send the rest, check it."""
        try:
            size = os.stat(self.path).st_size
        except OSError as e:
            raise UploadFailed(f"cannot read {self.path}: {e.strerror}") from None
        offset = None if self.url is None else await self._offset()
        if offset is None:
            await self._create(size)
            offset = 0
        elif offset:
            self.say(f"resuming {self.name} at byte {offset} of {size}")
        assert self.url is not None
        if offset > size:
            raise UploadFailed(f"the server holds {offset} bytes of a {size}-byte file")
        digest = await deferToThread(hashFilePrefix, self.path, offset)
        progress(offset)
        if offset < size:
            await self._patch(offset, digest, progress)
        return await self._check(size, digest.hexdigest())

    async def _patch(self, offset: int, digest: Any, progress: Callable[[int], object]) -> None:
        assert self.url is not None
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise UploadFailed(f"cannot read {self.path}: {e.strerror}") from None
        try:
            f.seek(offset)
            response, text = await self._request(
                "PATCH", self.url, "sending",
                data=FileSender(f, progress, sha256=digest),
                headers=self._headers(
                    upload_offset=b"%d" % (offset,),
                    content_type=b"application/offset+octet-stream",
                ),
            )
        finally:
            f.close()
        if response.code != 204:
            raise _failed(response, text, "sending")

    async def _check(self, size: int, sha256: str) -> Stored:
        """Succeed only if the server stored exactly the file's bytes."""
        assert self.url is not None
        # The upload's JSON: without Accept, a finished upload answers its bytes.
        response, text = await self._request("GET", self.url, "checking the upload",
                                             headers=self._headers(accept=b"application/json"))
        answer = _json(text)
        stored = answer.get("file")
        if response.code != 200 or not isinstance(stored, dict):
            if response.code == 200:
                raise UploadFailed(
                    f"the server holds {answer.get('offset')} of {size} bytes", retryable=True
                )
            raise _failed(response, text, "checking the upload")
        if stored.get("sha256") != sha256 or stored.get("size") != size:
            raise UploadFailed(
                f"the server stored other bytes (sha256 {stored.get('sha256')}, sent {sha256})"
            )
        return Stored(self.name, size, sha256, 200 if stored.get("replaced") else 201, stored)
