"""The HTTP side of SPDY port-forward: the plain upgrade's handshake and refusals (kubelet's
plain-text answers), the websocket tunnel's subprotocol, and a stopping node closing both."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from modes.sandbox.node.spdy import framing
from modes.sandbox.node.spdy.framing import FrameDecoder, FrameEncoder
from tests.sandbox_node.threaded import ECHO_POD_IP, ThreadedNode, echo_node

POD_IP = ECHO_POD_IP
PATH = "/api/v1/namespaces/default/pods/echo/portforward"
UPGRADE = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1",
           "X-Stream-Protocol-Version": "portforward.k8s.io"}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ThreadedNode]:
    with echo_node(tmp_path) as made:
        yield made


def post(node: ThreadedNode, headers: dict[str, str]) -> tuple[int, str, dict[str, str]]:
    async def scenario() -> tuple[int, str, dict[str, str]]:
        async with aiohttp.ClientSession() as session, session.post(
                node.url + PATH, headers=headers) as response:
            return response.status, await response.text(), dict(response.headers)
    return node.run(scenario())


def test_no_protocol_version_header_is_refused(node: ThreadedNode) -> None:
    headers = {k: v for k, v in UPGRADE.items() if k != "X-Stream-Protocol-Version"}
    status, text, _ = post(node, headers)
    assert status == 400
    assert text.startswith("unable to upgrade: header X-Stream-Protocol-Version does not exist")


def test_an_unknown_protocol_version_is_forbidden_with_the_accepted_ones(
        node: ThreadedNode) -> None:
    wrong = {**UPGRADE, "X-Stream-Protocol-Version": "v4.channel.k8s.io"}
    status, text, headers = post(node, wrong)
    assert status == 403
    assert text == ("unable to upgrade: unable to negotiate protocol: client supports "
                    "[v4.channel.k8s.io], server accepts [portforward.k8s.io]\n")
    assert headers["X-Accepted-Stream-Protocol-Versions"] == "portforward.k8s.io"


def test_an_upgrade_to_something_other_than_spdy_is_refused(node: ThreadedNode) -> None:
    status, text, _ = post(node, {**UPGRADE, "Upgrade": "h2c"})
    assert status == 400
    assert text == "unable to upgrade: missing upgrade headers in request\n"


def test_a_websocket_tunnel_of_an_unknown_spdy_protocol_is_forbidden(node: ThreadedNode) -> None:
    async def scenario() -> int:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                await session.ws_connect(node.url + PATH, protocols=("SPDY/3.1+other.k8s.io",))
            return caught.value.status
    assert node.run(scenario()) == 403


def read_frames(sock: socket.socket, decoder: FrameDecoder, stop: int) -> list[framing.Frame]:
    """Frames until a FIN on stream ``stop`` (the socket timeout bounds a hang)."""
    frames: list[framing.Frame] = []
    while not any(isinstance(f, framing.Data) and f.stream_id == stop and f.fin for f in frames):
        data = sock.recv(65536)
        assert data, f"connection ended after {frames}"
        frames += decoder.feed(data)
    return frames


def upgraded_socket(node: ThreadedNode) -> tuple[socket.socket, bytes]:
    host, port = node.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    request = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in UPGRADE.items()) + "\r\n"
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    return sock, head


def test_a_plain_upgrade_answers_101_and_then_speaks_spdy(node: ThreadedNode) -> None:
    sock, head = upgraded_socket(node)
    with sock:
        lines = head.decode().split("\r\n")
        assert lines[0] == "HTTP/1.1 101 Switching Protocols"
        assert "Connection: Upgrade" in lines
        assert "Upgrade: SPDY/3.1" in lines
        assert "X-Stream-Protocol-Version: portforward.k8s.io" in lines
        encoder, decoder = FrameEncoder(), FrameDecoder()
        ports = {"port": ["8080"], "requestid": ["0"]}
        sock.sendall(encoder.encode(framing.SynStream(1, {"streamtype": ["error"], **ports}))
                     + encoder.encode(framing.SynStream(3, {"streamtype": ["data"], **ports}))
                     + encoder.encode(framing.Data(3, b"over spdy", fin=True)))
        frames = read_frames(sock, decoder, stop=3)
    assert framing.SynReply(1) in frames
    assert framing.SynReply(3) in frames
    assert b"".join(f.data for f in frames if isinstance(f, framing.Data)) == b"over spdy"


def test_the_websocket_tunnel_carries_spdy_in_binary_messages(node: ThreadedNode) -> None:
    async def scenario() -> bytes:
        encoder, decoder = FrameEncoder(), FrameDecoder()
        ports = {"port": ["8080"], "requestid": ["7"]}
        async with aiohttp.ClientSession() as session, session.ws_connect(
                node.url + PATH, protocols=("SPDY/3.1+portforward.k8s.io",)) as ws:
            assert ws.protocol == "SPDY/3.1+portforward.k8s.io"
            # One frame split over two messages: boundaries mean nothing.
            wire = encoder.encode(framing.SynStream(1, {"streamtype": ["error"], **ports}))
            await ws.send_bytes(wire[:5])
            await ws.send_bytes(wire[5:])
            data = framing.SynStream(3, {"streamtype": ["data"], **ports})
            await ws.send_bytes(encoder.encode(data)
                                + encoder.encode(framing.Data(3, b"tunnelled", fin=True)))
            echoed = b""
            while True:
                frames = decoder.feed(await ws.receive_bytes(timeout=10))
                echoed += b"".join(f.data for f in frames if isinstance(f, framing.Data)
                                   and f.stream_id == 3)
                if any(isinstance(f, framing.Data) and f.stream_id == 3 and f.fin for f in frames):
                    return echoed
    assert node.run(scenario()) == b"tunnelled"


def test_a_stopping_node_hangs_up_open_spdy_sessions(tmp_path: Path) -> None:
    node = ThreadedNode(tmp_path)
    try:
        node.add_pod("echo", POD_IP)
        sock, _ = upgraded_socket(node)
    finally:
        node.close()  # would wait for a client that never hangs up
    with sock:
        decoder = FrameDecoder()
        frames: list[framing.Frame] = []
        while data := sock.recv(65536):
            frames += decoder.feed(data)
    assert frames == [framing.GoAway(0)]

