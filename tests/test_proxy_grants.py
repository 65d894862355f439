"""
Signed upload URLs at the proxy, in memory: what it lets through, what it
refuses before the backend is asked, what the backend gets (no C{sr-*}
parameters; the client's address and identity in C{Streamrelay-Client-*}),
and the signed C{Location} of a resumable upload created with a grant.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from streamrelay.auth import TokenFile
from streamrelay.grants import GrantKeys, signURL
from streamrelay.proxy.routes import ProxyRoutes
from streamrelay.streaming import StreamingChannel
from tests.grantkeys import SECRET1, SECRET2, writeKeys
from tests.proxyharness import FORM, ProxyTestCase, Seen
from tests.rawrequests import TUS, chunk, get, patch, put, req

EXPIRES = 1000
CLIENT_HEADERS = (b"streamrelay-client-address", b"streamrelay-client-identity",
                  b"streamrelay-client-authorization")


def signed(path: str, method: str = "PUT", key: str = "k1", secret: bytes = SECRET1,
           **kwargs: Any) -> bytes:
    kwargs.setdefault("expires", EXPIRES)
    return signURL(path, key, secret, method, **kwargs).encode("ascii")


def chunked(target: bytes, *chunks: bytes) -> bytes:
    head = b"PUT " + target + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + b"".join(chunk(c) for c in chunks) + chunk(b"")


class GrantTestCase(ProxyTestCase):
    tokens = b"# tokens\nalice t0ken\nbare-token\n"
    secret: bytes | None = None

    def makeRoutes(self, **kwargs: Any) -> ProxyRoutes:
        keys = GrantKeys(writeKeys(Path(self.mktemp())))
        tokens = Path(self.mktemp())
        tokens.write_bytes(self.tokens)
        kwargs.setdefault("tokens", TokenFile(tokens))
        return super().makeRoutes(grantKeys=keys, secret=self.secret, **kwargs)

    def refused(self, data: bytes, status: int, code: str) -> None:
        self.assertError(self.request(data), status, code)
        self.assertNotAsked()

    def clientHeaders(self, seen: Seen) -> dict[bytes, list[bytes]]:
        return {name: seen.header(name) for name in CLIENT_HEADERS if seen.header(name)}


class SignedRequestTests(GrantTestCase):
    def test_validWithoutToken(self) -> None:
        """
        A signed request needs no token although --tokens-file is set; the
        backend gets it without the sr-* parameters, other parameters kept.
        """
        for data, target in [
            (put(signed("/files/a%20b.txt?x=1"), b"hello"), b"/files/a%20b.txt?x=1"),
            (get(signed("/files/a", "GET")), b"/files/a"),
            (get(signed("/files/a", "HEAD"), method=b"HEAD"), b"/files/a"),
            (get(signed("/files/a", "DELETE"), method=b"DELETE"), b"/files/a"),
            (get(signed("/files?prefix=a", "GET", key="k2", secret=SECRET2)), b"/files?prefix=a"),
        ]:
            seen = self.forwarded(data)
            self.assertEqual(seen.target, target)
            self.assertNotIn(b"sr-", seen.target)
        self.assertNotIn(b"sr-", b" ".join(uri for _, uri in self.agent.asked))

    def test_form(self) -> None:
        """A grant for POST /files lets a form in."""
        target = signed("/files", "POST", maxSize=len(FORM))
        data = req(b"POST", target, b"Content-Type: multipart/form-data; boundary="
                   b"----streamrelayBoundary7MA4YWxk", body=FORM)
        seen = self.forwarded(data)
        self.assertEqual((seen.method, seen.target, seen.body), (b"POST", b"/files", FORM))

    def test_expired(self) -> None:
        self.clock.advance(EXPIRES + 1)
        self.refused(put(signed("/files/a"), b"x"), 403, "grant_expired")

    def test_lastSecond(self) -> None:
        self.clock.advance(EXPIRES)
        self.forwarded(put(signed("/files/a"), b"x"))

    def test_invalid(self) -> None:
        """Tampered path, other method, wrong or unknown key, missing or bad parameters."""
        good = signed("/files/a", maxSize=10)
        for data in [
            put(good.replace(b"/files/a", b"/files/b"), b"x"),
            put(good.replace(b"/files/a", b"/files/a/"), b"x"),
            get(good, method=b"DELETE"),
            get(good),
            put(good.replace(b"sr-key=k1", b"sr-key=k2"), b"x"),
            put(good.replace(b"sr-key=k1", b"sr-key=nokey"), b"x"),
            put(good.replace(b"sr-max-size=10", b"sr-max-size=11"), b"x"),
            put(good.replace(b"sr-expires=1000", b"sr-expires=2000"), b"x"),
            put(good.split(b"&sr-signature")[0], b"x"),
            put(b"/files/a?sr-key=k1", b"x"),
            put(b"/files/a?sr-signature=" + b"0" * 64, b"x"),
            put(good + b"&sr-key=k1", b"x"),
            put(good.replace(b"sr-expires=1000", b"sr-expires=x"), b"x"),
        ]:
            self.assertError(self.request(data), 403, "grant_invalid")
        self.assertNotAsked()

    def test_badGrantWithGoodToken(self) -> None:
        """A request with sr-* parameters is judged by them alone: a good token does not help."""
        bad = signed("/files/a").replace(b"/files/a", b"/files/b")
        self.refused(put(bad, b"x", b"Authorization: Bearer t0ken"), 403, "grant_invalid")

    def test_noGrantNoToken(self) -> None:
        self.refused(put(b"/files/a", b"x"), 401, "unauthorized")

    def test_noKeysFile(self) -> None:
        """A proxy without --grant-keys-file takes no signed URL."""
        self.routes = ProxyTestCase.makeRoutes(self)
        self.refused(put(signed("/files/a"), b"x"), 403, "grant_invalid")

    def test_tooLargeDeclared(self) -> None:
        """Over sr-max-size by Content-Length: 413 before the backend is asked."""
        self.refused(put(signed("/files/a", maxSize=4), b"hello"), 413, "too_large")
        self.forwarded(put(signed("/files/a", maxSize=5), b"hello"))

    def test_tooLargeChunked(self) -> None:
        """
        A chunked body is counted as it streams: past sr-max-size, 413, and
        the backend's request is cut short.
        """
        response = self.request(chunked(signed("/files/a", maxSize=10), b"x" * 8, b"x" * 8))
        self.assertError(response, 413, "too_large")
        self.assertEqual(len(self.agent.asked), 1)
        self.assertEqual(self.backend.seen, [])
        seen = self.forwarded(chunked(signed("/files/a", maxSize=10), b"x" * 5, b"x" * 5))
        self.assertEqual(seen.body, b"x" * 10)

    def test_proxyLimitStill(self) -> None:
        """A grant's size never lifts --max-size."""
        self.maxSize = 3
        self.routes = self.makeRoutes()
        self.refused(put(signed("/files/a", maxSize=100), b"hello"), 413, "too_large")

    def test_optionsPassStripped(self) -> None:
        """tus's discovery (OPTIONS) needs nothing: sr-* go, whatever they hold."""
        seen = self.forwarded(req(b"OPTIONS", b"/uploads/?sr-key=k1&sr-signature=no", TUS))
        self.assertEqual(seen.target, b"/uploads/")


