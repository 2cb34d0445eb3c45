"""A 'local process' started by ``connect -- ...``: shows what configuration it was given.

``env_server.py PORT WHAT MARKER``: answers GET / with the variable WHAT, or with the file
``$KUBETUNNEL_ROOT/<path>`` for WHAT=file:<path>; GET /exit?code=N exits with N. On SIGINT or
SIGTERM it writes the signal's name to MARKER and exits with 3.
"""

from __future__ import annotations

import http.server
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

exit_code = 0


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        global exit_code
        what = sys.argv[2]
        if self.path.startswith("/exit"):
            exit_code = int(self.path.partition("code=")[2] or 0)
            body = b"bye"
        elif what.startswith("file:"):
            body = (Path(os.environ["KUBETUNNEL_ROOT"]) / what[5:]).read_bytes()
        else:
            body = os.environ.get(what, f"<{what} unset>").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if self.path.startswith("/exit"):  # only once the answer is out
            threading.Thread(target=self.server.shutdown).start()

    def log_message(self, *args: object) -> None:
        pass


def on_signal(signum: int, frame: FrameType | None) -> None:
    Path(sys.argv[3]).write_text(signal.Signals(signum).name)
    os._exit(3)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.serve_forever()
    server.server_close()
    sys.exit(exit_code)
