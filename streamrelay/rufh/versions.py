"""
What each interop version of draft-ietf-httpbis-resumable-upload sends
and expects, as streamrelay speaks it.

A client of a draft sends C{Upload-Draft-Interop-Version: N} on every
request; a server sends C{104 Upload Resumption Supported} only to a
version it speaks, and puts the same header in it (every draft's "Draft
Version Identification" section).  The versions, checked in the drafts
themselves (httpwg/http-extensions, tags draft-ietf-httpbis-resumable-
upload-NN):

=======  =========  ====================================================
interop  drafts     who sends it
=======  =========  ====================================================
3        -01        Apple URLSession (iOS 17)
5        -03        tus-js-client C{protocol: 'ietf-draft-03'}
6        -04, -05   tus-js-client C{protocol: 'ietf-draft-05'}, iOS 18
8        -09 .. -11 the latest draft (-11, March 2026; the editor's
                    copy after it is still 8)
=======  =========  ====================================================

(4 is -02 and 7 is -06 to -08: not spoken; their clients get a plain
upload, as the drafts require.)

Per version:

- Completeness: 3 has C{Upload-Incomplete} (C{?1} = more to come); 5 and
  later C{Upload-Complete} (C{?1} = this request ends the upload).  Both
  are structured-field booleans.
- C{Upload-Offset}: an sf-integer on appends (required) and in answers.
- Appends (C{PATCH}): 3 and 5 name no media type; 6 and 8 require
  C{Content-Type: application/partial-upload} (streamrelay answers 415
  otherwise).
- C{Upload-Length}: defined from 8 (the whole representation's length,
  also implied by C{Upload-Complete: ?1} with C{Content-Length}); earlier
  versions imply it only from C{Upload-Complete: ?1} + C{Content-Length}.
  streamrelay reads it in every version (tus-js-client sends it on its
  creation) and reports it on C{HEAD} when known.
- C{Upload-Limit} (a Dictionary): from 6, with C{max-size} and
  C{expires} (seconds left); 8 renames C{expires} to C{max-age}.  It goes
  in the 104, creation answers and C{HEAD}.
- The 104 to a creation: C{Location} (the upload's URL) and
  C{Upload-Draft-Interop-Version}, plus C{Upload-Limit} from 6.
- C{HEAD}: C{204} with C{Upload-Offset}, the completeness header and
  C{Cache-Control: no-store}; 3 to 6 refuse (400) a C{HEAD} or
  C{DELETE} carrying C{Upload-Offset} or the completeness header.
- An unfinished append or creation is acknowledged with C{201} in 3 to 6
  (with C{Upload-Offset} and the completeness header saying "not
  complete"), C{204} (append) or C{201} with C{Location} (creation) in 8.
- Offset mismatch: C{409} with the upload's C{Upload-Offset}; from 6 a
  problem (RFC 9457) of type C{https://iana.org/assignments/
  http-problem-types#mismatching-upload-offset} with C{expected-offset}
  and C{provided-offset} (streamrelay sends that problem to all).
- Appending to a completed upload: C{400}, problem type
  C{#completed-upload} (6); in 8 C{#inconsistent-upload-length} when the
  append has content.
- The request that completes an upload gets what the target resource
  answers for a whole upload (here: the plain upload's C{201}/C{200} with
  the file's JSON) with C{Upload-Complete: ?1} (3: C{Upload-Incomplete:
  ?0}).
- Cancellation: C{DELETE} on the upload's URL, C{204}.
- Takeover: a new request on an upload (offset retrieval, append,
  cancellation) while an earlier creation or append still streams into it
  ends the earlier one first (3 and 5 "MAY", 8 "SHOULD"): the earlier
  request keeps what it received.
- Digests (6 and 8): C{Repr-Digest} on creation covers the whole
  representation and is checked on completion (a mismatch fails the
  upload: nothing is published); C{Content-Digest} covers one request's
  content (a mismatch appends nothing of it).
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.web.iweb import IRequest

VERSION_HEADER = b"upload-draft-interop-version"
PARTIAL_UPLOAD = b"application/partial-upload"


@dataclass(frozen=True)
class InteropVersion:
    """
    One interop version of the draft.

    @ivar number: the C{Upload-Draft-Interop-Version} value.
    @ivar draft: the draft revision(s) it stands for.
    @ivar incompleteHeader: completeness is C{Upload-Incomplete} (inverted).
    @ivar appendType: the media type appends must carry, or L{None}.
    @ivar limitAge: the C{Upload-Limit} key for the upload's lifetime, or
        L{None} when the version has no C{Upload-Limit} at all.
    @ivar pendingStatus: the status acknowledging an unfinished append.
    @ivar strictQueries: C{HEAD}/C{DELETE} with C{Upload-Offset} or the
        completeness header are refused.
    @ivar contentForCompleted: an append with content to a completed upload
        is an inconsistent length (8), not just a completed upload.
    @ivar creationLocation: a creation's final answer, even one that
        completed the upload, names the upload in C{Location} (drafts -01 to
        -05: "the server MUST include the Location header field in the
        response" and set it to the upload's URL; the file is then named in
        C{Content-Location}); from -09 on, a completed upload's answer is the
        target resource's own and names the file.
    """

    number: int
    draft: str
    incompleteHeader: bool
    appendType: bytes | None
    limitAge: bytes | None
    pendingStatus: int
    strictQueries: bool
    contentForCompleted: bool
    creationLocation: bool

    @property
    def completeHeader(self) -> bytes:
        return b"upload-incomplete" if self.incompleteHeader else b"upload-complete"

    def completeValue(self, complete: bool) -> bytes:
        """The completeness header's value saying C{complete}."""
        return b"?1" if complete != self.incompleteHeader else b"?0"

    @property
    def header(self) -> bytes:
        return b"%d" % (self.number,)


VERSIONS: dict[int, InteropVersion] = {
    v.number: v
    for v in (
        InteropVersion(3, "01", True, None, None, 201, True, False, True),
        InteropVersion(5, "03", False, None, None, 201, True, False, True),
        InteropVersion(6, "04, 05", False, PARTIAL_UPLOAD, b"expires", 201, True, False, True),
        InteropVersion(8, "09, 10, 11", False, PARTIAL_UPLOAD, b"max-age", 204, False, True,
                       False),
    )
}
LATEST = VERSIONS[8]


def announced(request: IRequest) -> bytes | None:
    """The C{Upload-Draft-Interop-Version} a request carries, as sent."""
    value = request.getHeader(VERSION_HEADER)
    return None if value is None else value.strip()


def versionOf(request: IRequest) -> InteropVersion | None:
    """The interop version a request announces, if streamrelay speaks it."""
    value = announced(request)
    if value is None or not value.isdigit() or len(value) > 3:
        return None
    return VERSIONS.get(int(value))


def supported() -> str:
    return ", ".join(str(n) for n in VERSIONS)