class ResumableTests(GrantTestCase):
    def created(self, maxSize: int | None = 100, length: int = 50) -> bytes:
        """Create an upload with a grant; the Location the client got."""
        self.backend.answer = (201, b"Created", {b"location": b"/uploads/abc123",
                                                 b"tus-resumable": b"1.0.0"}, b"")
        response = self.request(req(b"POST", signed("/uploads/", "POST", maxSize=maxSize), TUS,
                                    b"Upload-Length: %d" % (length,)))
        self.assertEqual(response.status, 201, response.body)
        [seen] = self.backend.seen
        self.assertEqual(seen.target, b"/uploads/")
        self.backend.seen.clear()
        self.agent.asked.clear()
        self.backend.answer = (204, b"No Content", {b"tus-resumable": b"1.0.0"}, b"")
        return response.headers[b"location"]

    def test_signedLocation(self) -> None:
        """
        The Location is the upload's URL signed (PATCH) with the grant's key,
        expiry and size: HEAD, PATCH and DELETE go on with it as it is.
        """
        location = self.created()
        split = urlsplit(location.decode())
        self.assertEqual(split.path, "/uploads/abc123")
        params = dict(parse_qsl(split.query))
        self.assertEqual(
            (params["sr-key"], params["sr-expires"], params["sr-max-size"]), ("k1", "1000", "100")
        )
        self.assertEqual(location, signed("/uploads/abc123", "PATCH", maxSize=100))
        for data in (req(b"HEAD", location, TUS), patch(location, 0, b"abc"),
                     req(b"DELETE", location, TUS)):
            response = self.request(data)
            self.assertEqual(response.status, 204, response.body)
            [seen] = self.backend.seen
            self.backend.seen.clear()
            self.assertEqual(seen.target, b"/uploads/abc123")
            self.assertEqual(seen.header(b"streamrelay-client-identity"), [b"grant:k1"])

    def test_locationForThatUploadOnly(self) -> None:
        location = self.created()
        other = location.replace(b"abc123", b"abc124")
        self.refused(patch(other, 0, b"abc"), 403, "grant_invalid")
        self.refused(req(b"POST", location.replace(b"/uploads/abc123", b"/uploads/"), TUS,
                         b"Upload-Length: 5"), 403, "grant_invalid")

    def test_unsignedWithToken(self) -> None:
        """A creation with a token (no grant) gets the Location as the backend gave it."""
        self.backend.answer = (201, b"Created", {b"location": b"/uploads/abc123"}, b"")
        response = self.request(req(b"POST", b"/uploads/", TUS, b"Upload-Length: 5",
                                    b"Authorization: Bearer t0ken"))
        self.assertEqual(response.headers[b"location"], b"/uploads/abc123")

    def test_uploadLengthOverMaxSize(self) -> None:
        """sr-max-size holds for the upload's total length: at creation and on each PATCH."""
        self.refused(req(b"POST", signed("/uploads/", "POST", maxSize=49), TUS,
                         b"Upload-Length: 50"), 413, "too_large")
        location = self.created(maxSize=10, length=10)
        self.refused(patch(location, 8, b"abc"), 413, "too_large")
        self.refused(patch(location, 0, b"abc", b"Upload-Length: 11"), 413, "too_large")
        response = self.request(patch(location, 7, b"abc"))
        self.assertEqual(response.status, 204)

    def test_expiredUploadURL(self) -> None:
        location = self.created()
        self.clock.advance(EXPIRES + 1)
        self.refused(patch(location, 0, b"abc"), 403, "grant_expired")


