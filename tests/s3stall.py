"""
An S3 server on loopback that stops taking bytes, as a full Ceph RGW does:
it answers C{HEAD} of the bucket, lists nothing, starts multipart
uploads and takes aborts, but once a request with a body (a part, an
object) arrives it stops reading that connection and never answers it.
"""

from __future__ import annotations

from twisted.internet.interfaces import IAddress, IListeningPort, IReactorTCP
from twisted.internet.protocol import Protocol, ServerFactory

CREATED = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<Bucket>b</Bucket><Key>k</Key><UploadId>stalled-1</UploadId>"
    b"</InitiateMultipartUploadResult>"
)

#: Empty listings of objects and of multipart uploads.
LIST = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<Name>b</Name><KeyCount>0</KeyCount><IsTruncated>false</IsTruncated></ListBucketResult>"
)
LISTED = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<Bucket>b</Bucket><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"
)


class StallingS3(Protocol):
    def __init__(self, server: StallingS3Factory) -> None:
        self.server = server
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\r\n\r\n" in self._buffer:
            head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            method, target = lines[0].split(b" ")[:2]
            self.server.asked.append(method + b" " + target)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if method == b"PUT" and length:
                self.server.stalled += 1
                self.transport.pauseProducing()  # type: ignore[union-attr]
                return
            if method == b"POST" and target.endswith(b"?uploads="):
                body = CREATED
            elif method == b"GET":
                body = LISTED if b"uploads" in target else LIST
            else:
                body = b""
            status = b"204 No Content" if method == b"DELETE" else b"200 OK"
            self.transport.write(  # type: ignore[union-attr]
                b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            )


class StallingS3Factory(ServerFactory):
    def __init__(self) -> None:
        self.asked: list[bytes] = []
        self.stalled = 0

    def buildProtocol(self, addr: IAddress | None) -> StallingS3:
        return StallingS3(self)

    def listen(self, reactor: IReactorTCP) -> IListeningPort:
        return reactor.listenTCP(0, self, interface="127.0.0.1")
