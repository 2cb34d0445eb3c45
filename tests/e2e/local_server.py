"""The 'local process' of the end-to-end tests: answers every GET with ``local:<name>``.

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
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