class ConcatenationTests(GrantTestCase):
    """
    A tus final upload's partial uploads, as their signed URLs: the backend
    gets their paths; each must be signed with the creating grant's key.
    """

    def final(self, *urls: bytes, key: str = "k1", secret: bytes = SECRET1) -> bytes:
        return req(b"POST", signed("/uploads/", "POST", key=key, secret=secret), TUS,
                   b"Upload-Concat: final;" + b" ".join(urls))

    def partialURL(self, upload: str, key: str = "k1", secret: bytes = SECRET1) -> bytes:
        return signed(f"/uploads/{upload}", "PATCH", key=key, secret=secret, maxSize=100)

    def test_forwardedAsPaths(self) -> None:
        a, b = self.partialURL("a" * 32), self.partialURL("b" * 32)
        self.backend.answer = (201, b"Created", {b"location": b"/uploads/abc123"}, b"")
        seen = self.forwarded(self.final(b"http://proxy.example" + a, b))
        self.assertEqual(seen.header(b"upload-concat"),
                         [b"final;/uploads/" + b"a" * 32 + b" /uploads/" + b"b" * 32])

    def test_unsignedWithToken(self) -> None:
        """Without a grant (a token), the queries go all the same."""
        self.backend.answer = (201, b"Created", {b"location": b"/uploads/abc123"}, b"")
        seen = self.forwarded(req(b"POST", b"/uploads/", TUS, b"Authorization: Bearer t0ken",
                                  b"Upload-Concat: final;/uploads/a?x=1 /uploads/b"))
        self.assertEqual(seen.header(b"upload-concat"), [b"final;/uploads/a /uploads/b"])

    def test_partialsOfTheGrant(self) -> None:
        """Each partial upload's URL must be signed, for itself, with the same key, in time."""
        good = self.partialURL("a" * 32)
        for urls in [
            (good, b"/uploads/" + b"b" * 32),
            (good, self.partialURL("b" * 32, key="k2", secret=SECRET2)),
            (good, self.partialURL("b" * 32).replace(b"b" * 32, b"c" * 32)),
            (good.replace(b"sr-signature=", b"sr-signature=0"),),
        ]:
            self.refused(self.final(*urls), 403, "grant_invalid")
        self.clock.advance(EXPIRES + 1)
        self.refused(self.final(good), 403, "grant_expired")

    def test_concatOnce(self) -> None:
        """
        A second Upload-Concat is refused: the backend reads the last one,
        which the proxy would not have checked (a final upload of partial
        uploads not signed for the grant).
        """
        good = self.partialURL("a" * 32)
        for headers in [
            (b"Upload-Concat: final;" + good, b"Upload-Concat: final;/uploads/" + b"b" * 32),
            (b"Upload-Concat: partial", b"Upload-Concat: final;/uploads/" + b"b" * 32),
        ]:
            data = req(b"POST", signed("/uploads/", "POST"), TUS, *headers)
            self.refused(data, 400, "bad_request")
        self.refused(self.final(b"http://[::1/uploads/" + b"b" * 32), 403, "grant_invalid")

    def test_limitTold(self) -> None:
        """
        The grant's sr-max-size goes to the backend with a final upload,
        whose length (its partial uploads' sum) the proxy does not know:
        each partial upload kept to it, the sum would not.  A client's own
        such header is dropped.
        """
        self.backend.answer = (201, b"Created", {b"location": b"/uploads/abc123"}, b"")
        a, b = self.partialURL("a" * 32), self.partialURL("b" * 32)
        seen = self.forwarded(req(b"POST", signed("/uploads/", "POST", maxSize=100), TUS,
                                  b"Upload-Concat: final;" + a + b" " + b,
                                  b"Streamrelay-Client-Max-Size: 999999"))
        self.assertEqual(seen.header(b"streamrelay-client-max-size"), [b"100"])
        seen = self.forwarded(self.final(a, b))
        self.assertEqual(seen.header(b"streamrelay-client-max-size"), [])

    def test_proxyLimitTold(self) -> None:
        """The proxy's --max-size too, with a token."""
        self.maxSize = 50
        self.routes = self.makeRoutes()
        self.backend.answer = (201, b"Created", {b"location": b"/uploads/abc123"}, b"")
        seen = self.forwarded(req(b"POST", b"/uploads/", TUS, b"Authorization: Bearer t0ken",
                                  b"Upload-Concat: final;/uploads/a /uploads/b"))
        self.assertEqual(seen.header(b"streamrelay-client-max-size"), [b"50"])
        seen = self.forwarded(req(b"POST", b"/uploads/", TUS, b"Authorization: Bearer t0ken",
                                  b"Upload-Concat: partial", b"Upload-Length: 5"))
        self.assertEqual(seen.header(b"streamrelay-client-max-size"), [])

    def test_partialPassesUntouched(self) -> None:
        self.backend.answer = (201, b"Created", {b"location": b"/uploads/abc123"}, b"")
        seen = self.forwarded(req(b"POST", signed("/uploads/", "POST"), TUS,
                                  b"Upload-Concat: partial", b"Upload-Length: 5"))
        self.assertEqual(seen.header(b"upload-concat"), [b"partial"])


