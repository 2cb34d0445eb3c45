"""The kinds of HTTP/2 connection the agent speaks on: the client's and an upstream's (the h2c
router), a mirror's copies (:mod:`modes.agent.h2mirroring`).

:class:`Peer` wraps an ``h2`` connection (the client's, server side; an upstream's, client
side) with what ``h2`` leaves to its user: DATA that waits for the peer's flow-control window,
with a callback that returns the sender's credit once it went out (end-to-end flow control).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.exceptions
import h2.settings

Headers = list[tuple[bytes, bytes]]
WINDOW = 1024 * 1024
ERRORS = (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError)
"""What ``h2`` raises for a stream that ended under us: what was meant for it is dropped."""


class Peer:
    """One HTTP/2 connection we speak on; DATA waits here for the peer's window."""

    def __init__(self, client_side: bool, write: Callable[[bytes], None]) -> None:
        config = h2.config.H2Configuration(client_side=client_side, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        window = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW}
        self.conn.local_settings = h2.settings.Settings(client=client_side, initial_values=window)
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(WINDOW)
        self._write = write
        self._waiting: dict[int, deque[tuple[Any, Callable[[], None] | None, bool]]] = {}

    def send(self, sid: int, data: Any, ack: Callable[[], None] | None = None,
             end: bool = False) -> None:
        """Queue DATA (bytes) or trailers (a header list, which ends the stream)."""
        queue = self._waiting.setdefault(sid, deque())
        queue.append((data, ack, end))
        if len(queue) == 1:
            self._push(sid)

    def _push(self, sid: int) -> None:
        queue = self._waiting.get(sid)
        conn = self.conn
        try:
            while queue:
                data, ack, end = queue[0]
                if isinstance(data, list):
                    conn.send_headers(sid, data, end_stream=True)
                elif not data:
                    if end:
                        conn.end_stream(sid)
                else:
                    room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                    if room <= 0:
                        return
                    conn.send_data(sid, data[:room], end_stream=end and room >= len(data))
                    if room < len(data):
                        queue[0] = (data[room:], ack, end)
                        continue
                queue.popleft()
                if ack is not None:
                    ack()
        except ERRORS:
            queue = None  # the stream ended under us: what waited is dropped
        if not queue:
            self._waiting.pop(sid, None)

    def window_opened(self, sid: int) -> None:
        for waiting in list(self._waiting) if sid == 0 else [sid]:
            self._push(waiting)

    def forget(self, sid: int) -> None:
        self._waiting.pop(sid, None)

    def reset(self, sid: int, code: int) -> None:
        self.forget(sid)
        with contextlib.suppress(*ERRORS):
            self.conn.reset_stream(sid, code)

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self._write(data)

