"""Where one HTTP/1.x response ends in an upstream connection's bytes.

The router forwards a response's bytes to the client exactly as they arrive (no re-encoding:
chunk extensions, reason phrases and header case reach the client untouched); it only needs to
know when the response is over, to hand the next request's response the client connection and to
put the upstream connection back into the pool. llhttp (through httptools) finds that end.

Two cases it cannot see alone: a response to HEAD has no body whatever its Content-Length says
(RFC 9112 6.3), and httptools cannot be told so; for those, the end of the header block is found
here and only that is given to a fresh parser. Interim 1xx responses are forwarded and passed
over. A body that ends at the connection's close is ended by the caller on EOF.
"""

from __future__ import annotations

import httptools

_END = b"\r\n\r\n"
MAX_HEAD = 64 * 1024


class ResponseError(Exception):
    """The upstream sent something that is not the response to our one request."""


class ResponseTracker:
    """Feed every byte an upstream sends; :meth:`feed` says how many belong to the current
    response and whether it is complete. One response at a time: the router never pipelines on
    an upstream connection, so bytes after the response's end are the upstream's fault."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.keep_alive = False
        self.done = False
        self.started = False  # a byte of this response arrived
        self._head_only = False
        self._excess = False
        self._head = bytearray()  # HEAD mode: the header block so far

    def expect(self, head_only: bool) -> None:
        """Before each request is sent on this connection."""
        if head_only:
            self._parser = httptools.HttpResponseParser(_HeadOnly(self))
        elif self._head_only:
            self._parser = httptools.HttpResponseParser(self)
        self._head_only = head_only
        self.status, self.keep_alive, self.done, self.started = 0, False, False, False
        self._head.clear()

    def feed(self, data: bytes | memoryview) -> int:
        """How many bytes of ``data`` belong to the current response (all of them unless it
        ended inside ``data``). Raises ResponseError on anything but a well-formed response."""
        if self.done:
            raise ResponseError("data after the end of the response")
        self.started = True
        if self._head_only:
            return self._feed_head(data)
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            raise ResponseError(f"malformed response: {exc!r}") from None
        if self._excess:
            raise ResponseError("more than one response to one request")
        return len(data)

    def _feed_head(self, data: bytes | memoryview) -> int:
        start = len(self._head)
        self._head += data
        while not self.done:
            # Search from a little before the new bytes: the end may straddle two reads.
            end = self._head.find(_END, max(0, start - 3))
            if end < 0:
                if len(self._head) > MAX_HEAD:
                    raise ResponseError("response header block too large")
                return len(data)
            block = bytes(self._head[:end + 4])
            del self._head[:end + 4]
            try:
                self._parser.feed_data(block)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
                raise ResponseError(f"malformed response: {exc!r}") from None
            start = 0
        used = len(data) - len(self._head)
        if self._head:
            raise ResponseError("a body or another response after a HEAD response")
        return used

    # --- httptools callbacks (as few as will do: they run for every response) ---------------

    def on_message_begin(self) -> None:
        if self.done:
            self._excess = True

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            return  # an interim response; the final one follows
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        self.done = True

    def _head_complete(self) -> None:
        status = self._parser.get_status_code()
        if not 100 <= status < 200:
            self.status = status
            self.keep_alive = self._parser.should_keep_alive()
            self.done = True


class _HeadOnly:
    """Callbacks for a response to HEAD: it ends with its header block."""

    def __init__(self, tracker: ResponseTracker) -> None:
        self.on_headers_complete = tracker._head_complete
