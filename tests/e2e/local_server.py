"""The 'local process' of the end-to-end tests: answers every GET with ``local:<name>``.

With a third argument ``http/1.1`` it keeps connections alive (the default closes each one,
as HTTP/1.0 does); ``GET /status/N`` answers with status N.

``GET /slow?seconds=S&mark=PATH`` creates the file PATH (the request has arrived), then answers
after S seconds: a request in flight at a chosen moment.
"""

from __future__ import annotations

import http.server
import sys
import time
import urllib.parse
from pathlib import Path


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/slow":
            query = urllib.parse.parse_qs(url.query)
            if "mark" in query:
                Path(query["mark"][0]).touch()
            time.sleep(float(query.get("seconds", ["2"])[0]))
        body = f"local:{sys.argv[2]}".encode()
        status = int(url.path[len("/status/"):]) if url.path.startswith("/status/") else 200
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    if sys.argv[3:] == ["http/1.1"]:
        Handler.protocol_version = "HTTP/1.1"
        # http.server sends the head and the body in two writes: on a kept-alive connection
        # Nagle holds the body until the CLI's delayed ACK (40 ms per answer).
        Handler.disable_nagle_algorithm = True
    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