class ClientContextTests(GrantTestCase):
    FORGED = (b"Streamrelay-Client-Address: 10.9.9.9", b"Streamrelay-Client-Identity: token:root",
              b"Streamrelay-Client-Authorization: Bearer forged")

    def test_grant(self) -> None:
        """The client's Streamrelay-Client-* go; the proxy's say who it let in."""
        seen = self.forwarded(put(signed("/files/a"), b"x", *self.FORGED))
        self.assertEqual(self.clientHeaders(seen), {
            b"streamrelay-client-address": [b"127.0.0.1"],
            b"streamrelay-client-identity": [b"grant:k1"],
        })

    def test_namedToken(self) -> None:
        """A token's name from the tokens file, or the start of its SHA-256 without one."""
        seen = self.forwarded(put(b"/files/a", b"x", b"Authorization: Bearer t0ken", *self.FORGED))
        self.assertEqual(self.clientHeaders(seen), {
            b"streamrelay-client-address": [b"127.0.0.1"],
            b"streamrelay-client-identity": [b"token:alice"],
            b"streamrelay-client-authorization": [b"Bearer t0ken"],
        })
        self.assertEqual(seen.header(b"authorization"), [])
        seen = self.forwarded(put(b"/files/a", b"x", b"Authorization: Bearer bare-token"))
        name = hashlib.sha256(b"bare-token").hexdigest()[:12].encode()
        self.assertEqual(seen.header(b"streamrelay-client-identity"), [b"token:" + name])

    def test_nobody(self) -> None:
        """Without tokens nor grant: the address only; Authorization goes on as it came."""
        self.routes = ProxyTestCase.makeRoutes(self)
        seen = self.forwarded(put(b"/files/a", b"x", b"Authorization: Bearer app", *self.FORGED))
        self.assertEqual(self.clientHeaders(seen), {b"streamrelay-client-address": [b"127.0.0.1"]})
        self.assertEqual(seen.header(b"authorization"), [b"Bearer app"])

    def test_tusOptions(self) -> None:
        seen = self.forwarded(req(b"OPTIONS", b"/uploads/", TUS, *self.FORGED))
        self.assertEqual(self.clientHeaders(seen), {b"streamrelay-client-address": [b"127.0.0.1"]})


