"""
C{multipart/form-data} uploads, parsed as they stream: each file part goes
straight into the store under its (sanitized) file name.  A form is stored
whole or not at all: the files of a form are published once its body is
complete, and if one fails to be, those published before it are taken back.
"""

from __future__ import annotations

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from twisted.internet.interfaces import IConsumer, IProducer
from twisted.logger import Logger
from zope.interface import implementer

from streamrelay.digests import HashingConsumer
from streamrelay.errors import ApiError, badName
from streamrelay.names import MAX_NAME_BYTES, BadName, validateName
from streamrelay.store import FileInfo, IUpload, IUploadStore
from streamrelay.store.interfaces import IRevocableUpload

#: Bounds on what a part's headers and a plain (non-file) field may hold.
MAX_PART_HEADERS = 16
MAX_PART_HEADER_SIZE = 8192
MAX_FIELD_BYTES = 64 * 1024


def malformed(why: str) -> ApiError:
    return ApiError(400, "bad_request", f"The multipart body is malformed: {why}.")


def boundaryOf(contentType: bytes | None) -> bytes:
    """The boundary of a C{multipart/form-data} content type, or a 400."""
    if contentType is None:
        raise malformed("it has no Content-Type")
    kind, params = parse_options_header(contentType)
    if kind != b"multipart/form-data":
        raise ApiError(
            400, "bad_request", "POST /files takes a multipart/form-data body."
        )
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise malformed("its Content-Type names no usable boundary")
    return boundary


def sanitizeFileName(raw: str) -> str:
    """
    A name to store a form's file under: its last path component (browsers
    on some systems send a whole path), control characters replaced, no
    leading dots or spaces, at most 255 bytes.
    """
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join("_" if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 else c for c in name)
    name = name.lstrip(". ").rstrip()
    encoded = name.encode("utf-8", "surrogatepass")
    if len(encoded) > MAX_NAME_BYTES:
        name = encoded[:MAX_NAME_BYTES].decode("utf-8", "ignore")
    return validateName(name)


class _FilePart:
    def __init__(self, name: str, upload: IUpload, sink: HashingConsumer) -> None:
        self.name = name
        self.upload = upload
        self.sink = sink


@implementer(IConsumer)
class FormUpload:
    """
    Consumes a form body; after the body ended, L{commit} makes every file
    in it visible, or L{abort} throws all away.

    With a store whose uploads are not L{IRevocableUpload}, a file that
    fails to be published leaves those published before it in place.

    @param tooLarge: raised (with the limit) when the body passes C{maxSize}.
    """

    _log = Logger()

    def __init__(
        self,
        store: IUploadStore,
        boundary: bytes,
        maxSize: int | None,
        tooLarge: type[Exception],
    ) -> None:
        self._store = store
        self._maxSize = maxSize
        self._tooLarge = tooLarge
        self._producer: IProducer | None = None
        self.size = 0
        self._ended = False
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._fieldBytes = 0
        self._current: _FilePart | None = None
        self._parts: list[_FilePart] = []
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._partBegin,
                "on_header_field": self._headerField,
                "on_header_value": self._headerValue,
                "on_header_end": self._headerEnd,
                "on_headers_finished": self._headersFinished,
                "on_part_data": self._partData,
                "on_part_end": self._partEnd,
                "on_end": self._end,
            },
            max_header_count=MAX_PART_HEADERS,
            max_header_size=MAX_PART_HEADER_SIZE,
        )

    # IConsumer

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._maxSize is not None and self.size > self._maxSize:
            raise self._tooLarge(self._maxSize)
        if self._ended:
            return  # the epilogue after the closing boundary
        try:
            self._parser.write(data)
        except MultipartParseError as e:
            raise malformed(str(e).rstrip(".") or "unreadable") from None

    # Parser callbacks

    def _partBegin(self) -> None:
        self._headers = {}
        self._field = self._value = b""

    def _headerField(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _headerValue(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _headerEnd(self) -> None:
        self._headers[self._field.strip().lower()] = self._value.strip()
        self._field = self._value = b""

    def _headersFinished(self) -> None:
        disposition = self._headers.get(b"content-disposition")
        if disposition is None:
            raise malformed("a part has no Content-Disposition")
        _kind, params = parse_options_header(disposition)
        raw = params.get(b"filename")
        if raw is None or raw == b"":
            return  # a plain field, or a file input left empty
        try:
            name = sanitizeFileName(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise badName("The file name is not valid UTF-8.") from None
        except BadName as e:
            raise badName(str(e)) from None
        upload = self._store.begin(name)
        if self._producer is not None:
            upload.registerProducer(self._producer, True)
        self._current = _FilePart(name, upload, HashingConsumer(upload))

    def _partData(self, data: bytes, start: int, end: int) -> None:
        if self._current is not None:
            self._current.sink.write(data[start:end])
        else:
            self._fieldBytes += end - start
            if self._fieldBytes > MAX_FIELD_BYTES:
                raise malformed(f"its plain fields hold more than {MAX_FIELD_BYTES} bytes")

    def _partEnd(self) -> None:
        if self._current is not None:
            self._parts.append(self._current)
            self._current = None

    def _end(self) -> None:
        self._ended = True

    # After the body

    async def commit(self) -> list[FileInfo]:
        """Make every file of the form visible; the form must be complete."""
        if not self._ended:
            raise malformed("it ended before its closing boundary")
        if not self._parts:
            raise ApiError(400, "bad_request", "The form holds no file.")
        stored = []
        published: list[IUpload] = []
        try:
            for part in self._parts:
                part.upload.unregisterProducer()
                sha256 = part.sink.hexdigest()
                if IRevocableUpload.providedBy(part.upload):
                    info, _replaced = await part.upload.commitRevocably(sha256)
                    published.append(part.upload)
                else:
                    info, _replaced = await part.upload.commit(sha256)
                stored.append(info)
        except BaseException:
            # Latest first: two parts of one name are taken back in turn.
            for upload in reversed(published):
                await self._settle(upload, revoke=True)
            raise
        for upload in published:
            await self._settle(upload, revoke=False)
        self._parts = []
        return stored

    async def _settle(self, upload: IUpload, revoke: bool) -> None:
        """Revoke or settle a published file; a failure to is only logged."""
        assert IRevocableUpload.providedBy(upload)
        try:
            if revoke:
                await upload.revoke()
            else:
                await upload.settle()
        except Exception as e:
            self._log.warn(
                "could not {what} {name!r} of a form: {error}",
                what="take back" if revoke else "settle", name=upload.name, error=e,
            )

    def abort(self) -> None:
        for part in [*self._parts, *([self._current] if self._current else [])]:
            part.upload.abort()
        self._parts = []
        self._current = None
