"""
Streaming request bodies for twisted.web.

Stock twisted.web reads a whole request body into ``request.content`` before
it looks up a resource.  L{StreamingRequest} instead dispatches a request to
its resource as soon as its headers are in, and exposes the body as
L{RequestBody}, an L{IBodyProducer} whose pause and resume pause and resume
reading the client's socket.

It also tunes the TCP transports that carry bodies: their read size, their
send size, and (L{sendEagerly}) sending each write at once.  A large body
whose consumer offers a file to write it into (the backend), or which is sent
on by Twisted's HTTP client over TCP (the proxy), is moved there by the
kernel (L{streamrelay.splicing}) instead of being read into Python.

One job per module:

  - L{internals}: every Twisted internal streamrelay uses, behind a named
    helper (the only code of streamrelay that touches them);
  - L{tuning}: read and send sizes of the transports that carry bodies;
  - L{body}: L{RequestBody}, and L{BodyControl}, what it asks of its request;
  - L{request}: L{StreamingRequest}, its states written down in its docstring;
  - L{splice}: handing a body to a kernel splice and back;
  - L{interim}: L{sendInterim}, interim (1xx) responses before the final one;
  - L{interimclient}: the interim responses Twisted's HTTP client reads,
    told as they arrive (the proxy relays the backend's with L{sendInterim});
  - L{channel}: L{StreamingChannel}, RFC 9112 framing and its refusals;
  - L{answers}: L{AnswerRenderer}, how the application above renders what
    this layer answers by itself;
  - L{site}: L{makeSite}.
"""

from streamrelay.streaming.answers import AnswerRenderer, PlainAnswers
from streamrelay.streaming.body import BodyControl, BodyIncomplete, BodyTimeout, RequestBody
from streamrelay.streaming.channel import MAX_CHUNK_SIZE, StreamingChannel
from streamrelay.streaming.interim import sendInterim
from streamrelay.streaming.internals import (
    clientGone,
    connectionUnder,
    producerConnection,
    sendEagerly,
)
from streamrelay.streaming.request import LINGER_SECONDS, SERVER_METHODS, StreamingRequest
from streamrelay.streaming.site import StreamingSite, makeSite
from streamrelay.streaming.tuning import HEADER_READ_SIZE, readSize, tuneForStreaming

__all__ = [
    "HEADER_READ_SIZE",
    "LINGER_SECONDS",
    "MAX_CHUNK_SIZE",
    "SERVER_METHODS",
    "AnswerRenderer",
    "BodyControl",
    "BodyIncomplete",
    "BodyTimeout",
    "PlainAnswers",
    "RequestBody",
    "StreamingChannel",
    "StreamingRequest",
    "StreamingSite",
    "clientGone",
    "connectionUnder",
    "makeSite",
    "producerConnection",
    "readSize",
    "sendEagerly",
    "sendInterim",
    "tuneForStreaming",
]
