"""
C{multipart/form-data} uploads, parsed as they stream: each file part goes
straight into the store under its (sanitized) file name.  A form is stored
whole or not at all: the files of a form are published once its body is
complete, and if one fails to be, those published before it are taken back.

A form holds at most C{maxFiles} files, and a few open files at a time:
each file part is sealed (flushed and closed, see L{ISealableUpload}) as
soon as it ends, and while L{MAX_OPEN_FILES} are still being sealed the
form's body waits.  So a form of many small files is taken a few files per
reactor turn, and other requests are served meanwhile.

Before a file part stores a byte, the C{pre-create} hook is asked about it
(its file name, size unknown); meanwhile the form is held, so it parses
nothing more and its body is paused.  A refusal fails the whole form; a
decision names the file, bounds its size and gives its metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from streamrelay.digests import HashingConsumer
from streamrelay.errors import ApiError, badName
from streamrelay.hooks.decisions import PreCreateAsker, allowAll
from streamrelay.hooks.interfaces import Decision
from streamrelay.names import MAX_NAME_BYTES, BadName, validateName
from streamrelay.store import FileInfo, IUpload, IUploadStore
from streamrelay.store.interfaces import IRevocableUpload, ISealableUpload

#: Bounds on what a part's headers and a plain (non-file) field may hold.
MAX_PART_HEADERS = 16
MAX_PART_HEADER_SIZE = 8192
MAX_FIELD_BYTES = 64 * 1024

#: Files one form may hold unless told otherwise (C{--max-form-files}).
DEFAULT_MAX_FORM_FILES = 1000

#: Files of a form being sealed at once (as many as the backend's disk
#: threads); while this many are, the form takes no more of its body.
MAX_OPEN_FILES = 16

# python_multipart logs each parse error it raises, as a raw line in the
# service's log that names no request; the form's 400 answer and its
# "upload failed" line say it instead.
_parserLog = logging.getLogger("python_multipart")
_parserLog.addHandler(logging.NullHandler())
_parserLog.propagate = False


def malformed(why: str) -> ApiError:
    return ApiError(400, "bad_request", f"The multipart body is malformed: {why}.")


def tooManyFiles(limit: int) -> ApiError:
    return ApiError(
        413, "too_many_files",
        f"A form may hold at most {limit} files; nothing of it was stored.",
    )


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


class _Asking:
    """A file part whose C{pre-create} decision is awaited."""

    def __init__(self, name: str) -> None:
        self.name = name
        #: The part's bytes parsed meanwhile (at most one piece of the body).
        self.chunks: list[bytes] = []
        self.ended = False
        self.holding = False


@implementer(IPushProducer)
class _PartProducer:
    """
    What the upload of one file part pauses and resumes: while it is
    paused, it holds the whole form (see L{FormUpload}).
    """

    def __init__(self, hold: Callable[[], None], release: Callable[[], None]) -> None:
        self._hold = hold
        self._release = release
        self._paused = False

    def pauseProducing(self) -> None:
        if not self._paused:
            self._paused = True
            self._hold()

    def resumeProducing(self) -> None:
        if self._paused:
            self._paused = False
            self._release()

    def stopProducing(self) -> None:
        # The upload takes nothing more: it holds the form no longer.
        self.resumeProducing()


@implementer(IConsumer)
class FormUpload:
    """
    Consumes a form body; after the body ended, L{commit} makes every file
    in it visible, or L{abort} throws all away.

    The body is parsed a piece at a time (each piece holds at most one
    boundary), and not while the form is held: by the upload of a file part
    that paused it, or by L{MAX_OPEN_FILES} parts being sealed.  What a held
    form has not parsed yet waits (at most one read of the body), and the
    body is paused until the form is let go.

    With a store whose uploads are not L{IRevocableUpload}, a file that
    fails to be published leaves those published before it in place.

    @param tooLarge: raised (with the limit) when the body passes C{maxSize}.
    @param maxFiles: the most file parts the form may hold; one more is
        refused with C{413 too_many_files} before it is stored.
    @param ask: asks the C{pre-create} hook about each file part.
    """

    _log = Logger()

    def __init__(
        self,
        store: IUploadStore,
        boundary: bytes,
        maxSize: int | None,
        tooLarge: type[Exception],
        maxFiles: int | None = DEFAULT_MAX_FORM_FILES,
        ask: PreCreateAsker = allowAll,
    ) -> None:
        self._store = store
        self._ask = ask
        self._asking: _Asking | None = None
        self._maxSize = maxSize
        self._tooLarge = tooLarge
        self._maxFiles = maxFiles
        self._producer: IPushProducer | None = None
        self.size = 0
        self._ended = False
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._fieldBytes = 0
        self._current: _FilePart | None = None
        self._parts: list[_FilePart] = []
        # Parsing a piece at a time, and holding.
        self._delimiter = b"\r\n--" + boundary
        self._unparsed = b""
        self._offset = 0
        self._parsing = False
        self._pauses = 0
        self._sealing: set[_FilePart] = set()
        self._whenSealed: list[Deferred[None]] = []
        self._bodyPaused = False
        self._error: BaseException | None = None
        self._aborted = False
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

    @property
    def files(self) -> int:
        """File parts received so far, the one arriving included."""
        return len(self._parts) + (self._current is not None) + (self._asking is not None)

    # IConsumer

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._producer = producer if IPushProducer.providedBy(producer) else None

    def unregisterProducer(self) -> None:
        self._producer = None

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self._maxSize is not None and self.size > self._maxSize:
            raise self._tooLarge(self._maxSize)
        if self._error is not None:
            raise self._error
        if self._ended:
            return  # the epilogue after the closing boundary
        if self._offset < len(self._unparsed):
            data = self._unparsed[self._offset :] + data
        self._unparsed, self._offset = data, 0
        self._parse()

    # Parsing, a piece at a time

    def _parse(self) -> None:
        """
        Feed the parser what came, a piece at a time, while the form is not
        held; then pause the body if it is.
        """
        if self._parsing:
            return  # the parsing under way goes on
        self._parsing = True
        try:
            while self._offset < len(self._unparsed) and not self._ended and not self._held():
                end = self._unparsed.find(self._delimiter, self._offset + 1)
                end = len(self._unparsed) if end < 0 else end
                piece = self._unparsed[self._offset : end]
                self._offset = end
                try:
                    self._parser.write(piece)
                except MultipartParseError as e:
                    raise malformed(str(e).rstrip(".") or "unreadable") from None
        finally:
            self._parsing = False
            if self._ended:
                self._unparsed, self._offset = b"", 0
        self._update()

    def _held(self) -> bool:
        return self._pauses > 0 or len(self._sealing) >= MAX_OPEN_FILES

    def _hold(self) -> None:
        self._pauses += 1
        self._update()

    def _release(self) -> None:
        self._pauses -= 1
        self._continue()

    def _continue(self) -> None:
        """
        Go on once a hold ended: parse what waits, then let the body come.
        A failure here fails the form: the body is let come, so that its
        next write (or the commit) raises it.
        """
        if self._parsing or self._aborted:
            return
        try:
            self._parse()
        except Exception as e:
            self._failed(e)

    def _failed(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._unparsed, self._offset = b"", 0
        self._update()

    def _update(self) -> None:
        """Pause the body while the form is held (and not failed); else resume it."""
        if self._producer is None or self._aborted:
            return
        hold = self._held() and self._error is None
        if hold and not self._bodyPaused:
            self._bodyPaused = True
            self._producer.pauseProducing()
        elif not hold and self._bodyPaused and not self._parsing:
            self._bodyPaused = False
            self._producer.resumeProducing()

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
        if self._maxFiles is not None and self.files >= self._maxFiles:
            raise tooManyFiles(self._maxFiles)
        try:
            name = sanitizeFileName(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise badName("The file name is not valid UTF-8.") from None
        except BadName as e:
            raise badName(str(e)) from None
        # Held until decided, whether the answer is there at once or not: a
        # Deferred's C{called} does not tell (one may be called and still
        # wait on another).  Released within the parsing, the hold stops
        # nothing.
        asking = self._asking = _Asking(name)
        asking.holding = True
        self._hold()
        self._ask(name, None, None).addCallbacks(
            self._decided, self._refused, callbackArgs=(asking,), errbackArgs=(asking,)
        )

    def _decided(self, decision: Decision, asking: _Asking) -> None:
        """Store the part as decided: what was parsed meanwhile first."""
        if self._asking is not asking:
            return  # aborted meanwhile
        self._asking = None
        try:
            name = decision.name or asking.name
            upload = self._store.begin(name, decision.metadata)
            upload.registerProducer(_PartProducer(self._hold, self._release), True)
            sink = HashingConsumer(upload, decision.maxSize, self._tooLarge)
            part = _FilePart(name, upload, sink)
            self._current = part
            for chunk in asking.chunks:
                part.sink.write(chunk)
            if asking.ended:
                self._partEnd()
        except Exception as e:
            self._failed(e)
        if asking.holding:
            self._release()

    def _refused(self, failure: Failure, asking: _Asking) -> None:
        if self._asking is not asking:
            return
        self._asking = None
        assert failure.value is not None
        self._failed(failure.value)
        if asking.holding:
            self._release()

    def _partData(self, data: bytes, start: int, end: int) -> None:
        if self._asking is not None:
            self._asking.chunks.append(data[start:end])
        elif self._current is not None:
            self._current.sink.write(data[start:end])
        else:
            self._fieldBytes += end - start
            if self._fieldBytes > MAX_FIELD_BYTES:
                raise malformed(f"its plain fields hold more than {MAX_FIELD_BYTES} bytes")

    def _partEnd(self) -> None:
        if self._asking is not None:
            self._asking.ended = True
            return
        part, self._current = self._current, None
        if part is None:
            return
        self._parts.append(part)
        if ISealableUpload.providedBy(part.upload):
            self._sealing.add(part)
            part.upload.seal().addBoth(self._sealed, part)

    def _end(self) -> None:
        self._ended = True

    # Sealing

    def _sealed(self, result: None | Failure, part: _FilePart) -> None:
        self._sealing.discard(part)
        if isinstance(result, Failure):
            assert result.value is not None
            self._failed(result.value)
        if not self._sealing:
            waiting, self._whenSealed = self._whenSealed, []
            for d in waiting:
                d.callback(None)
        self._continue()

    def _allSealed(self) -> Deferred[None]:
        if not self._sealing:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._whenSealed.append(d)
        return d

    # After the body

    async def commit(self) -> list[FileInfo]:
        """Make every file of the form visible; the form must be complete."""
        if self._error is not None:
            raise self._error
        if not self._ended:
            raise malformed("it ended before its closing boundary")
        if not self._parts:
            raise ApiError(400, "bad_request", "The form holds no file.")
        await self._allSealed()
        if self._error is not None:
            raise self._error
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
        self._aborted = True
        self._producer = None
        self._unparsed, self._offset = b"", 0
        for part in [*self._parts, *([self._current] if self._current else [])]:
            part.upload.abort()
        self._parts = []
        self._current = None
        self._asking = None