class SharedSecretContextTests(GrantTestCase):
    secret = b"s3cret"

    def test_grantWithApplicationsAuthorization(self) -> None:
        """
        With the shared secret in Authorization, the client's own (for the
        application's hook) goes in Streamrelay-Client-Authorization.
        """
        seen = self.forwarded(put(signed("/files/a"), b"x", b"Authorization: Bearer app-session"))
        self.assertEqual(seen.header(b"authorization"), [b"Bearer s3cret"])
        self.assertEqual(seen.header(b"streamrelay-client-authorization"),
                         [b"Bearer app-session"])
        self.assertEqual(seen.header(b"streamrelay-client-identity"), [b"grant:k1"])

    def test_headerSizeCountsClientContext(self) -> None:
        """
        Near the backend's header limit, the proxy forwards only heads the
        backend takes, its Streamrelay-Client-* headers counted: each
        forwarded head is within the limit, larger ones are answered 431.
        """
        total = StreamingChannel.totalHeadersSize
        outcomes = []
        for size in range(total - 300, total + 1, 10):
            line = b"X-Big: " + b"v" * (size - 150)
            response = self.request(put(b"/files/big", b"x", line, b"Authorization: Bearer t0ken"))
            if response.status == 431:
                self.assertEqual(self.backend.seen, [])
            else:
                self.assertEqual(response.status, 201, (size, response.body))
                [seen] = self.backend.seen
                head = len(seen.method) + len(seen.target) + len(b"  HTTP/1.1") + sum(
                    len(name) + 2 + len(value)
                    for name, values in seen.headers.getAllRawHeaders() for value in values
                )
                self.assertLessEqual(head, total)
                self.assertEqual(len(seen.header(b"streamrelay-client-authorization")), 1)
            self.backend.seen.clear()
            outcomes.append(response.status)
        self.assertEqual({outcomes[0], outcomes[-1]}, {201, 431}, outcomes)
