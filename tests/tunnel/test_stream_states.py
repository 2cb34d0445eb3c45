"""The per-stream state machine and credit accounting on their own, against a recording session."""

from __future__ import annotations

from typing import Any

import pytest

from kubetunnel.tunnel.framing import ErrorCode, ProtocolError
from kubetunnel.tunnel.streams import MAX_WINDOW, Stream, StreamState


class Recorder:
    """Stands in for the session: records what the stream asks it to send."""

    def __init__(self) -> None:
        self.frames: list[tuple[Any, ...]] = []
        self.forgotten: list[Stream] = []
        self.blocked: list[Stream] = []
        self.writable = True

    def _send_data(self, stream_id: int, data: bytes) -> None:
        self.frames.append(("DATA", stream_id, bytes(data)))

    def _send_fin(self, stream_id: int) -> None:
        self.frames.append(("FIN", stream_id))

    def _send_reset(self, stream_id: int, code: int, reason: str) -> None:
        self.frames.append(("RESET", stream_id, code))

    def _send_window(self, stream_id: int, increment: int) -> None:
        self.frames.append(("WINDOW", stream_id, increment))

    def _want_writable(self, stream: Stream) -> None:
        self.blocked.append(stream)

    def _forget(self, stream: Stream) -> None:
        self.forgotten.append(stream)


def _stream(send_window: int = 100, recv_window: int = 100) -> tuple[Stream, Recorder]:
    session = Recorder()
    return Stream(session, 1, send_window, recv_window, 2, "h:1"), session  # type: ignore[arg-type]


def test_local_fin_then_remote_fin() -> None:
    stream, session = _stream()
    assert stream.state is StreamState.OPEN
    stream.send_eof_nowait()
    assert stream.state is StreamState.HALF_CLOSED_LOCAL
    stream._on_data(b"late but legal", fin=False)
    stream._on_data(b"", fin=True)
    assert stream.state is StreamState.CLOSED
    assert session.forgotten == [stream]
    assert session.frames == [("FIN", 1)]


def test_remote_fin_then_local_fin() -> None:
    stream, session = _stream()
    stream._on_data(b"abc", fin=True)
    assert stream.state is StreamState.HALF_CLOSED_REMOTE
    assert stream.send_nowait(b"still allowed") == 13
    stream.send_eof_nowait()
    assert stream.state is StreamState.CLOSED
    assert session.forgotten == [stream]


@pytest.mark.parametrize("before", ["open", "local_fin", "remote_fin"])
def test_reset_from_any_live_state(before: str) -> None:
    stream, session = _stream()
    if before == "local_fin":
        stream.send_eof_nowait()
    elif before == "remote_fin":
        stream._on_data(b"", fin=True)
    stream.reset(ErrorCode.CANCEL, "bye")
    stream.reset(ErrorCode.CANCEL, "again")  # idempotent
    assert stream.state is StreamState.RESET
    assert [f for f in session.frames if f[0] == "RESET"] == [("RESET", 1, ErrorCode.CANCEL)]
    with pytest.raises(ConnectionResetError, match="bye"):
        stream.send_nowait(b"x")


def test_reset_of_a_closed_stream_sends_nothing() -> None:
    stream, session = _stream()
    stream.send_eof_nowait()
    stream._on_data(b"", fin=True)
    stream.reset()
    assert stream.state is StreamState.CLOSED
    assert session.frames == [("FIN", 1)]


def test_data_after_fin_is_a_protocol_error() -> None:
    stream, _ = _stream()
    stream._on_data(b"", fin=True)
    with pytest.raises(ProtocolError, match="after its FIN"):
        stream._on_data(b"x", fin=False)


def test_data_beyond_credit_is_a_flow_control_error() -> None:
    stream, _ = _stream(recv_window=10)
    stream._on_data(b"x" * 10, fin=False)
    with pytest.raises(ProtocolError) as info:
        stream._on_data(b"y", fin=False)
    assert info.value.code == ErrorCode.FLOW_CONTROL


def test_send_is_bounded_by_credit_and_resumes_on_window() -> None:
    stream, session = _stream(send_window=10)
    woken: list[bool] = []
    stream.on_writable = lambda: woken.append(True)
    assert stream.send_nowait(b"0123456789abc") == 10
    assert session.blocked == [stream]
    assert stream.send_nowait(b"abc") == 0
    stream._on_window(5)
    assert woken == [True]
    assert stream.send_nowait(b"abc") == 3
    assert [f[2] for f in session.frames] == [b"0123456789", b"abc"]


def test_send_waits_while_the_session_is_saturated() -> None:
    stream, session = _stream()
    session.writable = False
    assert stream.send_nowait(b"abc") == 0
    assert session.blocked == [stream]
    assert session.frames == []


def test_credit_returns_in_batches_of_a_quarter_window() -> None:
    stream, session = _stream(recv_window=100)
    stream._on_data(b"x" * 60, fin=False)
    stream.consumed(20)
    assert session.frames == []
    stream.consumed(10)
    assert session.frames == [("WINDOW", 1, 30)]
    assert stream.recv_credit == 70
    stream._on_data(b"", fin=True)
    stream.consumed(30)  # nothing more will come: no credit to give
    assert session.frames == [("WINDOW", 1, 30)]


def test_window_overflow_is_an_error() -> None:
    stream, _ = _stream(send_window=MAX_WINDOW)
    with pytest.raises(ProtocolError, match="2\\^31"):
        stream._on_window(1)


def test_attach_flushes_what_arrived_first() -> None:
    stream, _ = _stream()
    stream._on_data(b"early", fin=True)

    class Sink:
        def __init__(self) -> None:
            self.events: list[object] = []

        def on_data(self, data: bytes) -> None:
            self.events.append(bytes(data))

        def on_fin(self) -> None:
            self.events.append("FIN")

        def on_reset(self, code: int, reason: str) -> None:
            self.events.append(("RESET", code))

    sink = Sink()
    stream.attach(sink)
    assert sink.events == [b"early", "FIN"]
