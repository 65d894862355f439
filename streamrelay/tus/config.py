"""
The backend's options for resumable uploads, and how they are wired.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.python import usage

from streamrelay.hooks.clients import ClientContexts
from streamrelay.hooks.interfaces import IHooks
from streamrelay.store import IUploadStore
from streamrelay.store.s3.store import OWN_FOLDER, S3Store
from streamrelay.store.writer import Runner
from streamrelay.tus.disk import DiskResumableStore
from streamrelay.tus.interfaces import IResumableStore
from streamrelay.tus.lease import DEFAULT_TTL, ILeases, S3Leases
from streamrelay.tus.protocol import DEFAULT_EXPIRY, TusUploads
from streamrelay.tus.s3 import S3ResumableStore
from streamrelay.tus.service import TusService

#: Where resumable uploads are kept under a folder storage.
TUS_FOLDER = ".tus"
#: Where the leases of resumable uploads kept in a bucket are, under its prefix.
LEASE_FOLDER = OWN_FOLDER + "leases/"

RESUMABLE_OPTIONS = [
    ["resumable-dir", None, None,
     "Folder for unfinished resumable (tus) uploads; default STORAGE/.tus. With "
     "s3:// storage they are kept in the bucket, so every backend sharing it can "
     "continue them, unless this names a folder. [env STREAMRELAY_RESUMABLE_DIR]"],
    ["resumable-expiry", None, str(int(DEFAULT_EXPIRY)),
     "Seconds an unfinished resumable upload is kept after its last write. "
     "[env STREAMRELAY_RESUMABLE_EXPIRY]"],
    ["resumable-lease-ttl", None, str(int(DEFAULT_TTL)),
     "With s3:// storage, seconds a backend's lease on a resumable upload lasts unless "
     "renewed (every third of it): how long an upload a crashed backend was writing stays "
     "locked (423) for the others. [env STREAMRELAY_RESUMABLE_LEASE_TTL]"],
]


def checkResumableOptions(options: Any) -> None:
    try:
        options["resumable-expiry"] = float(options["resumable-expiry"])
    except ValueError:
        raise usage.UsageError("--resumable-expiry takes a number of seconds") from None
    if options["resumable-expiry"] <= 0:
        raise usage.UsageError("--resumable-expiry is more than 0")
    try:
        options["resumable-lease-ttl"] = float(options["resumable-lease-ttl"])
    except ValueError:
        raise usage.UsageError("--resumable-lease-ttl takes a number of seconds") from None
    if not 3 <= options["resumable-lease-ttl"] <= 3600:
        raise usage.UsageError("--resumable-lease-ttl is 3 to 3600 seconds")


def makeResumable(
    options: Any,
    store: IUploadStore,
    reactor: Any,
    run: Runner,
    hooks: IHooks | None = None,
    contexts: ClientContexts | None = None,
) -> tuple[TusUploads, TusService]:
    """The tus protocol over C{store}, and the service sweeping it."""
    folder = options["resumable-dir"]
    resumable: IResumableStore
    leases: ILeases | None = None
    if folder:
        resumable = DiskResumableStore(Path(folder), store, run=run)
    elif isinstance(store, S3Store):
        resumable = S3ResumableStore(store)
        # Every backend sharing the bucket may write any upload: one at a time.
        leases = S3Leases(
            store.client, store.prefix + LEASE_FOLDER, reactor,
            ttl=options["resumable-lease-ttl"],
        )
    else:
        resumable = DiskResumableStore(Path(options["storage"]) / TUS_FOLDER, store, run=run)
    uploads = TusUploads(
        resumable,
        store,
        reactor,
        maxSize=options["max-size"],
        expiry=options["resumable-expiry"],
        hooks=hooks,
        contexts=contexts,
        leases=leases,
    )
    interval = min(60.0, options["resumable-expiry"] / 4)
    return uploads, TusService(uploads, reactor, interval)
