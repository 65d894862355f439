"""
The store seam: what the backend's routes need from storage.

A store keeps named files.  A new version of a file is written through an
L{IUpload} and becomes visible under its name only when committed; an
aborted upload leaves nothing behind.  Stores only store: limits, names
and HTTP errors are the routes' business.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from streamrelay.splicing import FileTarget


class StorageUnavailable(Exception):
    """
    The storage did not answer, or failed inside, even after retries (an
    S3 service down), or refuses writes (a disk remounted read-only):
    answered C{503 storage_unavailable}, to try again.
    """


class StorageFull(Exception):
    """The store has no room left (disk full or quota reached)."""


class NameTaken(Exception):
    """A file has the name already, and the upload was to be a new file."""

    def __init__(self, name: str) -> None:
        super().__init__(f"a file called {name!r} exists already")
        self.name = name


class NotAFile(Exception):
    """
    Something other than a file (a folder someone made in the store) has
    the name: no upload can take it.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"{name!r} is not a file in the store")
        self.name = name


@dataclass(frozen=True)
class FileInfo:
    """A stored file, as listed and answered."""

    name: str
    size: int
    sha256: str
    #: POSIX time of the version's last write.
    modified: float
    #: What the application keeps with this version (see
    #: L{streamrelay.store.metadata}); L{None} when nothing.
    metadata: Mapping[str, str] | None = None


class IUpload(IConsumer):
    """
    One new version of a file, being received.

    Bytes are written with C{write}; a store that cannot keep up pauses
    the registered producer.
    """

    name: str = Attribute("The name the file will take once committed.")
    size: int = Attribute("Bytes written so far.")

    def commit(sha256: str) -> Deferred[tuple[FileInfo, bool]]:
        """
        Flush everything to stable storage and make the file visible under
        its name, replacing any older version atomically.

        @param sha256: the hex SHA-256 of the bytes written, kept with it.
        @return: the stored file, and whether it replaced an older version.
        """

    def abort() -> None:
        """Throw away what was written; nothing stays behind."""


class ISpliceTarget(IConsumer):
    """
    A consumer (an upload, or what passes bytes on to one) kept in a local
    file that a request body may be written into directly, with
    C{splice(2)} (see L{streamrelay.splicing}), sparing the copies through
    Python: what the streaming layer looks for (C{providedBy}) before it
    splices a body into its consumer.  C{fileTarget} may still decline.
    """

    def fileTarget() -> FileTarget | None:
        """
        The file to write the body into, from its start; L{None} when it
        cannot be lent (anything was written already, or it was lent once).
        """

    def wroteToFile(data: memoryview) -> None:
        """
        C{data} landed in the file lent by L{fileTarget} (read back from
        it), in order: counted as if written with C{write}.
        """


class IExclusiveUpload(IUpload):
    """
    An upload that can take its name only while no file has it, in one
    atomic step (C{If-None-Match: *}): of two such uploads, one loses.
    """

    def commitNew(sha256: str) -> Deferred[FileInfo]:
        """
        Like L{IUpload.commit}, but fail with L{NameTaken}, keeping nothing,
        when a file has the name by then.
        """


class IRevocableUpload(IUpload):
    """
    An upload whose commit can be taken back: how a form whose later file
    fails to be stored takes back the files stored before it.
    """

    def commitRevocably(sha256: str) -> Deferred[tuple[FileInfo, bool]]:
        """
        Like L{IUpload.commit}, but the version replaced is kept aside until
        L{revoke} or L{settle}.
        """

    def revoke() -> Deferred[None]:
        """
        Take the commit back: the version it replaced is under the name
        again, or the name is free again if there was none.  A version
        stored meanwhile by another upload stays.
        """

    def settle() -> Deferred[None]:
        """Keep the commit: drop the version kept aside for L{revoke}."""


class ISealableUpload(IUpload):
    """
    An upload that can let go of what it holds open (its file) once its
    last byte is written, and be committed later: how a form with many
    files holds a few open files at a time, not one per file.
    """

    def seal() -> Deferred[None]:
        """
        Flush what was written to where it is kept, and release the file;
        after that only a commit (of any kind) or L{IUpload.abort} may
        follow.  Called at most once.
        """


class IStoredFile(Interface):
    """
    A stored file opened for reading: its info and bytes stay those of the
    version opened, even if a new version replaces it meanwhile.
    """

    info: FileInfo = Attribute("The version opened.")

    def stream(start: int, end: int, consumer: IConsumer) -> Deferred[None]:
        """
        Write bytes C{start} to C{end} (exclusive) to C{consumer}, as a push
        producer registered with it; fires when all were written.
        Cancelling stops it.
        """

    def close() -> None:
        """Release the file."""


class IUploadStore(Interface):
    """Named files, each written whole or not at all."""

    def begin(name: str, metadata: Mapping[str, str] | None = None) -> IUpload:
        """
        Start receiving a new version of C{name}; nothing is visible yet.
        Once committed, the version has C{metadata} (bounded already, see
        L{streamrelay.store.metadata}) and no other: a version it replaces
        takes its metadata along.  Raises L{NotAFile} if C{name} is known
        to be something no file can replace.
        """

    def stat(name: str) -> Deferred[FileInfo | None]:
        """The stored file called C{name}, or L{None}."""

    def open(name: str) -> Deferred[IStoredFile | None]:
        """The stored file called C{name} opened for reading, or L{None}."""

    def list(after: str | None, limit: int) -> Deferred[tuple[list[FileInfo], bool]]:
        """
        Up to C{limit} files whose names sort after C{after} (by code point),
        in that order, and whether more follow.  Files whose names no upload
        could take (put there by other means) are left out.
        """

    def delete(name: str) -> Deferred[bool]:
        """Remove C{name}; whether it existed."""

    def sweep() -> int:
        """Remove what interrupted uploads left behind; return how many."""
